"""The Kubernetes manifests (deploy/k8s) and their generator, checked offline.

Every kustomization is rendered with `kubectl kustomize`; core kinds are validated strictly with
kubernetes-validate; ServiceMonitor, PodMonitor and PrometheusRule get structural checks (their
CRD schemas aren't bundled); every pod template must meet Pod Security "restricted"; the
exporter's config must pass the exporter's own validator; and the generated files must be in
sync with the rule file and the dashboards.

The rendering tests run on a copy of deploy/k8s regenerated from the repository's rule file and
dashboards (or from small placeholders where those are missing); the committed generated files
are compared with a fresh generation by test_generated_files_are_in_sync.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter import __version__
from exporter.cli import build_parser
from exporter.config import load

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
GENERATOR = REPO / "deploy" / "generate_manifests.py"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARDS = REPO / "grafana" / "dashboards"

KUBECTL_TIMEOUT = 60
# kubectl's own version here, and the newest one kubernetes-validate 1.37.0 bundles.
K8S_VERSIONS = ("1.32", "1.37")
MONITORING_API = "monitoring.coreos.com/v1"
RELEASE = "kube-prometheus-stack"
PORT = 29877
CONFIG_DIR = "/etc/llm-carbon-exporter"
EXPORTER_IMAGE = "llm-carbon-exporter"
# Client-side `kubectl apply` stores the object in an annotation limited to 256 KiB.
MAX_DASHBOARD_BYTES = 256 * 1024 - 4 * 1024

Doc = dict[str, Any]

PLACEHOLDER_ALERTS = """\
groups:
  - name: placeholder
    rules:
      - alert: LLMCarbonExporterUpstreamDown
        expr: max by (upstream) (llm_carbon_exporter_upstream_up) == 0
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: The exporter cannot read its upstream.
          description: |
            {{ $labels.upstream }} unreadable for 10 minutes;
            per-model figures are withdrawn.
      - record: namespace_model:llm_carbon_power_watts:sum
        expr: |
          sum by (namespace, model) (
            llm_carbon_power_watts{scope="gpu"}
          )
