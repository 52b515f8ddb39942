"""`llm-carbon-exporter diagnose` as an operator runs it, against a real Prometheus (and
VictoriaMetrics) scraping simulated clusters, an empty Prometheus, an upstream that wants
credentials, and in sidecar mode against the pages themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.simulation import SimCluster, targets
from tests.harness import PrometheusServer, StaticPages, VictoriaMetricsServer, free_port
from tests.live import start_prometheus

pytestmark = pytest.mark.integration


def diagnose(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "diagnose", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def lines(result: subprocess.CompletedProcess, mark: str, name: str) -> list[str]:
    """The checklist lines of one check with one mark."""
    return [line for line in result.stdout.splitlines() if line.startswith(f"{mark} {name} ")]


def test_a_healthy_cluster_exits_0_and_names_every_served_model(prometheus, cluster) -> None:
    result = diagnose("--prometheus-url", prometheus.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "" and "Traceback" not in result.stdout
    served = {(pod.namespace, pod.model) for pod in cluster.pods}
    models = lines(result, "✓", "model    ")
    assert len(models) == len(served)
    for namespace, model in served:
        assert any(line.split(": ", 1)[0].endswith(f"{model} in {namespace}") for line in models)
    api = "VictoriaMetrics" if isinstance(prometheus, VictoriaMetricsServer) else "Prometheus 2."
    assert f"answers queries: {api}" in lines(result, "✓", "upstream ")[0]
    assert not [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert "Figures can be computed for every served model (6)." in result.stdout


def test_json_for_scripts_says_the_same(prometheus) -> None:
    result = diagnose("--prometheus-url", prometheus.url, "--format", "json")
    document = json.loads(result.stdout)
    assert document["exit_status"] == result.returncode == 0
    assert {m["model"] for m in document["models"]} >= {"zai-org/GLM-4.7-FP8"}
    assert all(m["figures"] for m in document["models"])
    kimi = next(m for m in document["models"] if m["model"] == "moonshotai/Kimi-K2.5")
    assert kimi["gpus"] == 8 and kimi["regions"] == ["CAMX"] and kimi["model_in_table"]


def test_an_empty_prometheus_exits_1_naming_the_missing_series(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path, "127.0.0.1:1", []).start()
    try:
        result = diagnose("--prometheus-url", server.url)
    finally:
        server.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert [line.split()[1] for line in failed] == ["dcgm", "tokens", "models"]
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION or DCGM_FI_DEV_POWER_USAGE" in failed[0]
    assert "vllm:prompt_tokens_total" in failed[1]
    assert len(result.stdout.splitlines()) <= 16  # a few lines, each with its fix and link
    assert result.stdout.count("see: docs/troubleshooting.md#") == 3


@pytest.fixture(scope="module")
def unmapped(tmp_path_factory, cluster: SimCluster) -> Iterator[PrometheusServer]:
    """The cluster with dcgm-exporter's Kubernetes mapping off: a scrape leaves only
    dcgm-exporter's own pod on every GPU series."""
    mapped_off = replace(cluster, nodes=tuple(replace(n, pod_mapping=False) for n in cluster.nodes))
    endpoints = SimulatedEndpoints(mapped_off).start()
    server = start_prometheus(tmp_path_factory.mktemp("unmapped"), endpoints, mapped_off)
    yield server
    server.stop()
    endpoints.stop()


def test_gpus_labelled_with_dcgm_exporters_own_pod_name_that_cause(unmapped, cluster) -> None:
    result = diagnose("--prometheus-url", unmapped.url)
    assert result.returncode == 1, result.stdout + result.stderr
    (cause,) = lines(result, "✗", "gpu pods ")
    assert "every GPU series carries dcgm-exporter's own pod" in cause
    exporters = {t.labels["pod"] for t in targets(cluster) if t.kind == "dcgm"}
    assert all(f"gpu-operator/{pod} on " in result.stdout for pod in exporters)
    assert "honorLabels: true" in result.stdout
    assert "#gpu-series-without-the-workloads-pod" in result.stdout
    assert len(lines(result, "✗", "model    ")) == len({p.model for p in cluster.pods})


