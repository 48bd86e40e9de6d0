{{/* The name of the serve Deployment, its Service and ConfigMap. */}}
{{- define "modbot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "modbot.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The serve pods' selector. */}}
{{- define "modbot.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: serve
{{- end -}}

{{- define "modbot.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
One TOML value. Helm reads numbers in values as floats; modbot's integer keys need integers,
so a whole number is written without a fraction. Strings are written JSON-escaped, which is
valid TOML. Anything else (lists, maps) is not a modbot configuration value.
*/}}
{{- define "modbot.tomlValue" -}}
{{- if kindIs "string" . -}}
{{ toJson . }}
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if kindIs "float64" . -}}
{{- if eq (floor .) . }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) -}}
{{ . }}
{{- else -}}
{{ fail (printf "config: %v is not a string, number or boolean" .) }}
{{- end -}}
{{- end -}}

{{/* `config` as modbot.toml: top-level keys, then one table per map (modbot has one level). */}}
{{- define "modbot.toml" -}}
{{- range $key, $value := . }}
{{- if not (kindIs "map" $value) }}
{{ $key }} = {{ include "modbot.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $table, $keys := . }}
{{- if kindIs "map" $keys }}

[{{ $table }}]
{{- range $key, $value := $keys }}
{{- if kindIs "map" $value }}
{{- fail (printf "config.%s.%s: modbot's tables do not nest" $table $key) }}
{{- end }}
{{ $key }} = {{ include "modbot.tomlValue" $value }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The URL the bridges dial: bridge.serverUrl, else the chart's Service by its namespaced name. */}}
{{- define "modbot.serverUrl" -}}
{{- if .Values.bridge.serverUrl -}}
{{ .Values.bridge.serverUrl }}
{{- else -}}
{{ ternary "https" "http" (.Values.tls.enabled | default false) }}://{{ include "modbot.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.ports.grpc }}
{{- end -}}
{{- end -}}

{{/*
Where the TLS Secrets are mounted (outside /etc/modbot, the ConfigMap's read-only mount). The
Secrets' keys are mapped to these fixed file names with `items`, so a missing key stops the
pod before modbot starts (a FailedMount event naming it).
*/}}
{{- define "modbot.tlsDir" -}}/etc/modbot-tls/server{{- end -}}
{{- define "modbot.clientCADir" -}}/etc/modbot-tls/client-ca{{- end -}}
{{- define "modbot.serverCADir" -}}/etc/modbot-tls/server-ca{{- end -}}

{{/*
modbot's shutdown grace (config.grpc.shutdown_grace_secs): the value in `config`, else modbot's
built-in default (config/modbot.toml; helm/test_chart.py checks that the two agree).
*/}}
{{- define "modbot.shutdownGraceSecs" -}}
{{- $grpc := .Values.config.grpc | default dict -}}
{{- if hasKey $grpc "shutdown_grace_secs" -}}
{{ int64 $grpc.shutdown_grace_secs }}
{{- else -}}
30
{{- end -}}
{{- end -}}

{{/* The serve pods' termination grace period: longer than the shutdown grace, always. */}}
{{- define "modbot.terminationGracePeriodSeconds" -}}
{{- $grace := include "modbot.shutdownGraceSecs" . | int64 -}}
{{- $set := .Values.terminationGracePeriodSeconds -}}
{{- if or (kindIs "float64" $set) (kindIs "int" $set) (kindIs "int64" $set) (and (kindIs "string" $set) (ne $set "")) -}}
{{- if le (int64 $set) $grace -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than config.grpc.shutdown_grace_secs (%d): the kubelet would kill modbot before its shutdown ends" (int64 $set) $grace) -}}
{{- end -}}
{{ int64 $set }}
{{- else -}}
{{- if lt (int64 .Values.terminationGraceMarginSeconds) 1 -}}
{{- fail "terminationGraceMarginSeconds must be at least 1" -}}
{{- end -}}
{{ add $grace (int64 .Values.terminationGraceMarginSeconds) }}
{{- end -}}
{{- end -}}

{{/* Whether the embedded SQLite database is in use (no PostgreSQL Secret). */}}
{{- define "modbot.sqlite" -}}
{{- if not .Values.database.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The claim data_dir is on, with `persistence`. */}}
{{- define "modbot.dataClaim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "modbot.fullname" .)) -}}
{{- end -}}

{{/* Values the chart refuses, checked once (included by the ConfigMap, always rendered). */}}
{{- define "modbot.validate" -}}
{{- range .Values.extraEnv -}}
{{- if eq .name "MODBOT_GRPC_SHUTDOWN_GRACE_SECS" -}}
{{- fail "extraEnv: set config.grpc.shutdown_grace_secs instead of MODBOT_GRPC_SHUTDOWN_GRACE_SECS (the chart derives terminationGracePeriodSeconds from it)" -}}
{{- end -}}
{{- end -}}
{{- $grpc := .Values.config.grpc | default dict -}}
{{- $bridge := .Values.config.bridge | default dict -}}
{{- range $key := list "tls_cert_file" "tls_key_file" "tls_client_ca_file" -}}
{{- if hasKey $grpc $key -}}
{{- fail (printf "config.grpc.%s is set by the chart from `tls` (a mounted Secret)" $key) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $bridge "server_ca_file" -}}
{{- fail "config.bridge.server_ca_file is set by the chart from `tls.serverCA` (a mounted Secret)" -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- if not .Values.tls.existingSecret -}}
{{- fail "tls.enabled needs tls.existingSecret (a Secret with the server's certificate and key)" -}}
{{- end -}}
{{- if and .Values.bridges (hasPrefix "http://" (include "modbot.serverUrl" .)) -}}
{{- fail "bridge.serverUrl is http:// but tls.enabled serves TLS only: use https://" -}}
{{- end -}}
{{- end -}}
{{- if .Values.tls.clientCA.existingSecret -}}
{{- if not .Values.tls.enabled -}}
{{- fail "tls.clientCA needs tls.enabled (mutual TLS is TLS first)" -}}
{{- end -}}
{{- if .Values.bridges -}}
{{- fail "tls.clientCA (mutual TLS) with bridges: modbot bridge cannot present a client certificate, the server would refuse it" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Where the head-set registry claim is mounted (model.registry_dir). */}}
{{- define "modbot.registryDir" -}}
/app/models/registry
{{- end -}}