"""
PLACEHOLDER_DASHBOARDS = {
    "llm-carbon-overview.json": json.dumps(
        {"uid": "llm-carbon-overview", "title": "LLM carbon — overview", "panels": []}, indent=2
    )
    + "\n",
    "models.json": '{"uid":"llm-carbon-models","title":"Models","panels":[]}',
}


# --- helpers ------------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl beside this Python (a virtualenv's, from a wheel) first, else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    path = str(beside) if beside.is_file() else shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "kubectl not found beside this Python or on PATH: the manifest tests render every "
            "kustomization with `kubectl kustomize` (kubectl >= 1.27, kustomize v5); install it"
        )
    return path


def render(directory: Path) -> list[Doc]:
    try:
        result = subprocess.run(
            [kubectl(), "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"kubectl kustomize {directory} took more than {KUBECTL_TIMEOUT}s")
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    assert docs, f"kubectl kustomize {directory} rendered nothing"
    return docs


def run_generator(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_placeholders(root: Path) -> tuple[Path, Path]:
    alerts = root / "alerts.yaml"
    alerts.write_text(PLACEHOLDER_ALERTS, encoding="utf-8")
    dashboards = root / "dashboards"
    dashboards.mkdir()
    for name, text in PLACEHOLDER_DASHBOARDS.items():
        (dashboards / name).write_text(text, encoding="utf-8")
    return alerts, dashboards


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"want one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_templates(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        spec = doc.get("spec") or {}
        if doc["kind"] == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc
        elif isinstance(spec.get("template"), dict) and "spec" in spec["template"]:
            yield f"{doc['kind']}/{doc['metadata']['name']}", spec["template"]
        elif doc["kind"] == "CronJob":
            yield f"CronJob/{doc['metadata']['name']}", spec["jobTemplate"]["spec"]["template"]


def all_containers(pod: Doc) -> list[Doc]:
    return [
        *pod.get("initContainers", []),
        *pod.get("containers", []),
        *pod.get("ephemeralContainers", []),
    ]


def exporter_containers(pod: Doc) -> list[Doc]:
    return [c for c in pod["containers"] if image_name(c["image"]).endswith(EXPORTER_IMAGE)]


def image_name(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image


def image_tag(image: str) -> str | None:
    last = image.split("@")[0].split("/")[-1]
    return last.split(":", 1)[1] if ":" in last else None


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def configmap_for_volume(docs: list[Doc], pod: Doc, volume_name: str) -> Doc:
    volume = next(v for v in pod["volumes"] if v["name"] == volume_name)
    return one(docs, "ConfigMap", volume["configMap"]["name"])


DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


# --- Pod Security "restricted" --------------------------------------------------------------

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: Doc) -> list[str]:
    """What a pod spec does that Pod Security Standards "restricted" (latest) forbids."""
    problems: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: {sorted(kinds)} not allowed")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    if pod_sc.get("sysctls"):
        problems.append("pod sets sysctls")
    for container in all_containers(pod):
        where = f"container {container['name']}"
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {capabilities['add']}")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is {seccomp}, not RuntimeDefault")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount {sc['procMount']}")
        selinux = sc.get("seLinuxOptions") or pod_sc.get("seLinuxOptions") or {}
        if (
            selinux.get("user")
            or selinux.get("role")
            or selinux.get("type", "") not in SELINUX_TYPES
        ):
            problems.append(f"{where}: seLinuxOptions {selinux}")
        apparmor = (sc.get("appArmorProfile") or pod_sc.get("appArmorProfile") or {}).get("type")
        if apparmor == "Unconfined":
            problems.append(f"{where}: appArmorProfile Unconfined")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']}")
    return problems


def exporter_problems(pod: Doc, container: Doc) -> list[str]:
    """Hardening and wiring the exporter container needs beyond Pod Security."""
    problems: list[str] = []
    sc = container.get("securityContext") or {}
    pod_sc = pod.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if not (isinstance(uid, int) and uid > 0 and isinstance(gid, int) and gid > 0):
        problems.append(f"runAsUser/runAsGroup {uid}/{gid}: want numeric, non-root")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    if not any(
        m["mountPath"] == "/tmp" and m["name"] in empty_dirs
        for m in container.get("volumeMounts", [])
    ):
        problems.append("no emptyDir mounted at /tmp")
    resources = container.get("resources") or {}
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(bound) or {}):
                problems.append(f"no {resource} {bound}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if PORT not in ports.values():
        problems.append(f"no container port {PORT}")
    probes = [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
    if len(pod.get("containers", [])) > 1:
        # A sidecar must not gate its inference pod: while dcgm-exporter is unreachable the
        # exporter is not ready, and the pod would leave its Service.
        probes.pop()
        if "readinessProbe" in container:
            problems.append("a sidecar exporter has a readinessProbe")
    for probe, path in probes:
        get = ((container.get(probe) or {}).get("httpGet")) or {}
        if get.get("path") != path:
            problems.append(f"{probe} path is {get.get('path')}, want {path}")
        if ports.get(get.get("port"), get.get("port")) != PORT:
            problems.append(f"{probe} port {get.get('port')} is not {PORT}")
    tag = image_tag(container["image"])
    if tag != __version__:
        problems.append(f"image tag {tag} is not the package version {__version__}")
    return problems


# --- monitoring.coreos.com: structural checks ---------------------------------------------

ENDPOINT_KEYS = {
    "port",
    "portNumber",
    "targetPort",
    "path",
    "scheme",
    "params",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "honorTimestamps",
    "trackTimestampsStaleness",
    "relabelings",
    "metricRelabelings",
    "tlsConfig",
    "authorization",
    "basicAuth",
    "oauth2",
    "bearerTokenSecret",
    "followRedirects",
    "enableHttp2",
    "filterRunning",
    "proxyUrl",
    "noProxy",
    "proxyFromEnvironment",
    "proxyConnectHeader",
}
MONITOR_SPEC_KEYS = {
    "selector",
    "namespaceSelector",
    "jobLabel",
    "targetLabels",
    "podTargetLabels",
    "sampleLimit",
    "targetLimit",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "keepDroppedTargets",
    "attachMetadata",
    "scrapeClass",
    "scrapeProtocols",
    "fallbackScrapeProtocol",
    "bodySizeLimit",
    "selectorMechanism",
}
GROUP_KEYS = {"name", "interval", "rules", "limit", "query_offset", "labels"}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def monitor_problems(monitor: Doc, endpoints_key: str) -> list[str]:
    problems: list[str] = []
    if monitor.get("apiVersion") != MONITORING_API:
        problems.append(f"apiVersion {monitor.get('apiVersion')}")
    if monitor["metadata"].get("labels", {}).get("release") != RELEASE:
        problems.append(f"no label release: {RELEASE}")
    spec = monitor.get("spec") or {}
    unknown = set(spec) - MONITOR_SPEC_KEYS - {endpoints_key}
    if unknown:
        problems.append(f"unknown spec fields {sorted(unknown)}")
    if not (spec.get("selector") or {}).get("matchLabels"):
        problems.append("no spec.selector.matchLabels")
    endpoints = spec.get(endpoints_key) or []
    if not endpoints:
        problems.append(f"no spec.{endpoints_key}")
    for endpoint in endpoints:
        if set(endpoint) - ENDPOINT_KEYS:
            problems.append(f"unknown endpoint fields {sorted(set(endpoint) - ENDPOINT_KEYS)}")
        if endpoint.get("path") != "/metrics":
            problems.append(f"endpoint path {endpoint.get('path')}")
        interval, timeout = endpoint.get("interval", ""), endpoint.get("scrapeTimeout", "")
        if not (DURATION.match(interval) and DURATION.match(timeout)):
            problems.append(f"endpoint interval/scrapeTimeout {interval}/{timeout}")
        elif seconds(timeout) > seconds(interval) or seconds(interval) != 30:
            problems.append(
                f"want interval 30s and scrapeTimeout <= interval: {interval}/{timeout}"
            )
        if endpoint.get("honorLabels") is not True:
            problems.append("honorLabels is not true (the exporter's namespace label would move)")
    return problems


def service_monitor_problems(monitor: Doc, services: list[Doc]) -> list[str]:
    problems = monitor_problems(monitor, "endpoints")
    if monitor["kind"] != "ServiceMonitor":
        problems.append(f"kind {monitor['kind']}")
    selector = (monitor.get("spec") or {}).get("selector", {}).get("matchLabels", {})
    selected = [s for s in services if labels_match(selector, s["metadata"].get("labels", {}))]
    if not selected:
        problems.append(f"selector {selector} matches no Service")
    for endpoint in (monitor.get("spec") or {}).get("endpoints", []):
        for service in selected:
            names = {p.get("name") for p in service["spec"]["ports"]}
            if endpoint.get("port") not in names:
                problems.append(f"port {endpoint.get('port')} is not a port name of the Service")
    return problems


def pod_monitor_problems(monitor: Doc, pods: list[Doc]) -> list[str]:
    problems = monitor_problems(monitor, "podMetricsEndpoints")
    if monitor["kind"] != "PodMonitor":
        problems.append(f"kind {monitor['kind']}")
    selector = (monitor.get("spec") or {}).get("selector", {}).get("matchLabels", {})
    selected = [p for p in pods if labels_match(selector, p["metadata"].get("labels", {}))]
    if not selected:
        problems.append(f"selector {selector} matches no pod template")
    for endpoint in (monitor.get("spec") or {}).get("podMetricsEndpoints", []):
        for pod in selected:
            ports = {
                port["name"]: port["containerPort"]
                for container in exporter_containers(pod["spec"])
                for port in container.get("ports", [])
            }
            if ports.get(endpoint.get("port")) != PORT:
                problems.append(
                    f"port {endpoint.get('port')} is not the exporter container's {PORT}"
                )
        # The dashboards add sidecars' figures per model by this label.
        if {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "serving_pod"} not in (
            endpoint.get("relabelings") or []
        ):
            problems.append("no relabeling of the pod name into `serving_pod`")
    return problems


def rule_problems(rule: Doc) -> list[str]:
    problems: list[str] = []
    if rule.get("apiVersion") != MONITORING_API or rule.get("kind") != "PrometheusRule":
        problems.append(f"{rule.get('apiVersion')} {rule.get('kind')}")
    if rule["metadata"].get("labels", {}).get("release") != RELEASE:
        problems.append(f"no label release: {RELEASE}")
    groups = (rule.get("spec") or {}).get("groups") or []
    if not groups:
        problems.append("no spec.groups")
    names = [group.get("name") for group in groups]
    if len(set(names)) != len(names):
        problems.append(f"group names repeat: {names}")
    for group in groups:
        if set(group) - GROUP_KEYS:
            problems.append(f"group {group.get('name')}: unknown {sorted(set(group) - GROUP_KEYS)}")
        if not group.get("rules"):
            problems.append(f"group {group.get('name')}: no rules")
        for item in group.get("rules") or []:
            name = item.get("alert") or item.get("record")
            where = f"group {group.get('name')} rule {name}"
            if set(item) - RULE_KEYS:
                problems.append(f"{where}: unknown {sorted(set(item) - RULE_KEYS)}")
            if ("alert" in item) == ("record" in item):
                problems.append(f"{where}: want exactly one of alert and record")
            if "record" in item and not METRIC_NAME.match(str(item["record"])):
                problems.append(f"{where}: record is not a metric name")
            if not isinstance(item.get("expr"), str) or not item["expr"].strip():
                problems.append(f"{where}: no expr")
            for key in ("for", "keep_firing_for"):
                if key in item and not DURATION.match(str(item[key])):
                    problems.append(f"{where}: {key} {item[key]} is not a duration")
            for key in ("labels", "annotations"):
                values = item.get(key, {})
                if not isinstance(values, dict) or not all(
                    isinstance(v, str) for v in values.values()
                ):
                    problems.append(f"{where}: {key} values must be strings")
    return problems


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The rule file and dashboard directory: the repository's, or placeholders until then."""
    root = tmp_path_factory.mktemp("sources")
    alerts, dashboards = write_placeholders(root)
    if ALERTS.is_file():
        alerts = ALERTS
    if DASHBOARDS.is_dir() and any(DASHBOARDS.glob("*.json")):
        dashboards = DASHBOARDS
    return alerts, dashboards


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory, sources: tuple[Path, Path]) -> Path:
    k8s = tmp_path_factory.mktemp("tree") / "k8s"
    shutil.copytree(K8S, k8s)
    alerts, dashboards = sources
    result = run_generator("--alerts", alerts, "--dashboards", dashboards, "--k8s", k8s)
    assert result.returncode == 0, result.stderr
    return k8s