def test_a_401_says_which_credentials_to_give() -> None:
    # An authenticating proxy in front of nothing: 401 to every request.
    server = StaticPages({}, (401, '{"status":"error","errorType":"unauthorized","error":"no"}'))
    try:
        result = diagnose("--prometheus-url", server.base)
    finally:
        server.close()
    assert result.returncode == 1
    (line,) = lines(result, "✗", "upstream ")
    assert "HTTP 401" in line and "bearer_token_file" in result.stdout
    assert "#401-or-403-from-the-upstream" in result.stdout


def test_sidecar_mode_reads_the_pages_twice_and_names_its_model(
    endpoints, cluster, tmp_path: Path
) -> None:
    pod = cluster.pods[0]
    pages = {t.key: f"http://{endpoints.address}{t.path}" for t in targets(cluster)}
    config = tmp_path / "sidecar.yaml"
    config.write_text("exporter:\n  interval: 1s\n")  # the two reads a second apart
    args = ["--config", str(config), "--vllm-url", pages[pod.name], "--dcgm-url", pages[pod.node]]
    result = diagnose(*args, "--pod", pod.name, "--namespace", pod.namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    (model,) = lines(result, "✓", "model    ")
    assert f"{pod.model} in {pod.namespace}: 1 pod, {len(pod.gpus)} GPUs" in model
    assert "vllm: 1 of 1 page read; dcgm: 1 of 1 page read" in result.stdout
    # Another pod's name: its GPUs are not this sidecar's, so its power is withheld, and the
    # fix names the pod the dcgm-exporter page labels them with.
    other = diagnose(*args, "--pod", "someone-else", "--namespace", pod.namespace)
    assert other.returncode == 1 and lines(other, "✗", "joins    ")
    assert lines(other, "✓", "gpu pods ")
    (fix,) = [line.strip() for line in other.stdout.splitlines() if "probably names" in line]
    assert f"{pod.namespace}/{pod.name}" in fix and f"not with {pod.namespace}/someone-else" in fix
    assert "--pod" in fix and "POD_NAME" in fix


def fixes(result: subprocess.CompletedProcess) -> str:
    return "\n".join(line for line in result.stdout.splitlines() if line.strip().startswith("fix:"))


def test_sidecar_fixes_are_about_its_pages(endpoints, cluster, tmp_path: Path) -> None:
    """Pages that cannot be read or hold the wrong series: each fix names the page's flag,
    never a query API's settings (a base URL, TLS, selectors, a ServiceMonitor)."""
    pod, neighbour = cluster.pods[0], cluster.pods[1]
    pages = {t.key: f"http://{endpoints.address}{t.path}" for t in targets(cluster)}
    config = tmp_path / "sidecar.yaml"
    config.write_text("exporter:\n  interval: 1s\n")

    def sidecar(vllm: str, dcgm: str) -> subprocess.CompletedProcess:
        args = ["--config", str(config), "--vllm-url", vllm, "--dcgm-url", dcgm]
        return diagnose(*args, "--pod", pod.name, "--namespace", pod.namespace)

    nothing_there = f"http://127.0.0.1:{free_port()}/metrics"
    refused = sidecar(nothing_there, pages[pod.node])
    assert "cannot connect" in lines(refused, "✗", "upstream ")[0]
    assert "--vllm-url" in fixes(refused) and "ca_file" not in refused.stdout
    not_found = sidecar(pages[pod.name] + "x", pages[pod.node])
    assert "HTTP 404" in lines(not_found, "✗", "upstream ")[0]
    assert "--vllm-url" in fixes(not_found) and "/api/v1/query" not in not_found.stdout
    no_dcgm = sidecar(pages[pod.name], pages[neighbour.name])  # a vLLM page as dcgm's
    assert lines(no_dcgm, "✗", "dcgm     ") and "--dcgm-url" in fixes(no_dcgm)
    assert "ServiceMonitor" not in no_dcgm.stdout and "gpu_selector" not in no_dcgm.stdout
    no_tokens = sidecar(pages[pod.node], pages[pod.node])  # dcgm's page as the server's
    assert lines(no_tokens, "✗", "tokens   ") and "--vllm-url" in fixes(no_tokens)
    assert "PodMonitor" not in no_tokens.stdout and "token_selector" not in no_tokens.stdout
    for result in (refused, not_found, no_dcgm, no_tokens):
        assert result.returncode == 1 and result.stderr == "", result.stdout + result.stderr
