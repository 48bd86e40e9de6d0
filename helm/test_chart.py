#!/usr/bin/env python3
"""Renders helm/modbot with Helm's own engine and validates what comes out.

Helm itself (v4, its Go SDK) comes from the PyPI package helm-python-sdk, which bundles it as
a shared library: no helm binary and no cluster. The chart is rendered twice, with its default
values, with helm/ci-values.yaml (every optional part on, TLS included) and with two
variations of it (bridges over plaintext; mutual TLS without bridges); each manifest is
parsed with PyYAML and validated (strict: no unknown fields) against the Kubernetes JSON
schemas bundled by kubernetes-validate; the ServiceMonitor and PodMonitor, CRDs, are checked
by hand. Then the objects' references to each other are checked (selectors against pod
labels, probe and scrape ports against container ports, config file paths against the
Secrets mounted there), and the ConfigMap's modbot.toml against config/modbot.toml. The
Grafana dashboard (helm/modbot/dashboards/modbot.json) must be helm/dashboard.py's output, its
queries must parse (promql-parser) and use only metrics and labels README.md documents. Last, values the chart must refuse are rendered and
must fail.

Run: .venv-helm/bin/python helm/test_chart.py  (requirements: helm/requirements.txt)
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
import unittest
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import promql_parser
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE / "modbot"
ROOT = HERE.parent
RELEASE = "demo"
NAMESPACE = "moderation"
# The oldest Kubernetes the chart is meant for (native gRPC probes are GA since 1.27) and the
# newest that kubernetes-validate bundles.
KUBE_VERSIONS = ("1.27", "1.37")
BUILTIN_KINDS = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                 "PersistentVolumeClaim", "CronJob"}
REGISTRY_DIR = "/app/models/registry"
NOTES = "modbot/templates/NOTES.txt"
DASHBOARD = CHART / "dashboards" / "modbot.json"


def load_values(name: str | None) -> dict:
    return yaml.safe_load((HERE / name).read_text()) if name else {}


def render(values: dict | None) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path == NOTES:  # what `helm install` prints, not a manifest
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc.setdefault("__source", path)
                docs.append(doc)
    return docs


def effective_values(values: dict) -> dict:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.merge_values(values)


def check_servicemonitor(test: unittest.TestCase, sm: dict) -> None:
    """monitoring.coreos.com/v1 ServiceMonitor: the fields this chart writes, by hand."""
    test.assertEqual(set(sm), {"apiVersion", "kind", "metadata", "spec"})
    test.assertEqual(set(sm["metadata"]), {"name", "labels"})
    spec = sm["spec"]
    test.assertEqual(set(spec), {"selector", "endpoints"})
    test.assertIsInstance(spec["selector"]["matchLabels"], dict)
    test.assertTrue(all(isinstance(v, str) for v in spec["selector"]["matchLabels"].values()))
    test.assertIsInstance(spec["endpoints"], list)
    for endpoint in spec["endpoints"]:
        test.assertLessEqual(set(endpoint), {"port", "path", "interval", "scheme", "scrapeTimeout"})
        test.assertIsInstance(endpoint["port"], str)
        test.assertTrue(endpoint["path"].startswith("/"))
        test.assertRegex(endpoint["interval"], r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def check_podmonitor(test: unittest.TestCase, pm: dict) -> None:
    """monitoring.coreos.com/v1 PodMonitor: the fields this chart writes, by hand."""
    test.assertEqual(set(pm), {"apiVersion", "kind", "metadata", "spec"})
    test.assertEqual(set(pm["metadata"]), {"name", "labels"})
    spec = pm["spec"]
    test.assertEqual(set(spec), {"selector", "podMetricsEndpoints"})
    test.assertTrue(all(isinstance(v, str) for v in spec["selector"]["matchLabels"].values()))
    for endpoint in spec["podMetricsEndpoints"]:
        test.assertLessEqual(set(endpoint), {"port", "path", "interval", "scheme", "scrapeTimeout", "relabelings"})
        test.assertIsInstance(endpoint["port"], str)
        test.assertTrue(endpoint["path"].startswith("/"))
        test.assertRegex(endpoint["interval"], r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
        for relabel in endpoint.get("relabelings", []):
            test.assertLessEqual(set(relabel), {"sourceLabels", "targetLabel", "regex", "replacement", "action", "separator"})
            test.assertRegex(relabel["targetLabel"], r"^[a-zA-Z_][a-zA-Z0-9_]*$")
            for label in relabel["sourceLabels"]:
                test.assertRegex(label, r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def probe_ports(container: dict) -> list[tuple[str, str, object]]:
    """(probe, handler, port) of a container's probes."""
    found = []
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        for handler in ("grpc", "httpGet", "tcpSocket"):
            if handler in container.get(probe, {}):
                found.append((probe, handler, container[probe][handler]["port"]))
    return found