@pytest.fixture(scope="session")
def rendered(tree: Path) -> dict[str, list[Doc]]:
    overlay = tree / "overlays" / "bearer-token"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../../base"],
                "components": ["../../components/bearer-token"],
            }
        )
    )
    return {
        "base": render(tree / "base"),
        "sidecar": render(tree / "sidecar"),
        "bearer-token": render(overlay),
    }


@pytest.fixture(scope="session")
def validator() -> Callable[[Doc, str], None]:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail(
            "kubernetes-validate is not installed: pip install kubernetes-validate==1.37.0 "
            "(a test dependency: it validates the manifests offline)"
        )

    def validate(doc: Doc, version: str) -> None:
        kubernetes_validate.validate(doc, version, strict=True)

    return validate


RENDERS = ("base", "sidecar", "bearer-token")


# --- files ----------------------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 8, f"deploy/k8s looks empty: {files}"
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert docs, f"{path}: empty"
        for doc in docs:
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            if path.name != "config.yaml":
                assert {"apiVersion", "kind"} <= set(doc), f"{path}: no apiVersion/kind"


def test_every_manifest_is_referenced_by_its_kustomization() -> None:
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        directory = kustomization.parent
        spec = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
        referenced = set(spec.get("resources", []))
        for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
            referenced |= {f.split("=")[-1] for f in generator.get("files", [])}
        referenced |= {patch["path"] for patch in spec.get("patches", []) if "path" in patch}
        present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert present <= referenced, f"{directory}: not referenced: {present - referenced}"


