"""End to end against a real Prometheus: the simulated cluster's known power and token rates
must come out of the exporter's /metrics within 1%."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.simulation import SimCluster
from exporter.sources.dcgm_units import BASE_UNIT_ENERGY
from tests.harness import one, pick, wait_until
from tests.live import start_prometheus
from tests.simulated import FACILITY, NODE_INTENSITY, embodied_grams_per_hour, shared_gpu_cluster

pytestmark = pytest.mark.integration

# eGRID2023 rev2 CO2 rates (lb/MWh), converted here independently of the exporter's table.


def expected(cluster: SimCluster) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for pod in cluster.pods:
        row = out[(pod.namespace, pod.model)]
        row["power"] += pod.power_w
        row["prompt"] += pod.prompt_tps
        row["generation"] += pod.generation_tps
        row["gpus"] += len(pod.gpus)
        row["grams_per_second"] += pod.power_w * NODE_INTENSITY[pod.node] / 3.6e6
        row["requests"] += pod.requests_per_second
        row["computed"] += pod.prompt_computed_tps
        product = cluster.node(pod.node).product
        row["embodied_per_hour"] += embodied_grams_per_hour(product, len(pod.gpus))
    for row in out.values():
        row["tps"] = row["prompt"] + row["generation"]
        row["intensity"] = row["grams_per_second"] * 3.6e6 / row["power"]
    return out


def config_for(url: str, **exporter: object) -> dict:
    return {"prometheus": {"url": url}, "exporter": {"interval": "1s", **exporter}}


def test_figures_match_what_the_fixture_implies(prometheus, cluster, exporter_factory) -> None:
    exporter = exporter_factory(config_for(prometheus.url))
    samples = exporter.samples()
    want = expected(cluster)

    found = {(lab["namespace"], lab["model"]) for lab, _ in pick(samples, "llm_carbon_model_info")}
    assert found == set(want)
    for (namespace, model), row in want.items():
        key = {"namespace": namespace, "model": model}
        assert one(samples, "llm_carbon_power_watts", scope="gpu", **key) == pytest.approx(
            row["power"], rel=0.01
        )
        assert one(samples, "llm_carbon_gpus", **key) == row["gpus"]
        assert one(samples, "llm_carbon_tokens_per_second", phase="prompt", **key) == pytest.approx(
            row["prompt"], rel=0.01, abs=1e-9
        )
        assert one(
            samples, "llm_carbon_grid_intensity_grams_per_kwh", basis="location", **key
        ) == pytest.approx(row["intensity"], rel=0.01)
        if row["tps"] == 0:  # the idle model: per-token series absent, not 0
            assert one(samples, "llm_carbon_active", **key) == 0
            for name in (
                "llm_carbon_energy_joules_per_token",
                "llm_carbon_co2_grams_per_token",
                "llm_carbon_prompt_token_ratio",
            ):
                assert pick(samples, name, **key) == []
            continue
        assert one(samples, "llm_carbon_active", **key) == 1
        assert one(
            samples,
            "llm_carbon_energy_joules_per_token",
            scope="gpu",
            accounting="amortized",
            **key,
        ) == pytest.approx(row["power"] / row["tps"], rel=0.01)
        assert one(
            samples, "llm_carbon_co2_grams_per_token", scope="gpu", basis="location", **key
        ) == pytest.approx(row["grams_per_second"] / row["tps"], rel=0.01)
        assert one(samples, "llm_carbon_prompt_token_ratio", **key) == pytest.approx(
            row["prompt"] / row["tps"], rel=0.01
        )


def test_per_request_figures_and_sci_match_the_known_rates(
    prometheus, cluster, exporter_factory
) -> None:
    samples = exporter_factory(config_for(prometheus.url)).samples()
    for (namespace, model), row in expected(cluster).items():
        key = {"namespace": namespace, "model": model}
        embodied = one(samples, "llm_carbon_embodied_co2_grams_per_hour", **key)
        assert embodied == pytest.approx(row["embodied_per_hour"], rel=1e-6)
        if row["tps"] == 0:  # idle GPUs still age; nothing per request or per token
            for name in ("llm_carbon_energy_joules_per_request", "llm_carbon_sci_grams_per_token"):
                assert pick(samples, name, **key) == []
            continue
        assert one(samples, "llm_carbon_requests_per_second", **key) == pytest.approx(
            row["requests"], rel=0.01
        )
        joules = one(
            samples,
            "llm_carbon_energy_joules_per_request",
            scope="gpu",
            accounting="amortized",
            **key,
        )
        assert joules == pytest.approx(row["power"] / row["requests"], rel=0.015)
        assert one(
            samples, "llm_carbon_tokens_per_request", phase="prompt", **key
        ) == pytest.approx(row["prompt"] / row["requests"], rel=0.015)
        computed = one(samples, "llm_carbon_energy_joules_per_computed_token", **key)
        assert computed == pytest.approx(
            row["power"] * FACILITY / (row["computed"] + row["generation"]), rel=0.015
        )
        operational = FACILITY * row["grams_per_second"] / row["tps"]
        sci = one(samples, "llm_carbon_sci_grams_per_token", **key)
        assert sci == pytest.approx(
            operational + row["embodied_per_hour"] / 3600 / row["tps"], rel=0.03
        )
        co2_per_token = one(
            samples, "llm_carbon_co2_grams_per_token", scope="facility", basis="location", **key
        )
        assert sci > co2_per_token
    references = dict(
        (lab["reference"], v)
        for lab, v in pick(samples, "llm_carbon_reference_energy_wh_per_request")
    )
    assert references["google-gemini-median-prompt"] == 0.24


def test_context_labels_and_self_metrics(prometheus, exporter_factory) -> None:
    samples = exporter_factory(config_for(prometheus.url)).samples()

    def info(model: str) -> dict[str, str]:
        return pick(samples, "llm_carbon_model_info", model=model)[0][0]

    # One replica in California, one in Nebraska: both regions, power-weighted intensity.
    assert info("Qwen/Qwen3.5-397B-A17B-FP8")["regions"] == "CAMX,MROW"
    assert info("Qwen/Qwen3.5-397B-A17B-FP8")["nodes"] == (
        "gpu-a.sdsc.optiputer.net,hcc-nrp-b.unl.edu"
    )
    # The NYU node's dcgm-exporter has no energy counter: the power gauge stands in.
    assert info("MiniMaxAI/MiniMax-M2.5")["power_source"] == "power_gauge"
    assert info("zai-org/GLM-4.7-FP8")["power_source"] == "energy_counter"
    assert info("moonshotai/Kimi-K2.5")["gpu_type"] == "H200 SXM"
    assert info("MiniMaxAI/MiniMax-M2.5")["regions"] == "NYCW"

    assert one(samples, "llm_carbon_exporter_upstream_up", upstream="prometheus") == 1
    assert one(samples, "llm_carbon_exporter_models") == 6
    assert one(samples, "llm_carbon_exporter_pods_without_gpu_series") == 0
    assert one(samples, "llm_carbon_exporter_unmapped_nodes") == 0
    # The NRP envelope at the agentic preset: 40000/42000 x 3 + 2000/42000 x 1.5 = 2.93.
    mid = one(
        samples,
        "llm_carbon_commercial_joules_per_token",
        model="zai-org/GLM-4.7-FP8",
        baseline="nrp-envelope",
        bound="mid",
        mix="preset",
    )
    assert round(mid, 2) == 2.93
    observed = one(
        samples,
        "llm_carbon_commercial_joules_per_token",
        model="zai-org/GLM-4.7-FP8",
        baseline="nrp-envelope",
        bound="mid",
        mix="observed",
    )
    share = one(samples, "llm_carbon_prompt_token_ratio", model="zai-org/GLM-4.7-FP8")
    assert observed == pytest.approx(share * 3.0 + (1 - share) * 1.5)
    assert one(samples, "llm_carbon_preset_prompt_token_ratio", preset="agentic") == pytest.approx(
        40000 / 42000
    )


def test_report_prints_the_table_and_json(prometheus) -> None:
    table = subprocess.run(
        [sys.executable, "-m", "exporter", "report", "--prometheus-url", prometheus.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "zai-org/GLM-4.7-FP8" in table and "J/tok" in table
    glm_line = next(line for line in table.splitlines() if "GLM-4.7-FP8" in line)
    assert " 0.42 " in glm_line and " 2.93 " in glm_line

    document = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "report",
                "--format",
                "json",
                "--prometheus-url",
                prometheus.url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    kimi = next(m for m in document["models"] if m["model"] == "moonshotai/Kimi-K2.5")
    assert kimi["energy_joules_per_token"]["gpu/amortized"] == pytest.approx(928 / 158, rel=0.01)


def test_report_fails_cleanly_when_upstream_is_down() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "report", "--prometheus-url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "reason=connect" in result.stderr


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_prometheus_stopped_mid_run_then_restarted(
    tmp_path, endpoints, cluster, exporter_factory, kind: str
) -> None:
    prometheus = start_prometheus(tmp_path / "prom", endpoints, cluster, kind=kind)
    try:
        exporter = exporter_factory(config_for(prometheus.url, stale_after=3))
        assert len(pick(exporter.samples(), "llm_carbon_model_info")) == 6
        energy_before = one(
            exporter.samples(),
            "llm_carbon_energy_joules_total",
            scope="gpu",
            model="zai-org/GLM-4.7-FP8",
        )

        prometheus.stop()
        # Up goes to 0 at once, errors are counted by reason, and once the snapshot is stale
        # the per-model series are withdrawn, while the exporter keeps serving.
        wait_until(
            lambda: (
                one(exporter.samples(), "llm_carbon_exporter_upstream_up", upstream="prometheus")
                == 0
            ),
            10,
            "upstream_up 0",
        )
        wait_until(
            lambda: not pick(exporter.samples(), "llm_carbon_model_info"),
            15,
            "per-model series to be withdrawn",
        )
        samples = exporter.samples()
        assert (
            one(
                samples,
                "llm_carbon_exporter_upstream_errors_total",
                upstream="prometheus",
                reason="connect",
            )
            >= 1
        )
        assert one(samples, "llm_carbon_exporter_models") == 0
        assert pick(samples, "llm_carbon_energy_joules_total") == []
        assert requests.get(f"{exporter.url}/healthz", timeout=5).status_code == 200
        assert "upstream prometheus failed (reason=connect" in exporter.log()

        prometheus.start()
        wait_until(
            lambda: len(pick(exporter.samples(), "llm_carbon_model_info")) == 6,
            30,
            "per-model series to come back",
        )
        samples = exporter.samples()
        assert one(samples, "llm_carbon_exporter_upstream_up", upstream="prometheus") == 1
        # Back with the right figures, not just the right model count. The outage leaves a
        # gap inside the 5-minute window, and rate() extrapolates the energy counter from
        # the samples around it: within 3 %, not the 1 % of a gap-free window.
        want = expected(cluster)[("nrp-llm", "zai-org/GLM-4.7-FP8")]
        glm = {"model": "zai-org/GLM-4.7-FP8", "scope": "gpu"}
        assert one(samples, "llm_carbon_power_watts", **glm) == pytest.approx(
            want["power"], rel=0.03
        )
        assert one(
            samples, "llm_carbon_energy_joules_per_token", accounting="amortized", **glm
        ) == pytest.approx(want["power"] / want["tps"], rel=0.03)
        # Counters never go backwards within a process, across the outage too.
        assert (
            one(samples, "llm_carbon_energy_joules_total", scope="gpu", model="zai-org/GLM-4.7-FP8")
            >= energy_before
        )
        assert "recovered after" in exporter.log()
        assert exporter.process.poll() is None
    finally:
        prometheus.stop()


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_a_dcgm_exporter_rollout_inside_the_window_keeps_power_whole(
    tmp_path, endpoints, cluster, exporter_factory, kind: str
) -> None:
    # Every dcgm-exporter pod was replaced 150 s ago: each GPU's energy counter is stored as
    # two series (old and new scrape address), each covering half of the 5-minute window.
    # Their rates add up to the GPU's power; the larger of them alone would be half of it.
    prometheus = start_prometheus(
        tmp_path / "prom", endpoints, cluster, kind=kind, dcgm_restarted_ago=150
    )
    try:
        assert (
            prometheus.query("count(count by (instance) (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION))")[
                0
            ]["value"][1]
            == "2"
        )
        samples = exporter_factory(config_for(prometheus.url)).samples()
        for (namespace, model), row in expected(cluster).items():
            key = {"namespace": namespace, "model": model}
            assert one(samples, "llm_carbon_power_watts", scope="gpu", **key) == pytest.approx(
                row["power"], rel=0.02
            ), model
            assert one(samples, "llm_carbon_gpus", **key) == row["gpus"]
    finally:
        prometheus.stop()


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
@pytest.mark.parametrize(
    "history",
    [
        {"vllm_moved_ago": 150},
        {"scraped_twice": ("vllm",)},
        {"scraped_twice": ("dcgm",)},
        {"scraped_twice": ("vllm", "dcgm")},
    ],
    ids=[
        "statefulset-pod-moved",
        "vllm-scraped-by-two-jobs",
        "dcgm-scraped-by-two-jobs",
        "both-scraped-by-two-jobs",
    ],
)
def test_series_split_or_copied_count_once(
    tmp_path, endpoints, cluster, exporter_factory, kind: str, history: dict
) -> None:
    # Every vLLM pod moved 150 s ago under its own name (a StatefulSet): each token counter is
    # two series (old and new address), each covering half of the 5-minute window, and
    # VictoriaMetrics' rate() would give each its full rate. Or every vLLM or dcgm-exporter
    # page is scraped by two jobs: every series twice. Either way each model's tokens, GPUs
    # and power count once.
    prometheus = start_prometheus(tmp_path / "prom", endpoints, cluster, kind=kind, **history)
    try:
        samples = exporter_factory(config_for(prometheus.url)).samples()
        for (namespace, model), row in expected(cluster).items():
            key = {"namespace": namespace, "model": model}
            tps = sum(v for _, v in pick(samples, "llm_carbon_tokens_per_second", **key))
            assert tps == pytest.approx(row["tps"], rel=0.03), model
            assert one(samples, "llm_carbon_gpus", **key) == row["gpus"], model
            assert one(samples, "llm_carbon_power_watts", scope="gpu", **key) == pytest.approx(
                row["power"], rel=0.02
            ), model
            if row["tps"]:
                joules = one(
                    samples,
                    "llm_carbon_energy_joules_per_token",
                    scope="gpu",
                    accounting="amortized",
                    **key,
                )
                assert joules == pytest.approx(row["power"] / row["tps"], rel=0.04), model
    finally:
        prometheus.stop()


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
@pytest.mark.parametrize("mig", [0, 3])
def test_replicas_on_one_gpu_count_it_once(tmp_path, exporter_factory, mig: int, kind: str) -> None:
    # Pods a and b are replicas of m/a on GPU 0: time-sliced copies, each pod's DCGM series
    # carrying the GPU's whole power, which the model must draw once; or MIG instances (a
    # holds 2 of the GPU's 7 slices, b 1), charged their share.
    cluster = shared_gpu_cluster(mig, b_serves="m/a")
    endpoints = SimulatedEndpoints(cluster).start()
    server = start_prometheus(tmp_path / "prometheus", endpoints, cluster, kind=kind)
    try:
        samples = exporter_factory(config_for(server.url)).samples()
    finally:
        server.stop()
        endpoints.stop()
    a, c = {"namespace": "ns", "model": "m/a"}, {"namespace": "ns", "model": "m/c"}
    share = 3 / 7 if mig else 1.0
    assert one(samples, "llm_carbon_gpus", **a) == 1
    power = one(samples, "llm_carbon_power_watts", scope="gpu", **a)
    assert power == pytest.approx(300 * share, rel=0.01)
    assert one(samples, "llm_carbon_tokens_per_second", phase="prompt", **a) == pytest.approx(
        150, rel=0.01
    )
    attribution = pick(samples, "llm_carbon_model_info", **a)[0][0]["attribution"]
    assert attribution == ("mig_share" if mig else "exclusive")
    power_c = one(samples, "llm_carbon_power_watts", scope="gpu", **c)
    assert power_c == pytest.approx(150 * share, rel=0.01)


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_mig_power_on_the_gpu_row_is_split_by_instance(tmp_path, exporter_factory, kind) -> None:
    """dcgm-exporter with GPU rows selected too: the power is on the GPU's own row (no pod
    labels, no instance id), the pods on the instance rows. Each pod gets its slices' share
    of the GPU's power, where before it got no power at all."""
    cluster = shared_gpu_cluster(3, power_on_gpu_row=True)
    endpoints = SimulatedEndpoints(cluster).start()
    server = start_prometheus(tmp_path / "prometheus", endpoints, cluster, kind=kind)
    try:
        samples = exporter_factory(config_for(server.url)).samples()
    finally:
        server.stop()
        endpoints.stop()
    for model, expected in (("m/a", 300 * 2 / 7), ("m/b", 300 / 7), ("m/c", 150 * 3 / 7)):
        labels = {"namespace": "ns", "model": model}
        assert one(samples, "llm_carbon_power_watts", scope="gpu", **labels) == pytest.approx(
            expected, rel=0.01
        )
        assert pick(samples, "llm_carbon_model_info", **labels)[0][0]["attribution"] == (
            "mig_share"
        )