def secret_file(pod: dict, container: dict, path: str) -> tuple[str, str]:
    """The (Secret, key) whose file `path` is in `container`, through its mounts and the
    volume's `items`; fails if the file is not a read-only mounted Secret's."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    file = Path(path)
    mounts = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == file.parent]
    if len(mounts) != 1:
        raise AssertionError(f"{path}: {len(mounts)} volumes mounted at {file.parent}")
    if not mounts[0].get("readOnly"):
        raise AssertionError(f"{mounts[0]['mountPath']} is not mounted read-only")
    secret = volumes[mounts[0]["name"]].get("secret")
    if secret is None:
        raise AssertionError(f"{path}: the volume at {file.parent} is not a Secret")
    items = [i for i in secret.get("items", []) if i["path"] == file.name]
    if len(items) != 1:
        raise AssertionError(f"{path}: no item of Secret {secret['secretName']} is written to {file.name}")
    return secret["secretName"], items[0]["key"]


def reference_config() -> dict:
    return tomllib.loads((ROOT / "config" / "modbot.toml").read_text())


class ChartCase:
    """Checks shared by every set of values; subclasses name the values file."""

    values_file: str | None = None
    expect_kinds: dict[str, int] = {}

    overrides = None  # a function changing the loaded values, for variations of a file

    @classmethod
    def setUpClass(cls) -> None:
        cls.values = load_values(cls.values_file)
        if cls.overrides is not None:
            cls.values = copy.deepcopy(cls.values)
            cls.overrides(cls.values)
        cls.effective = effective_values(cls.values)
        cls.rendered = render(cls.values)
        cls.docs = manifests(cls.rendered)

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def config_map(self) -> dict:
        [configmap] = [c for c in self.of_kind("ConfigMap") if "modbot.toml" in c["data"]]
        return configmap

    def bridges(self) -> list[dict]:
        return [d for d in self.of_kind("Deployment")
                if d["metadata"]["labels"]["app.kubernetes.io/component"] == "bridge"]

    def pods(self) -> list[dict]:
        """Every pod template: the Deployments' and the CronJob's."""
        return ([d["spec"]["template"]["spec"] for d in self.of_kind("Deployment")]
                + [c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in self.of_kind("CronJob")])

    def serve(self) -> dict:
        [deployment] = [d for d in self.of_kind("Deployment")
                        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "serve"]
        return deployment

    def test_kinds(self) -> None:
        kinds: dict[str, int] = {}
        for doc in self.docs:
            kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
        self.assertEqual(kinds, self.expect_kinds)

    def test_schemas(self) -> None:
        for doc in self.docs:
            body = {k: v for k, v in doc.items() if k != "__source"}
            with self.subTest(kind=doc["kind"], name=doc["metadata"]["name"]):
                if doc["kind"] == "ServiceMonitor":
                    self.assertEqual(doc["apiVersion"], "monitoring.coreos.com/v1")
                    check_servicemonitor(self, body)
                    continue
                if doc["kind"] == "PodMonitor":
                    self.assertEqual(doc["apiVersion"], "monitoring.coreos.com/v1")
                    check_podmonitor(self, body)
                    continue
                self.assertIn(doc["kind"], BUILTIN_KINDS)
                for version in KUBE_VERSIONS:
                    kubernetes_validate.validate(body, version, strict=True)

    def test_names_and_labels(self) -> None:
        for doc in self.docs:
            self.assertRegex(doc["metadata"]["name"], r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
            self.assertLessEqual(len(doc["metadata"]["name"]), 63)
            self.assertEqual(doc["metadata"]["labels"]["app.kubernetes.io/instance"], RELEASE)
        for deployment in self.of_kind("Deployment"):
            selector = deployment["spec"]["selector"]["matchLabels"]
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            self.assertLessEqual(selector.items(), labels.items())
        # No two Deployments select the same pods.
        selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in self.of_kind("Deployment")]
        self.assertEqual(len(selectors), len(set(selectors)))

    def test_service_selects_serve(self) -> None:
        [service] = self.of_kind("Service")
        serve = self.serve()
        pod_labels = serve["spec"]["template"]["metadata"]["labels"]
        self.assertLessEqual(service["spec"]["selector"].items(), pod_labels.items())
        for bridge in self.of_kind("Deployment"):
            if bridge is not serve:
                self.assertFalse(service["spec"]["selector"].items() <= bridge["spec"]["template"]["metadata"]["labels"].items())
        [container] = serve["spec"]["template"]["spec"]["containers"]
        port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.assertEqual({p["name"] for p in service["spec"]["ports"]}, {"grpc", "http", "metrics"})
        for port in service["spec"]["ports"]:
            self.assertIn(port["targetPort"], port_names)
        # The probes: native gRPC on the gRPC container port; with TLS (which the kubelet's gRPC
        # probe cannot speak) GET /health on the metrics port, and a TCP connect to the gRPC port.
        expected = ({"livenessProbe": ("httpGet", "metrics"), "readinessProbe": ("tcpSocket", "grpc")}
                    if self.effective["tls"]["enabled"] else
                    {"livenessProbe": ("grpc", port_names["grpc"]), "readinessProbe": ("grpc", port_names["grpc"])})
        for probe, (handler, port) in expected.items():
            self.assertEqual(set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"}, {handler}, probe)
            self.assertEqual(container[probe][handler]["port"], port, probe)
            if handler == "grpc":
                self.assertIn(container[probe]["grpc"]["service"], ("", "modbot.model"))
            if handler == "httpGet":
                self.assertEqual(container[probe]["httpGet"]["path"], "/health")
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["MODBOT_GRPC_ADDR"]["value"], f"0.0.0.0:{port_names['grpc']}")
        self.assertEqual(env["MODBOT_METRICS_ADDR"]["value"], f"0.0.0.0:{port_names['metrics']}")
        self.assertEqual(env["MODBOT_HTTP_ADDR"]["value"], f"0.0.0.0:{port_names['http']}")
        self.assertEqual(container["args"][0], "serve")

    def test_secrets_only_by_reference(self) -> None:
        self.assertEqual(self.of_kind("Secret"), [])
        v = self.effective
        allowed = {(v["auth"]["existingSecret"], v["auth"]["key"]),
                   (v["bridgeServerToken"]["name"], v["bridgeServerToken"]["key"])}
        for part in ("database", "redis"):
            if v[part]["existingSecret"]:
                allowed.add((v[part]["existingSecret"], v[part]["key"]))
        for bridge in v["bridges"]:
            allowed.add((bridge["chatTokenSecret"]["name"], bridge["chatTokenSecret"]["key"]))
            if bridge.get("serverTokenSecret"):
                allowed.add((bridge["serverTokenSecret"]["name"], bridge["serverTokenSecret"]["key"]))
        # Secrets mounted as files: the TLS ones only, each named by the values.
        mountable = set()
        if v["tls"]["enabled"]:
            mountable |= {(v["tls"]["existingSecret"], v["tls"]["certKey"]), (v["tls"]["existingSecret"], v["tls"]["keyKey"])}
            if v["tls"]["clientCA"]["existingSecret"]:
                mountable.add((v["tls"]["clientCA"]["existingSecret"], v["tls"]["clientCA"]["key"]))
        if v["tls"]["serverCA"]["existingSecret"]:
            mountable.add((v["tls"]["serverCA"]["existingSecret"], v["tls"]["serverCA"]["key"]))
        for pod in self.pods():
            for volume in pod["volumes"]:
                if "secret" in volume:
                    for item in volume["secret"]["items"]:
                        self.assertIn((volume["secret"]["secretName"], item["key"]), mountable)
        secret_env = {"MODBOT_AUTH_TOKENS", "MODBOT_DATABASE_URL", "MODBOT_REDIS_URL",
                      "MODBOT_BRIDGE_CHAT_TOKEN", "MODBOT_BRIDGE_SERVER_TOKEN"}
        for pod in self.pods():
            for container in pod["containers"]:
                for e in container.get("env", []):
                    if e["name"] in secret_env:
                        self.assertNotIn("value", e, e["name"])
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        self.assertIn((ref["name"], ref["key"]), allowed)
                words = " ".join(container.get("command", []) + container["args"]).split()
                self.assertFalse(any("token" in a.lower() and a.startswith("--") for a in words))
        serve_env = {e["name"] for e in self.serve()["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertIn("MODBOT_AUTH_TOKENS", serve_env)
        self.assertEqual("MODBOT_DATABASE_URL" in serve_env, bool(v["database"]["existingSecret"]))
        self.assertEqual("MODBOT_REDIS_URL" in serve_env, bool(v["redis"]["existingSecret"]))

    def test_security_and_volumes(self) -> None:
        configmap = self.config_map()
        for pod in self.pods():
            self.assertTrue(pod["securityContext"]["runAsNonRoot"])
            self.assertNotEqual(pod["securityContext"]["runAsUser"], 0)
            volumes = {vol["name"]: vol for vol in pod["volumes"]}
            for container in pod["containers"]:
                sc = container["securityContext"]
                self.assertTrue(sc["readOnlyRootFilesystem"])
                self.assertFalse(sc["allowPrivilegeEscalation"])
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
                for m in mounts.values():
                    self.assertIn(m["name"], volumes)
                self.assertIn("emptyDir", volumes[mounts["/tmp"]["name"]])
                words = " ".join(container.get("command", []) + container["args"]).split()
                config_arg = words[words.index("--config") + 1]
                config_mount = mounts[str(Path(config_arg).parent)]
                self.assertEqual(volumes[config_mount["name"]]["configMap"]["name"], configmap["metadata"]["name"])
                self.assertIn(Path(config_arg).name, configmap["data"])
        serve_mounts = {m["mountPath"]: m["name"] for m in self.serve()["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        serve_volumes = {vol["name"]: vol for vol in self.serve()["spec"]["template"]["spec"]["volumes"]}
        data_dir = tomllib.loads(configmap["data"]["modbot.toml"])["data_dir"]
        persistence = self.effective["persistence"]
        claims = self.of_kind("PersistentVolumeClaim")
        if persistence["enabled"]:
            claim = serve_volumes[serve_mounts[data_dir]]["persistentVolumeClaim"]["claimName"]
            if persistence["existingClaim"]:
                self.assertEqual(claim, persistence["existingClaim"])
                self.assertEqual(claims, [])
            else:
                [pvc] = claims
                self.assertEqual(pvc["metadata"]["name"], claim)
                self.assertEqual(pvc["spec"]["resources"]["requests"]["storage"], persistence["size"])
                self.assertEqual(pvc["metadata"].get("annotations", {}).get("helm.sh/resource-policy"),
                                 "keep" if persistence["keepOnUninstall"] else None)
            # A ReadWriteOnce claim and one SQLite writer: never two pods at once.
            self.assertEqual(self.serve()["spec"]["strategy"], {"type": "Recreate"})
        else:
            self.assertIn("emptyDir", serve_volumes[serve_mounts[data_dir]])
            self.assertEqual(claims, [])

    def test_registry_and_retrain(self) -> None:
        """The registry claim read-only in every serve pod at model.registry_dir; the retrain
        CronJob writing a new directory of it per run, with the feedback's database."""
        v = self.effective
        [serve] = self.serve()["spec"]["template"]["spec"]["containers"]
        serve_pod = self.serve()["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m for m in serve["volumeMounts"]}
        env = {e["name"]: e for e in serve["env"]}
        jobs = self.of_kind("CronJob")
        if not v["registry"]["existingClaim"]:
            self.assertNotIn(REGISTRY_DIR, mounts)
            self.assertNotIn("MODBOT_MODEL_REGISTRY_DIR", env)
            self.assertEqual(jobs, [])
            return
        claim = v["registry"]["existingClaim"]
        self.assertTrue(mounts[REGISTRY_DIR]["readOnly"])
        volumes = {vol["name"]: vol for vol in serve_pod["volumes"]}
        self.assertEqual(volumes[mounts[REGISTRY_DIR]["name"]]["persistentVolumeClaim"],
                         {"claimName": claim, "readOnly": True})
        self.assertEqual(env["MODBOT_MODEL_REGISTRY_DIR"]["value"], REGISTRY_DIR)
        if not v["retrain"]["enabled"]:
            self.assertEqual(jobs, [])
            return
        [job] = jobs
        self.assertEqual(job["spec"]["schedule"], v["retrain"]["schedule"])
        self.assertEqual(job["spec"]["concurrencyPolicy"], "Forbid")
        template = job["spec"]["jobTemplate"]["spec"]
        self.assertEqual(template["backoffLimit"], 0)
        pod = template["template"]["spec"]
        self.assertEqual(pod["restartPolicy"], "Never")
        [container] = pod["containers"]
        volumes = {vol["name"]: vol for vol in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        self.assertFalse(mounts[REGISTRY_DIR].get("readOnly", False))
        self.assertEqual(volumes[mounts[REGISTRY_DIR]["name"]]["persistentVolumeClaim"]["claimName"], claim)
        self.assertEqual(volumes[mounts["/app/train-data"]["name"]]["persistentVolumeClaim"]["claimName"],
                         v["retrain"]["datasetsClaim"])
        script = " ".join(container["command"] + container["args"])
        words = script.split()
        self.assertEqual(words[:2], ["/bin/sh", "-c"])
        self.assertEqual(words[2:4], ["exec", "modbot"])
        self.assertIn("train", words)
        self.assertIn("--with-feedback", words)
        self.assertEqual(words[words.index("--datasets") + 1], "/app/train-data/datasets")
        out = words[words.index("--out") + 1]
        self.assertTrue(out.startswith(f'"{REGISTRY_DIR}/feedback-$(date'), out)
        job_env = {e["name"]: e for e in container["env"]}
        self.assertEqual(job_env["MODBOT_DATABASE_URL"]["valueFrom"]["secretKeyRef"],
                         {"name": v["database"]["existingSecret"], "key": v["database"]["key"]})
        self.assertEqual(job_env["MODBOT_DATA_DIR"]["value"], "/app/train-data")
        # Where a retrain that learnt nothing new finds the set it repeats.
        self.assertEqual(job_env["MODBOT_MODEL_REGISTRY_DIR"]["value"], REGISTRY_DIR)
        self.assertEqual(container["resources"], v["retrain"]["resources"])

    def shutdown_grace(self) -> int:
        """config.grpc.shutdown_grace_secs as the pods read it: the ConfigMap's, else modbot's
        built-in default (config/modbot.toml)."""
        rendered = tomllib.loads(self.config_map()["data"]["modbot.toml"])
        return rendered.get("grpc", {}).get("shutdown_grace_secs", reference_config()["grpc"]["shutdown_grace_secs"])

    def test_termination_grace_exceeds_shutdown_grace(self) -> None:
        """modbot's shutdown fits in its grace (tests/shutdown.rs); the kubelet must not kill it
        before: the pod's period is the grace plus the margin, or a larger number given."""
        pod = self.serve()["spec"]["template"]["spec"]
        period = pod["terminationGracePeriodSeconds"]
        grace = self.shutdown_grace()
        self.assertIsInstance(period, int)
        self.assertGreater(period, grace)
        if self.effective["terminationGracePeriodSeconds"] in ("", None):
            self.assertEqual(period, grace + self.effective["terminationGraceMarginSeconds"])
        else:
            self.assertEqual(period, self.effective["terminationGracePeriodSeconds"])
        env = {e["name"] for e in pod["containers"][0]["env"]}
        self.assertNotIn("MODBOT_GRPC_SHUTDOWN_GRACE_SECS", env)
        self.assertIn(f"({grace} s)", self.rendered[NOTES])
        self.assertIn(f"terminationGracePeriodSeconds is {period} s", self.rendered[NOTES])

    def test_notes_warn_of_sqlite_on_an_emptydir(self) -> None:
        notes = self.rendered[NOTES]
        ephemeral = not self.effective["database"]["existingSecret"] and not self.effective["persistence"]["enabled"]
        self.assertEqual("WARNING" in notes, ephemeral, notes)
        if ephemeral:
            self.assertIn("persistence.enabled=true", notes)

    def test_config_toml(self) -> None:
        configmap = self.config_map()
        rendered = tomllib.loads(configmap["data"]["modbot.toml"])
        reference = reference_config()
        self.assertEqual(rendered, self.effective["config"])
        for key, value in rendered.items():
            self.assertIn(key, reference, f"config.{key} is not a modbot key")
            if isinstance(value, dict):
                self.assertIsInstance(reference[key], dict, key)
                for sub, subvalue in value.items():
                    self.assertIn(sub, reference[key], f"config.{key}.{sub} is not a modbot key")
                    self.assertIs(type(subvalue), type(reference[key][sub]), f"config.{key}.{sub}")
            else:
                self.assertIs(type(value), type(reference[key]), key)
        self.assertNotIn("addr", rendered.get("grpc", {}))
        self.assertNotIn("tokens", rendered.get("auth", {}))

    def test_pdb_hpa_monitor_refer_to_serve(self) -> None:
        serve = self.serve()
        pod_labels = serve["spec"]["template"]["metadata"]["labels"]
        for pdb in self.of_kind("PodDisruptionBudget"):
            self.assertEqual(pdb["spec"]["selector"]["matchLabels"], serve["spec"]["selector"]["matchLabels"])
        for hpa in self.of_kind("HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            self.assertEqual((ref["kind"], ref["name"]), ("Deployment", serve["metadata"]["name"]))
            self.assertNotIn("replicas", serve["spec"])
            self.assertIn("cpu", serve["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"])
        [service] = self.of_kind("Service")
        for sm in self.of_kind("ServiceMonitor"):
            self.assertLessEqual(sm["spec"]["selector"]["matchLabels"].items(), service["metadata"]["labels"].items())
            for endpoint in sm["spec"]["endpoints"]:
                self.assertIn(endpoint["port"], {p["name"] for p in service["spec"]["ports"]})
        self.assertLessEqual(service["spec"]["selector"].items(), pod_labels.items())

    def test_probe_and_scrape_ports_exist(self) -> None:
        """Every probe's port is a port of its own container (by name, or by number for gRPC),
        and every bridge probes GET /health on its metrics port, which is where the bridge's
        MODBOT_METRICS_ADDR listens."""
        for deployment in self.of_kind("Deployment"):
            [container] = deployment["spec"]["template"]["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            probes = probe_ports(container)
            self.assertEqual({probe for probe, _, _ in probes}, {"livenessProbe", "readinessProbe"})
            for probe, handler, port in probes:
                with self.subTest(deployment=deployment["metadata"]["name"], probe=probe):
                    if isinstance(port, str):
                        self.assertIn(port, ports)
                    else:
                        self.assertIn(port, ports.values())
            env = {e["name"]: e.get("value") for e in container["env"]}
            self.assertEqual(env["MODBOT_METRICS_ADDR"], f"0.0.0.0:{ports['metrics']}")
        for bridge in self.bridges():
            [container] = bridge["spec"]["template"]["spec"]["containers"]
            for probe in ("livenessProbe", "readinessProbe"):
                self.assertEqual(set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"}, {"httpGet"})
                self.assertEqual(container[probe]["httpGet"], {"path": "/health", "port": "metrics"})
            self.assertEqual(container["livenessProbe"]["failureThreshold"],
                             self.effective["bridge"]["probes"]["liveness"]["failureThreshold"])

    def test_monitors_select_their_pods(self) -> None:
        """The ServiceMonitor reaches the serve pods' metrics port through the Service; the
        PodMonitor selects every bridge pod and nothing else, scrapes a port each of them has,
        and relabels from a pod label they carry."""
        serve_labels = self.serve()["spec"]["template"]["metadata"]["labels"]
        [service] = self.of_kind("Service")
        [serve_container] = self.serve()["spec"]["template"]["spec"]["containers"]
        serve_ports = {p["name"] for p in serve_container["ports"]}
        for sm in self.of_kind("ServiceMonitor"):
            self.assertLessEqual(sm["spec"]["selector"]["matchLabels"].items(), service["metadata"]["labels"].items())
            for endpoint in sm["spec"]["endpoints"]:
                [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
                self.assertIn(port["targetPort"], serve_ports)
        self.assertEqual(len(self.of_kind("ServiceMonitor")), int(self.effective["serviceMonitor"]["enabled"]))
        pod_monitors = self.of_kind("PodMonitor")
        self.assertEqual(len(pod_monitors), int(self.effective["podMonitor"]["enabled"] and bool(self.effective["bridges"])))
        for pm in pod_monitors:
            selector = pm["spec"]["selector"]["matchLabels"]
            self.assertFalse(selector.items() <= serve_labels.items(), "the PodMonitor selects serve pods")
            self.assertLessEqual(self.effective["podMonitor"]["labels"].items(), pm["metadata"]["labels"].items())
            for bridge in self.bridges():
                labels = bridge["spec"]["template"]["metadata"]["labels"]
                self.assertLessEqual(selector.items(), labels.items(), bridge["metadata"]["name"])
                [container] = bridge["spec"]["template"]["spec"]["containers"]
                meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k) for k in labels}
                for endpoint in pm["spec"]["podMetricsEndpoints"]:
                    self.assertIn(endpoint["port"], {p["name"] for p in container["ports"]})
                    for relabel in endpoint.get("relabelings", []):
                        self.assertLessEqual(set(relabel["sourceLabels"]), meta)

    def test_tls(self) -> None:
        """TLS on: the config keys name files of the Secrets the values give, mounted read-only
        and readable by the pod's group; the bridges dial https:// and trust the CA Secret.
        TLS off: no TLS key set, no Secret mounted."""
        tls = self.effective["tls"]
        pod = self.serve()["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        expected = {}
        if tls["enabled"]:
            expected["MODBOT_GRPC_TLS_CERT_FILE"] = (tls["existingSecret"], tls["certKey"])
            expected["MODBOT_GRPC_TLS_KEY_FILE"] = (tls["existingSecret"], tls["keyKey"])
            if tls["clientCA"]["existingSecret"]:
                expected["MODBOT_GRPC_TLS_CLIENT_CA_FILE"] = (tls["clientCA"]["existingSecret"], tls["clientCA"]["key"])
        self.assertEqual({k for k in env if k.startswith("MODBOT_GRPC_TLS_")}, set(expected))
        for name, secret in expected.items():
            self.assertEqual(secret_file(pod, container, env[name]), secret, name)
        bridge_expected = {}
        if tls["serverCA"]["existingSecret"]:
            bridge_expected["MODBOT_BRIDGE_SERVER_CA_FILE"] = (tls["serverCA"]["existingSecret"], tls["serverCA"]["key"])
        for bridge in self.bridges():
            bridge_pod = bridge["spec"]["template"]["spec"]
            [bc] = bridge_pod["containers"]
            benv = {e["name"]: e.get("value") for e in bc["env"]}
            self.assertEqual({k for k in benv if k.endswith("_FILE")}, set(bridge_expected))
            for name, secret in bridge_expected.items():
                self.assertEqual(secret_file(bridge_pod, bc, benv[name]), secret, name)
            url = bc["args"][bc["args"].index("--server-url") + 1]
            self.assertTrue(url.startswith("https://" if tls["enabled"] else "http://"), url)
        for deployment in self.of_kind("Deployment"):
            spec = deployment["spec"]["template"]["spec"]
            secrets = [v for v in spec["volumes"] if "secret" in v]
            if not (tls["enabled"] or tls["serverCA"]["existingSecret"]):
                self.assertEqual(secrets, [])
            for volume in secrets:
                # Root-owned files, readable by the pod's group (fsGroup), by no one else.
                self.assertEqual(volume["secret"]["defaultMode"], 0o440)
                self.assertIn("fsGroup", spec["securityContext"])
                mounts = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == volume["name"]]
                self.assertTrue(mounts and all(m["readOnly"] for m in mounts))
                # Not below the ConfigMap's read-only mount, where the kubelet cannot create it.
                self.assertTrue(all(not m["mountPath"].startswith("/etc/modbot/") for m in mounts))

    def test_dashboard_configmap(self) -> None:
        maps = [c for c in self.of_kind("ConfigMap") if "modbot.json" in c["data"]]
        dashboards = self.effective["dashboards"]
        self.assertEqual(len(maps), int(dashboards["enabled"]))
        for configmap in maps:
            self.assertEqual(json.loads(configmap["data"]["modbot.json"]), json.loads(DASHBOARD.read_text()))
            self.assertLessEqual(dashboards["labels"].items(), configmap["metadata"]["labels"].items())
            self.assertEqual(configmap["metadata"].get("annotations", {}), dashboards["annotations"])
            self.assertLess(len(configmap["data"]["modbot.json"]), 1 << 20)  # a ConfigMap's limit is 1 MiB

    def test_bridges(self) -> None:
        [service] = self.of_kind("Service")
        grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
        scheme = "https" if self.effective["tls"]["enabled"] else "http"
        bridges = [d for d in self.of_kind("Deployment") if d is not self.serve()]
        self.assertEqual(len(bridges), len(self.effective["bridges"]))
        by_name = {d["metadata"]["labels"]["modbot/bridge"]: d for d in bridges}
        for spec in self.effective["bridges"]:
            deployment = by_name[spec["name"]]
            self.assertEqual(deployment["spec"]["replicas"], 1)
            [container] = deployment["spec"]["template"]["spec"]["containers"]
            args = container["args"]
            self.assertEqual(args[0], "bridge")
            flag = lambda name: args[args.index(name) + 1]  # noqa: E731
            self.assertEqual(flag("--chat-url"), spec["chatUrl"])
            self.assertEqual(flag("--dialect"), spec["dialect"])
            self.assertIn(spec["dialect"], ("dgg", "strims"))
            self.assertEqual(flag("--bot-nick"), spec["botNick"])
            if spec.get("channel"):
                self.assertEqual(flag("--channel"), spec["channel"])
            if not self.effective["bridge"]["serverUrl"]:
                self.assertEqual(flag("--server-url"), f"{scheme}://{service['metadata']['name']}.{NAMESPACE}.svc:{grpc_port}")
            env = {e["name"] for e in container["env"]}
            self.assertLessEqual({"MODBOT_BRIDGE_CHAT_TOKEN", "MODBOT_BRIDGE_SERVER_TOKEN"}, env)
            # The server token: the bridge's own, else the shared one; the binding its auth.tokens
            # entry needs is the bridge id and channel the bridge is started with.
            server_token = next(e for e in container["env"] if e["name"] == "MODBOT_BRIDGE_SERVER_TOKEN")
            wanted = spec.get("serverTokenSecret") or self.effective["bridgeServerToken"]
            ref = server_token["valueFrom"]["secretKeyRef"]
            self.assertEqual((ref["name"], ref["key"]), (wanted["name"], wanted["key"]))
            channel = spec.get("channel") or {"dgg": "destinygg", "strims": "strims"}[spec["dialect"]]
            bridge_id = spec.get("bridgeId") or f"bridge-{channel}"
            self.assertEqual(flag("--bridge-id"), bridge_id)
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            self.assertEqual(annotations["modbot/token-binding"], f"bridge_ids={bridge_id} channels={channel}")


class DefaultValues(ChartCase, unittest.TestCase):
    values_file = None
    expect_kinds = {"ConfigMap": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1}


class EverythingOn(ChartCase, unittest.TestCase):
    """Every optional part on, TLS too (bridges trusting the server's CA)."""

    values_file = "ci-values.yaml"
    expect_kinds = {"ConfigMap": 2, "Deployment": 3, "Service": 1, "PodDisruptionBudget": 1,
                    "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1, "PodMonitor": 1, "CronJob": 1}


def plaintext(values: dict) -> None:
    values["tls"] = {"enabled": False, "serverCA": {"existingSecret": ""}}
    values["dashboards"]["enabled"] = False


class PlaintextBridges(ChartCase, unittest.TestCase):
    """The same without TLS: native gRPC probes, bridges on http://."""

    values_file = "ci-values.yaml"
    overrides = staticmethod(plaintext)
    expect_kinds = {"ConfigMap": 1, "Deployment": 3, "Service": 1, "PodDisruptionBudget": 1,
                    "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1, "PodMonitor": 1, "CronJob": 1}


def mutual_tls(values: dict) -> None:
    values["bridges"] = []
    values["tls"]["clientCA"] = {"existingSecret": "ci-client-ca", "key": "ca.pem"}
    values["tls"]["serverCA"]["existingSecret"] = ""


class MutualTLS(ChartCase, unittest.TestCase):
    """Mutual TLS, which the chart allows only without bridges (they have no client
    certificate); the PodMonitor is not rendered without bridges."""

    values_file = "ci-values.yaml"
    overrides = staticmethod(mutual_tls)
    expect_kinds = {"ConfigMap": 2, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1,
                    "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1, "CronJob": 1}


def persistent_sqlite(values: dict) -> None:
    values["persistence"] = {"enabled": True, "size": "20Gi", "storageClass": "fast-ssd"}
    values["config"] = {"grpc": {"shutdown_grace_secs": 45}}
    values["terminationGracePeriodSeconds"] = 60


class PersistentSqlite(ChartCase, unittest.TestCase):
    """The default values with SQLite on a PersistentVolumeClaim, a longer shutdown grace and
    a termination grace period given by hand."""

    overrides = staticmethod(persistent_sqlite)
    expect_kinds = {"ConfigMap": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1,
                    "PersistentVolumeClaim": 1}

    def test_claim(self) -> None:
        [pvc] = self.of_kind("PersistentVolumeClaim")
        self.assertEqual(pvc["spec"]["storageClassName"], "fast-ssd")
        self.assertEqual(pvc["spec"]["accessModes"], ["ReadWriteOnce"])


def existing_claim(values: dict) -> None:
    values["persistence"] = {"enabled": True, "existingClaim": "my-modbot-data"}


class ExistingClaim(ChartCase, unittest.TestCase):
    """SQLite on a claim the operator made: the chart makes none."""

    overrides = staticmethod(existing_claim)
    expect_kinds = {"ConfigMap": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1}


# The histograms telemetry::prometheus_builder gives buckets: every *_seconds metric and these.
BATCH_HISTOGRAMS = {"modbot_model_batch_messages", "modbot_model_batch_tokens"}


# Labels Prometheus adds to every series (the Prometheus Operator's target labels, the
# PodMonitor's `bridge`) or that come with a kind of metric (histogram buckets, summaries).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint", "bridge"}


def readme_metrics() -> dict[str, set[str]]:
    """Metric name -> label names, from README.md: the Metrics table (first column the
    names, second the labels, their example values in parentheses) and the metric list of
    the bridge section (`name{label}`)."""
    text = (ROOT / "README.md").read_text()
    metrics: dict[str, set[str]] = {}
    table = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `modbot_") or len(cells) < 3:
            continue
        labels = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cells[1])))
        for name in re.findall(r"`(modbot_[a-z0-9_]+)`", cells[0]):
            metrics[name] = labels
    bridge = text.split("\n## Moderating a chat", 1)[1].split("\n## ", 1)[0]
    listing = bridge.split("- **Metrics**", 1)[1].split("\n\n", 1)[0]
    for name, labels in re.findall(r"`(modbot_bridge_[a-z0-9_]+)(?:\{([a-z_,]+)\})?`", listing):
        metrics[name] = set(filter(None, labels.split(",")))
    return metrics


# Grafana's interval variables, given a value so that the PromQL parses.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def parse_promql(expr: str) -> tuple[object, set[str]]:
    """A dashboard query parsed by a real PromQL parser (promql-parser, the Rust crate's
    bindings): the AST, and the label Grafana's label_values(selector, label) asks for."""
    for variable, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, duration)
    labels = set()
    label_values = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", expr.strip(), re.S)
    if label_values:
        expr = label_values.group(1)
        labels.add(label_values.group(2))
    return promql_parser.parse(expr), labels


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) of a query: the selectors' names (a `__name__` matcher's
    alternatives too), and the labels of matchers, of by/without and on/ignoring/group_*."""
    ast, labels = parse_promql(expr)
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            matchers = list(node.matchers.matchers) + [m for group in node.matchers.or_matchers for m in group]
            for matcher in matchers:
                if matcher.name != "__name__":
                    labels.add(matcher.name)
                    continue
                alternatives = matcher.value.split("|")
                if not all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", a) for a in alternatives):
                    raise ValueError(f"__name__ matcher {matcher.value!r}: only plain names and | are checked")
                names.update(alternatives)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                labels.update(node.modifier.matching.labels)
            labels.update(node.modifier.group_labels or [])

    promql_parser.walk(ast, visit)
    return names, labels


def quantile_groupings(expr: str) -> list[tuple[set[str], set[str]]]:
    """For each histogram_quantile() of a query: the labels its argument is summed by, and the
    metric names under it."""
    ast, _ = parse_promql(expr)
    found = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
            inner = node.args[1]
            by = set(inner.modifier.labels) if isinstance(inner, promql_parser.AggregateExpr) and inner.modifier else set()
            found.append((by, promql_names(inner.prettify())[0]))

    promql_parser.walk(ast, visit)
    return found


def base_name(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


class Dashboard(unittest.TestCase):
    """helm/modbot/dashboards/modbot.json: generated, well-formed, and querying only metrics
    (and labels) modbot documents."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.dashboard = json.loads(DASHBOARD.read_text())
        cls.documented = readme_metrics()
        cls.known = cls.documented
        cls.histograms = {n for n in cls.documented if n.endswith("_seconds")} | BATCH_HISTOGRAMS
        cls.queries = [(p["title"], t["expr"]) for p in cls.dashboard["panels"] for t in p.get("targets", [])]
        cls.queries += [(f"${v['name']}", v["query"]["query"]) for v in cls.dashboard["templating"]["list"]
                        if v["type"] == "query"]

    def test_readme_parsed(self) -> None:
        # The parser must keep finding the table and the bridge list (or every check below
        # would pass vacuously); these are a few names from each.
        for name in ("modbot_grpc_requests_total", "modbot_model_batch_tokens", "modbot_appeals_resolved_total",
                     "modbot_bridge_chat_connected", "modbot_bridge_stream_errors_total"):
            self.assertIn(name, self.documented)
        self.assertEqual(self.documented["modbot_grpc_requests_total"], {"rpc", "code"})
        self.assertEqual(self.documented["modbot_bridge_frames_skipped_total"], {"reason"})
        self.assertGreaterEqual(len(self.documented), 45)

    def test_generated(self) -> None:
        sys.path.insert(0, str(HERE))
        try:
            import dashboard
        finally:
            sys.path.remove(str(HERE))
        self.assertEqual(DASHBOARD.read_text(), dashboard.render(), "stale: run python3 helm/dashboard.py")

    def test_panels(self) -> None:
        panels = self.dashboard["panels"]
        ids = [p["id"] for p in panels]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are not unique")
        cells = set()
        for panel in panels:
            with self.subTest(panel=panel["title"]):
                pos = panel["gridPos"]
                self.assertLessEqual(pos["x"] + pos["w"], 24)
                mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
                self.assertFalse(mine & cells, "overlaps another panel")
                cells |= mine
                if panel["type"] == "row":
                    self.assertNotIn("targets", panel)
                    continue
                self.assertGreaterEqual(len(panel["targets"]), 1)
                self.assertEqual(panel["datasource"]["uid"], "${datasource}")
                ref_ids = [t["refId"] for t in panel["targets"]]
                self.assertEqual(len(ref_ids), len(set(ref_ids)))
                for target in panel["targets"]:
                    self.assertTrue(target["expr"].strip())
                    self.assertEqual(target["datasource"]["uid"], "${datasource}")
                    # Scoped to the chosen namespace and pods.
                    self.assertIn('namespace="$namespace"', target["expr"])
                    self.assertIn('pod=~"$pod"', target["expr"])
                    self.assertEqual(target["expr"].count("("), target["expr"].count(")"))

    def test_variables(self) -> None:
        variables = {v["name"]: v for v in self.dashboard["templating"]["list"]}
        self.assertEqual((variables["datasource"]["type"], variables["datasource"]["query"]), ("datasource", "prometheus"))
        for name in ("namespace", "pod"):
            self.assertEqual(variables[name]["type"], "query")
            self.assertEqual(variables[name]["datasource"]["uid"], "${datasource}")
            self.assertTrue(variables[name]["query"]["query"].endswith(f", {name})"))
        self.assertTrue(variables["pod"]["multi"] and variables["pod"]["includeAll"])

    def test_metric_and_label_names(self) -> None:
        for title, expr in self.queries:
            with self.subTest(panel=title, expr=expr):
                try:
                    names, labels = promql_names(expr)
                except ValueError as error:
                    self.fail(f"not PromQL: {error}")
                self.assertTrue(names, "no metric found")
                allowed_labels = set(TARGET_LABELS)
                for name in names:
                    self.assertTrue(base_name(name) in self.known, f"{name} is not in README.md")
                    allowed_labels |= self.known[base_name(name)]
                    if name.endswith("_bucket"):
                        self.assertIn(base_name(name), self.histograms, f"{name}: not a histogram")
                        allowed_labels.add("le")
                self.assertLessEqual(labels, allowed_labels, "a label these metrics do not have")
                for by, inner in quantile_groupings(expr):
                    self.assertIn("le", by, "histogram_quantile over a sum that drops `le`")
                    self.assertTrue(inner and all(n.endswith("_bucket") for n in inner), inner)

    def test_coverage(self) -> None:
        used = {base_name(n) for _, expr in self.queries for n in promql_names(expr)[0]}
        bridge = {n for n in self.documented if n.startswith("modbot_bridge_")}
        self.assertEqual(bridge - used, set(), "bridge metrics missing from the dashboard")
        required = {"modbot_grpc_requests_total", "modbot_grpc_request_duration_seconds", "modbot_grpc_requests_in_flight",
                    "modbot_verdicts_total", "modbot_model_up", "modbot_model_queue_depth", "modbot_model_batch_messages",
                    "modbot_model_batch_tokens", "modbot_model_inference_seconds", "modbot_model_queue_wait_seconds",
                    "modbot_model_cache_hit_ratio", "modbot_model_rejected_total", "modbot_actions_sent_total",
                    "modbot_bridges_connected", "modbot_streams_open", "modbot_audit_write_failures_total",
                    "modbot_verdict_reasons_total", "modbot_verdicts_degraded_total", "modbot_degraded",
                    "modbot_decision_seconds", "modbot_actions_total"}
        self.assertEqual(required - used, set())

    def test_promql_parser(self) -> None:
        # The checker itself must see what it is meant to see, and refuse what does not parse.
        names, labels = promql_names('sum by (rpc, le) (rate(x_bucket{a="b,c", d=~"$e"}[$__rate_interval])) '
                                     '/ on (f) group_left (g) y offset 5m')
        self.assertEqual(names, {"x_bucket", "y"})
        self.assertEqual(labels, {"rpc", "le", "a", "d", "f", "g"})
        names, labels = promql_names('label_values({__name__=~"m1|m2", namespace="$namespace"}, pod)')
        self.assertEqual((names, labels), ({"m1", "m2"}, {"namespace", "pod"}))
        self.assertEqual(quantile_groupings("histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))"),
                         [({"le"}, {"h_bucket"})])
        for bad in ("sum(rate(x[5m])", "rate(x[$__nope])", "nosuchfn(x)", "sum by (a) x y"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                promql_names(bad)

class Refused(unittest.TestCase):
    """Values the chart must refuse to render."""

    def refused(self, change, message: str) -> None:
        values = copy.deepcopy(load_values("ci-values.yaml"))
        change(values)
        with self.assertRaises(helm.HelmError) as caught:
            render(values)
        self.assertIn(message, str(caught.exception))

    def test_replicas_without_database(self) -> None:
        self.refused(lambda v: v["database"].update(existingSecret=""), "needs database.existingSecret")

    def test_addr_in_config(self) -> None:
        self.refused(lambda v: v["config"]["grpc"].update(addr="0.0.0.0:1"), "set by the chart")

    def test_list_in_config(self) -> None:
        self.refused(lambda v: v["config"]["log"].update(level=["info"]), "not a string, number or boolean")

    def test_nested_table(self) -> None:
        self.refused(lambda v: v["config"]["grpc"].update(tls={"x": 1}), "do not nest")

    def test_retrain_without_what_it_needs(self) -> None:
        def without_database(v: dict) -> None:
            v.update(replicaCount=1)
            v["autoscaling"]["enabled"] = False
            v["database"]["existingSecret"] = ""
        for change, message in (
            (lambda v: v["registry"].update(existingClaim=""), "retrain.enabled needs registry.existingClaim"),
            (without_database, "retrain.enabled needs database.existingSecret"),
            (lambda v: v["retrain"].update(datasetsClaim=""), "retrain.enabled needs retrain.datasetsClaim"),
        ):
            with self.subTest(message=message):
                self.refused(change, message)

    def test_bridge_without_token(self) -> None:
        self.refused(lambda v: v["bridges"][0].update(chatTokenSecret={"name": "", "key": "k"}), "chatTokenSecret.name")

    def test_no_auth_secret(self) -> None:
        self.refused(lambda v: v["auth"].update(existingSecret=""), "auth.existingSecret is required")

    def test_tls_without_secret(self) -> None:
        self.refused(lambda v: v["tls"].update(existingSecret=""), "tls.enabled needs tls.existingSecret")

    def test_mutual_tls_with_bridges(self) -> None:
        self.refused(lambda v: v["tls"]["clientCA"].update(existingSecret="ca"), "cannot present a client certificate")

    def test_client_ca_without_tls(self) -> None:
        def change(v: dict) -> None:
            v["bridges"] = []
            v["tls"].update(enabled=False, clientCA={"existingSecret": "ca", "key": "ca.crt"})
        self.refused(change, "tls.clientCA needs tls.enabled")

    def test_plaintext_server_url_with_tls(self) -> None:
        self.refused(lambda v: v["bridge"].update(serverUrl="http://modbot:50051"), "use https://")

    def test_termination_grace_not_longer_than_shutdown_grace(self) -> None:
        # ci-values.yaml's shutdown grace is 20 s.
        for period in (20, 5):
            with self.subTest(period=period):
                self.refused(lambda v: v.update(terminationGracePeriodSeconds=period),
                             "must be longer than config.grpc.shutdown_grace_secs (20)")

    def test_shutdown_grace_through_extra_env(self) -> None:
        self.refused(lambda v: v["extraEnv"].append({"name": "MODBOT_GRPC_SHUTDOWN_GRACE_SECS", "value": "99"}),
                     "set config.grpc.shutdown_grace_secs instead")

    def test_tls_files_in_config(self) -> None:
        for table, key in (("grpc", "tls_cert_file"), ("grpc", "tls_key_file"), ("grpc", "tls_client_ca_file"),
                           ("bridge", "server_ca_file")):
            with self.subTest(key=key):
                self.refused(lambda v: v["config"][table].update({key: "/x.pem"}), f"config.{table}.{key} is set by the chart")


class Lint(unittest.TestCase):
    def test_lint(self) -> None:
        for values in (None, load_values("ci-values.yaml")):
            result = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version="1.37.0")
            errors = [m for m in result["messages"] if m["severity"] >= 2 and m["error"] != "icon is recommended"]
            self.assertEqual(errors, [], result)
            self.assertEqual(result["errors"], [])


if __name__ == "__main__":
    print(f"helm {helm.helm_sdk_version()} (helm-python-sdk), kubernetes-validate {kubernetes_validate.version.__version__}, "
          f"schemas for Kubernetes {', '.join(KUBE_VERSIONS)}")
    sys.exit(0 if unittest.main(exit=False, verbosity=1).result.wasSuccessful() else 1)