def test_generated_files_are_in_sync() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, (
        f"generate_manifests.py --check exited {result.returncode}: {result.stderr.strip()}"
    )
    assert result.stderr == ""


# --- rendering and schemas ------------------------------------------------------------------


def test_kustomizations_render_the_expected_objects(rendered: dict[str, list[Doc]]) -> None:
    base = {doc["kind"] for doc in rendered["base"]}
    assert base == {
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PrometheusRule",
        "Service",
        "ServiceMonitor",
    }
    assert {doc["kind"] for doc in rendered["sidecar"]} == {"Deployment", "PodMonitor"}
    for name, docs in rendered.items():
        keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), f"{name}: duplicate objects"
        assert all(d["metadata"].get("namespace") for d in docs), f"{name}: no namespace"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", RENDERS)
def test_core_kinds_validate_strictly(
    rendered: dict[str, list[Doc]], validator: Callable[[Doc, str], None], name: str, version: str
) -> None:
    core = [doc for doc in rendered[name] if doc["apiVersion"] != MONITORING_API]
    assert core
    for doc in core:
        try:
            validator(doc, version)
        except Exception as exc:  # ValidationError, SchemaNotFoundError: both fail here
            message = getattr(exc, "message", str(exc))
            path = "/".join(map(str, getattr(exc, "absolute_path", [])))
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} at {path}: {message}")


def test_strict_validation_rejects_unknown_fields(
    rendered: dict[str, list[Doc]], validator: Callable[[Doc, str], None]
) -> None:
    service = copy.deepcopy(one(rendered["base"], "Service"))
    service["spec"]["ports"][0]["portz"] = PORT
    with pytest.raises(Exception, match="portz"):
        validator(service, K8S_VERSIONS[-1])


def test_no_image_is_latest_or_untagged(rendered: dict[str, list[Doc]]) -> None:
    for name, docs in rendered.items():
        for where, pod in pod_templates(docs):
            for container in all_containers(pod):
                tag = image_tag(container["image"])
                assert tag and tag != "latest", f"{name} {where}: image {container['image']}"


# --- Pod Security and the exporter container ------------------------------------------------


@pytest.mark.parametrize("name", RENDERS)
def test_pod_templates_meet_pod_security_restricted(
    rendered: dict[str, list[Doc]], name: str
) -> None:
    templates = list(pod_templates(rendered[name]))
    assert templates
    for where, pod in templates:
        assert restricted_violations(pod["spec"]) == [], f"{name} {where}"
        assert pod["spec"].get("automountServiceAccountToken") is False, f"{name} {where}"


@pytest.mark.parametrize("name", RENDERS)
def test_exporter_containers_are_hardened_and_probed(
    rendered: dict[str, list[Doc]], name: str
) -> None:
    found = 0
    for where, pod in pod_templates(rendered[name]):
        for container in exporter_containers(pod["spec"]):
            found += 1
            assert exporter_problems(pod["spec"], container) == [], f"{name} {where}"
    assert found == 1, f"{name}: want one exporter container, found {found}"


