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