def test_a_base_unit_energy_counter_in_joules_reads_the_same_watts(
    tmp_path, exporter_factory
) -> None:
    """dcgm-exporter 4.9 (DCGM 4.7) exports energy in joules under a name that says so
    (DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL): configured, the query reads it as joules."""
    cluster = shared_gpu_cluster()
    cluster = dataclasses.replace(
        cluster, nodes=tuple(dataclasses.replace(n, base_units=True) for n in cluster.nodes)
    )
    endpoints = SimulatedEndpoints(cluster).start()
    server = start_prometheus(tmp_path / "prometheus", endpoints, cluster)
    try:
        config = config_for(server.url)
        config["upstream"] = {"metrics": {"gpu_energy": BASE_UNIT_ENERGY}}
        samples = exporter_factory(config).samples()
    finally:
        server.stop()
        endpoints.stop()
    c = {"namespace": "ns", "model": "m/c"}
    assert one(samples, "llm_carbon_power_watts", scope="gpu", **c) == pytest.approx(150, rel=0.01)
    assert pick(samples, "llm_carbon_model_info", **c)[0][0]["power_source"] == "energy_counter"


class EchoingUpstream(ThreadingHTTPServer):
    """The worst upstream: answers every query with HTTP 500 and a body that repeats the
    request's headers, credentials included."""

    daemon_threads = True

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                # Credentials first, so that a short error snippet would still show them.
                headers = sorted(handler.headers.items(), key=lambda kv: kv[0] != "Authorization")
                body = "".join(f"{k}: {v}\n" for k, v in headers).encode()
                handler.send_response(500)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            do_POST = do_GET

            def log_message(handler, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_credentials_never_reach_logs_metrics_or_pages(
    tmp_path, exporter_factory, auth: str
) -> None:
    secret = "s3cr3t-" + auth + "-value"
    (tmp_path / "secret").write_text(secret + "\n")
    prometheus: dict = {"headers": {"X-Scope-OrgID": "tenant-a"}}
    if auth == "bearer":
        prometheus["bearer_token_file"] = str(tmp_path / "secret")
    else:
        prometheus["basic_auth"] = {"username": "reader", "password_file": str(tmp_path / "secret")}
    upstream = EchoingUpstream()
    try:
        url = f"http://127.0.0.1:{upstream.server_address[1]}"
        exporter = exporter_factory(
            {"prometheus": {"url": url, **prometheus}, "exporter": {"interval": "1s"}},
            wait_ready=False,
        )
        wait_until(
            lambda: "reason=http_status" in exporter.log() and exporter.log().count("\n") >= 1,
            20,
            "the failed cycle's log line",
        )
        time.sleep(2.5)  # a few more cycles, each echoing the credentials back
        seen = {
            "log": exporter.log(),
            "/metrics": exporter.metrics_text(),
            "/": requests.get(f"{exporter.url}/", timeout=5).text,
        }
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert "Authorization: " in seen["log"]  # the echo reached the log line, scrubbed
    for where, text in seen.items():
        assert secret not in text, f"the {auth} credential leaked into {where}"
        assert base64.b64encode(f"reader:{secret}".encode()).decode() not in text, where