def _base_pod(rendered: dict[str, list[Doc]]) -> Doc:
    return copy.deepcopy(one(rendered["base"], "Deployment")["spec"]["template"]["spec"])


def _container(pod: Doc) -> Doc:
    return pod["containers"][0]


POD_SECURITY_BREAKS: dict[str, tuple[Callable[[Doc], Any], str]] = {
    "host network": (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    "hostPath volume": (
        lambda p: p["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
        "volume root",
    ),
    "privilege escalation": (
        lambda p: _container(p)["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation",
    ),
    "capabilities kept": (
        lambda p: _container(p)["securityContext"].update(capabilities={"drop": ["NET_RAW"]}),
        "drop ALL",
    ),
    "capability added": (
        lambda p: _container(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "adds capabilities",
    ),
    "root user": (lambda p: _container(p)["securityContext"].update(runAsUser=0), "runAsUser"),
    "runAsNonRoot false": (
        lambda p: _container(p)["securityContext"].update(runAsNonRoot=False),
        "runAsNonRoot",
    ),
    "seccomp unconfined": (
        lambda p: _container(p)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "seccompProfile",
    ),
    "seccomp unset": (
        lambda p: (
            p["securityContext"].pop("seccompProfile"),
            _container(p)["securityContext"].pop("seccompProfile"),
        ),
        "seccompProfile",
    ),
    "host port": (lambda p: _container(p)["ports"][0].update(hostPort=PORT), "hostPort"),
    "privileged": (lambda p: _container(p)["securityContext"].update(privileged=True), "privil"),
    "bare init container": (
        lambda p: p.update(initContainers=[{"name": "init", "image": "busybox:1.36"}]),
        "container init",
    ),
}


@pytest.mark.parametrize("case", sorted(POD_SECURITY_BREAKS))
def test_pod_security_check_catches(rendered: dict[str, list[Doc]], case: str) -> None:
    pod = _base_pod(rendered)
    assert restricted_violations(pod) == []
    mutate, expected = POD_SECURITY_BREAKS[case]
    mutate(pod)
    problems = restricted_violations(pod)
    assert any(expected in problem for problem in problems), problems


EXPORTER_BREAKS: dict[str, tuple[Callable[[Doc], Any], str]] = {
    "writable root": (
        lambda p: _container(p)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem",
    ),
    "no /tmp": (lambda p: _container(p)["volumeMounts"].pop(), "/tmp"),
    "liveness on /metrics": (
        lambda p: _container(p)["livenessProbe"]["httpGet"].update(path="/metrics"),
        "livenessProbe path",
    ),
    "readiness on /healthz": (
        lambda p: _container(p)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "readinessProbe path",
    ),
    "no limits": (lambda p: _container(p)["resources"].pop("limits"), "limits"),
    "latest image": (lambda p: _container(p).update(image="x/llm-carbon-exporter:latest"), "tag"),
}


@pytest.mark.parametrize("case", sorted(EXPORTER_BREAKS))
def test_exporter_check_catches(rendered: dict[str, list[Doc]], case: str) -> None:
    pod = _base_pod(rendered)
    assert exporter_problems(pod, _container(pod)) == []
    mutate, expected = EXPORTER_BREAKS[case]
    mutate(pod)
    problems = exporter_problems(pod, _container(pod))
    assert any(expected in problem for problem in problems), problems


# --- the base -------------------------------------------------------------------------------


def test_base_deployment_runs_one_exporter_with_the_config(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["base"]
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    container = _container(pod)
    assert container["args"] == ["serve", "--config", f"{CONFIG_DIR}/config.yaml"]
    assert build_parser().parse_args(container["args"]).config == f"{CONFIG_DIR}/config.yaml"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    assert mount.get("readOnly") is True
    configmap = configmap_for_volume(docs, pod, mount["name"])
    assert configmap["metadata"]["name"].startswith("llm-carbon-exporter-config-")
    assert set(configmap["data"]) == {"config.yaml"}
    assert labels_match(
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"],
    )


def test_base_config_passes_the_exporters_validator(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    docs = rendered["base"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in _container(pod)["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    path = tmp_path / "config.yaml"
    path.write_text(configmap_for_volume(docs, pod, mount["name"])["data"]["config.yaml"])
    config = load(str(path))  # raises ConfigError on any problem
    url = urlsplit(config.prometheus.url or "")
    assert url.scheme == "http" and url.hostname, config.prometheus.url
    assert len(url.hostname.split(".")) >= 2, "want an in-cluster <service>.<namespace> host"
    assert config.prometheus.bearer_token_file is None
    listen_port = int(config.exporter.listen.rpartition(":")[2])
    assert listen_port == PORT == _container(pod)["ports"][0]["containerPort"]


def test_service_exposes_the_metrics_port(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["base"]
    service = one(docs, "Service")
    template = one(docs, "Deployment")["spec"]["template"]
    assert labels_match(service["spec"]["selector"], template["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == PORT
    container_ports = {p["name"]: p["containerPort"] for p in _container(template["spec"])["ports"]}
    assert container_ports.get(port["targetPort"], port["targetPort"]) == PORT


def test_service_monitor_selects_the_service(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["base"]
    assert service_monitor_problems(one(docs, "ServiceMonitor"), find(docs, "Service")) == []


MONITOR_BREAKS: dict[str, tuple[Callable[[Doc], Any], str]] = {
    "port name": (lambda m: m["spec"]["endpoints"][0].update(port="metricz"), "port metricz"),
    "selector": (
        lambda m: m["spec"]["selector"]["matchLabels"].update(app="other"),
        "matches no",
    ),
    "release label": (lambda m: m["metadata"]["labels"].pop("release"), "release"),
    "unknown field": (lambda m: m["spec"]["endpoints"][0].update(portz=1), "portz"),
    "honorLabels": (lambda m: m["spec"]["endpoints"][0].pop("honorLabels"), "honorLabels"),
    "timeout": (lambda m: m["spec"]["endpoints"][0].update(scrapeTimeout="1m"), "scrapeTimeout"),
}


@pytest.mark.parametrize("case", sorted(MONITOR_BREAKS))
def test_service_monitor_check_catches(rendered: dict[str, list[Doc]], case: str) -> None:
    docs = rendered["base"]
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    mutate, expected = MONITOR_BREAKS[case]
    mutate(monitor)
    problems = service_monitor_problems(monitor, find(docs, "Service"))
    assert any(expected in problem for problem in problems), problems


def test_prometheus_rule_wraps_the_rule_file(
    rendered: dict[str, list[Doc]], sources: tuple[Path, Path]
) -> None:
    rule = one(rendered["base"], "PrometheusRule")
    assert rule_problems(rule) == []
    alerts, _ = sources
    assert rule["spec"]["groups"] == yaml.safe_load(alerts.read_text(encoding="utf-8"))["groups"]


def test_rule_check_catches() -> None:
    rule = {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": {"name": "x", "labels": {"release": RELEASE}},
        "spec": yaml.safe_load(PLACEHOLDER_ALERTS),
    }
    assert rule_problems(rule) == []
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["record"] = "x"
    broken["spec"]["groups"][0]["rules"][1]["expr"] = ""
    broken["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    broken["spec"]["groups"][0]["rules"][0]["labels"]["severity"] = 3
    problems = " | ".join(rule_problems(broken))
    for expected in ("exactly one", "no expr", "not a duration", "must be strings"):
        assert expected in problems, problems


def test_one_dashboard_configmap_per_dashboard(
    rendered: dict[str, list[Doc]], sources: tuple[Path, Path]
) -> None:
    _, dashboards = sources
    files = {path.name: path for path in dashboards.glob("*.json")}
    configmaps = [
        doc
        for doc in find(rendered["base"], "ConfigMap")
        if doc["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(configmaps) == len(files) > 0
    seen = set()
    for configmap in configmaps:
        assert configmap["metadata"]["annotations"] == {"grafana_folder": "LLM carbon"}
        (key,) = configmap["data"]
        seen.add(key)
        source = files[key].read_text(encoding="utf-8")
        assert configmap["data"][key] == source
        assert len(source.encode()) < MAX_DASHBOARD_BYTES, f"{key}: too big for kubectl apply"
    assert seen == set(files)


def test_network_policy_allows_scrapes_dns_and_prometheus_only(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    docs = rendered["base"]
    policy = one(docs, "NetworkPolicy")
    template = one(docs, "Deployment")["spec"]["template"]
    assert labels_match(
        policy["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"]
    )
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    ingress_ports = [p for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])]
    assert all(rule.get("ports") for rule in policy["spec"]["ingress"]), "a rule opens all ports"
    assert ingress_ports == [{"port": PORT, "protocol": "TCP"}]

    mount = next(m for m in _container(template["spec"])["volumeMounts"] if m["name"] == "config")
    path = tmp_path / "config.yaml"
    path.write_text(configmap_for_volume(docs, template["spec"], mount["name"])["data"][path.name])
    url = urlsplit(load(str(path)).prometheus.url or "")
    namespace = (url.hostname or "").split(".")[1]
    port = url.port or (443 if url.scheme == "https" else 80)
    egress = policy["spec"]["egress"]
    assert len(egress) == 2, "want exactly DNS and Prometheus"
    dns, prometheus = egress
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert prometheus["ports"] == [{"port": port, "protocol": "TCP"}]
    assert prometheus["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    ]


# --- the bearer-token component -------------------------------------------------------------


def test_bearer_token_component_mounts_the_secret_and_sets_the_file(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    docs = rendered["bearer-token"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    volume = next(v for v in pod["volumes"] if "secret" in v)
    (item,) = volume["secret"]["items"]
    container = _container(pod)
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount.get("readOnly") is True
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    token_file = env["PROMETHEUS_BEARER_TOKEN_FILE"]
    assert token_file == f"{mount['mountPath']}/{item['path']}"

    # The exporter, given the base's configuration and that environment, uses the token file.
    config_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    path = tmp_path / "config.yaml"
    path.write_text(configmap_for_volume(docs, pod, config_mount["name"])["data"]["config.yaml"])
    config = load(str(path), environ={"PROMETHEUS_BEARER_TOKEN_FILE": token_file})
    assert config.prometheus.bearer_token_file == token_file
    assert load(str(path)).prometheus.bearer_token_file is None


def test_readme_overlay_example_renders_as_documented(tree: Path) -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "Kustomization" in b]
    assert len(blocks) == 1, "want one example kustomization in deploy/k8s/README.md"
    example = yaml.safe_load(blocks[0])
    overlay = tree / "overlays" / "readme-example"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(blocks[0])
    docs = render(overlay)
    (patch,) = example["patches"]
    release = yaml.safe_load(patch["patch"])[0]["value"]
    monitors = [d for d in docs if d["apiVersion"] == MONITORING_API]
    assert len(monitors) == 2
    assert {d["metadata"]["labels"]["release"] for d in monitors} == {release}
    (image,) = example["images"]
    container = _container(one(docs, "Deployment")["spec"]["template"]["spec"])
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    assert str(image["newTag"]) == __version__


# --- the sidecar example --------------------------------------------------------------------


def _sidecar_pod(rendered: dict[str, list[Doc]]) -> Doc:
    return one(rendered["sidecar"], "Deployment")["spec"]["template"]


def test_sidecar_runs_the_exporter_in_direct_mode(rendered: dict[str, list[Doc]]) -> None:
    pod = _sidecar_pod(rendered)["spec"]
    (exporter,) = exporter_containers(pod)
    assert exporter["args"] == [
        "serve",
        "--vllm-url",
        "http://127.0.0.1:8000/metrics",
        "--dcgm-url",
        "http://$(NODE_IP):9400/metrics",
    ]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in exporter["env"]}
    assert env == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "NODE_IP": "status.hostIP",
        "NODE_NAME": "spec.nodeName",
    }
    for reference in re.findall(r"\$\((\w+)\)", " ".join(exporter["args"])):
        assert reference in env, f"$({reference}) is not in the container's env"
    # The exporter's own command line accepts them (the kubelet expands $(NODE_IP) first).
    args = [arg.replace("$(NODE_IP)", "10.0.0.5") for arg in exporter["args"]]
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.vllm_url, parsed.dcgm_url) == ("serve", [args[2]], [args[4]])


def test_sidecar_vllm_serves_where_the_exporter_reads(rendered: dict[str, list[Doc]]) -> None:
    pod = _sidecar_pod(rendered)["spec"]
    (exporter,) = exporter_containers(pod)
    others = [c for c in pod["containers"] if c is not exporter]
    (vllm,) = others
    assert image_name(vllm["image"]) == "vllm/vllm-openai"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", image_tag(vllm["image"]) or ""), vllm["image"]
    url = urlsplit(exporter["args"][exporter["args"].index("--vllm-url") + 1])
    assert url.hostname == "127.0.0.1"
    assert url.port in {p["containerPort"] for p in vllm["ports"]}
    assert url.port == int(vllm["args"][vllm["args"].index("--port") + 1])
    resources = vllm["resources"]
    assert int(resources["requests"]["nvidia.com/gpu"]) >= 1
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]


def test_pod_monitor_scrapes_the_sidecar(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["sidecar"]
    templates = [pod for _, pod in pod_templates(docs)]
    assert pod_monitor_problems(one(docs, "PodMonitor"), templates) == []


def test_pod_monitor_check_catches(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["sidecar"]
    templates = [pod for _, pod in pod_templates(docs)]
    monitor = copy.deepcopy(one(docs, "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["port"] = "http"  # vLLM's, not the exporter's
    monitor["metadata"]["labels"]["release"] = "other"
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"] = []
    problems = " | ".join(pod_monitor_problems(monitor, templates))
    assert "port http" in problems and "release" in problems, problems
    assert "serving_pod" in problems, problems


# --- the generator --------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path, Path]:
    alerts, dashboards = write_placeholders(tmp_path)
    k8s = tmp_path / "k8s"
    shutil.copytree(K8S, k8s)
    return alerts, dashboards, k8s


def _args(workspace: tuple[Path, Path, Path]) -> list[str | Path]:
    alerts, dashboards, k8s = workspace
    return ["--alerts", alerts, "--dashboards", dashboards, "--k8s", k8s]


def _snapshot(k8s: Path) -> dict[str, bytes]:
    return {str(p.relative_to(k8s)): p.read_bytes() for p in sorted(k8s.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_and_check_agrees(workspace: tuple[Path, Path, Path]) -> None:
    k8s = workspace[2]
    first = run_generator(*_args(workspace))
    assert first.returncode == 0, first.stderr
    snapshot = _snapshot(k8s)
    second = run_generator(*_args(workspace))
    assert second.returncode == 0 and second.stdout == "", second.stdout
    assert _snapshot(k8s) == snapshot
    check = run_generator(*_args(workspace), "--check")
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
    rule = yaml.safe_load((k8s / "base" / "prometheusrule.yaml").read_text())
    assert rule["spec"]["groups"] == yaml.safe_load(PLACEHOLDER_ALERTS)["groups"]
    text = (k8s / "base" / "prometheusrule.yaml").read_text()
    assert "description: |" in text, "multi-line strings should stay readable blocks"


STALENESS: dict[str, tuple[Callable[[Path, Path, Path], Any], str]] = {
    "dashboard edited": (
        lambda a, d, k: (d / "models.json").write_text('{"uid":"m","title":"Changed"}'),
        "base/dashboards/models.yaml differs",
    ),
    "dashboard added": (
        lambda a, d, k: (d / "new.json").write_text("{}"),
        "base/dashboards/new.yaml is missing",
    ),
    "dashboard removed": (
        lambda a, d, k: (d / "models.json").unlink(),
        "base/dashboards/models.yaml is left over",
    ),
    "rule edited": (
        lambda a, d, k: a.write_text(PLACEHOLDER_ALERTS.replace("10m", "15m")),
        "base/prometheusrule.yaml differs",
    ),
    "generated file edited": (
        lambda a, d, k: (k / "base" / "prometheusrule.yaml").write_text("# hand edit\n"),
        "base/prometheusrule.yaml differs",
    ),
}


@pytest.mark.parametrize("case", sorted(STALENESS))
def test_check_reports_stale_files_in_one_line(
    workspace: tuple[Path, Path, Path], case: str
) -> None:
    assert run_generator(*_args(workspace)).returncode == 0
    change, expected = STALENESS[case]
    change(*workspace)
    check = run_generator(*_args(workspace), "--check")
    assert check.returncode == 1
    assert check.stderr.count("\n") == 1 and expected in check.stderr, check.stderr
    assert "run python3 deploy/generate_manifests.py" in check.stderr
    fixed = run_generator(*_args(workspace))
    assert fixed.returncode == 0 and fixed.stdout, fixed.stderr
    assert run_generator(*_args(workspace), "--check").returncode == 0


def test_generator_removes_dashboards_that_are_gone(workspace: tuple[Path, Path, Path]) -> None:
    _, dashboards, k8s = workspace
    assert run_generator(*_args(workspace)).returncode == 0
    (dashboards / "models.json").unlink()
    result = run_generator(*_args(workspace))
    assert "removed base/dashboards/models.yaml" in result.stdout
    assert not (k8s / "base" / "dashboards" / "models.yaml").exists()
    listed = yaml.safe_load((k8s / "base" / "dashboards" / "kustomization.yaml").read_text())
    assert listed["resources"] == ["llm-carbon-overview.yaml"]
    assert {d["kind"] for d in render(k8s / "base")} >= {"PrometheusRule", "ConfigMap"}


BAD_INPUTS: dict[str, tuple[Callable[[Path, Path], Any], str]] = {
    "no rule file": (lambda a, d: a.unlink(), "alerts.yaml: not found"),
    "no groups": (lambda a, d: a.write_text("groups: []\n"), "groups: want a non-empty list"),
    "not a rule file": (
        lambda a, d: a.write_text("apiVersion: v1\ngroups: []\n"),
        "exactly one top-level key",
    ),
    "invalid YAML": (lambda a, d: a.write_text("groups: [\n"), "invalid YAML"),
    "group without rules": (lambda a, d: a.write_text("groups: [{name: g}]\n"), "rules"),
    "invalid JSON": (lambda a, d: (d / "broken.json").write_text("{"), "invalid JSON"),
    "bad key": (lambda a, d: (d / "my dash.json").write_text("{}"), "not a valid ConfigMap key"),
    "name clash": (
        lambda a, d: (d / "overview.json").write_text("{}"),
        "ConfigMap name llm-carbon-dashboard-overview",
    ),
    "no dashboard directory": (lambda a, d: shutil.rmtree(d), "not a directory"),
    "too big for kubectl apply": (
        lambda a, d: (d / "huge.json").write_text(json.dumps({"description": "x" * 300_000})),
        "more than kubectl apply stores",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_generator_rejects_bad_inputs_in_one_line(
    workspace: tuple[Path, Path, Path], case: str
) -> None:
    alerts, dashboards, _ = workspace
    change, expected = BAD_INPUTS[case]
    change(alerts, dashboards)
    for extra in ([], ["--check"]):
        result = run_generator(*_args(workspace), *extra)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("generate_manifests: error: ")
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
