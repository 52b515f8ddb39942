"""Every dashboard panel query returns data from a real Prometheus that scrapes the exporter,
which itself reads that Prometheus (fed by the simulated cluster, with backfilled history).
Variables are substituted as Grafana would; interval macros get short durations with samples.
The alert expressions are checked on the same real series.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import yaml

from exporter.config import merge
from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.grid import SimulatedGrid
from exporter.demo.run import demo_config
from exporter.demo.simulation import SimCluster, targets
from tests.dashboards_util import (
    alert_rules,
    grafana_regex_escape,
    load_dashboards,
    queried_panels,
    scale_integrals,
    substitute,
)
from tests.harness import ExporterProcess, PrometheusServer, running, wait_until
from tests.live import HISTORY_SECONDS, SCRAPE_SECONDS
from tests.simulated import NODE_INTENSITY, openmetrics_history

pytestmark = pytest.mark.integration

EXPORTER_JOB = "llm-carbon-exporter"
ACTIVE = {"namespace": "nrp-llm", "model": "zai-org/GLM-4.7-FP8"}
IDLE = {"namespace": "nrp-llm", "model": "meta-llama/Llama-3.1-8B-Instruct"}
ALL = {"namespace": ".*", "model": ".*"}
# Exporter scrapes (1 s apart) needed inside the 30 s that $__range stands for.
SETTLED_SCRAPES = 12
# The totals over the range integrate 5-minute steps; the exporter has run for seconds here.
STEP_SECONDS = 5

BOARDS = load_dashboards()


@dataclass(frozen=True)
class Evaluated:
    panel: dict[str, Any]
    target: dict[str, Any]
    expr: str
    series: list[dict[str, Any]]

    @property
    def where(self) -> str:
        return f"{self.panel['title']} [{self.target['refId']}]: {self.expr}"


def add_exporter_job(
    prometheus: PrometheusServer, exporters: dict[ExporterProcess, dict[str, str]]
) -> None:
    """Scrape the exporters the way the ServiceMonitor (or the sidecars' PodMonitor) does:
    target labels of the exporter's pod, honor_labels so the models' namespace and model
    labels win."""
    config = yaml.safe_load(prometheus.config_path.read_text())
    config["scrape_configs"].append(
        {
            "job_name": EXPORTER_JOB,
            "honor_labels": True,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [
                {"targets": [f"127.0.0.1:{exporter.port}"], "labels": labels}
                for exporter, labels in exporters.items()
            ],
        }
    )
    prometheus.config_path.write_text(yaml.safe_dump(config))


def settled(prometheus: PrometheusServer) -> bool:
    scrapes = prometheus.query("count_over_time(llm_carbon_exporter_build_info[30s])")
    counters = prometheus.query("count_over_time(llm_carbon_co2_grams_total[30s])")
    return bool(
        scrapes
        and float(scrapes[0]["value"][1]) >= SETTLED_SCRAPES
        and counters
        and min(float(s["value"][1]) for s in counters) >= SETTLED_SCRAPES - 2
    )


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, endpoints: SimulatedEndpoints, cluster: SimCluster
) -> Iterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("dashboards")
    now = time.time()
    start = now - HISTORY_SECONDS
    history = openmetrics_history(
        cluster, endpoints.address, start - start % SCRAPE_SECONDS, now - 1, SCRAPE_SECONDS
    )
    server = PrometheusServer(
        workdir,
        endpoints.address,
        targets(cluster),
        backfill=history,
        scrape_interval=SCRAPE_SECONDS,
    )
    grid = SimulatedGrid().start()  # live location and marginal data, so those panels have some
    exporter = ExporterProcess(
        workdir,
        {
            "prometheus": {"url": server.url},
            "exporter": {"interval": "1s"},
            "grid": {"live": grid.live()},
        },
    )
    add_exporter_job(
        server, {exporter: {"namespace": "monitoring", "pod": "llm-carbon-exporter-0"}}
    )
    try:
        with running(server, exporter):
            server.start()
            exporter.start()
            wait_until(lambda: settled(server), 45, "Prometheus to hold 30 s of exporter series")
            yield server
    finally:
        grid.stop()


def query(prometheus: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    response = requests.get(f"{prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    return body["data"]["result"]


def evaluate(
    prometheus: PrometheusServer, board: str, variables: dict[str, str]
) -> list[Evaluated]:
    return [
        Evaluated(panel, target, expr, query(prometheus, expr))
        for panel in queried_panels(BOARDS[board])
        for target in panel["targets"]
        for expr in [
            substitute(
                scale_integrals(target["expr"], STEP_SECONDS), {"datasource": "", **variables}
            )
        ]
    ]


def assert_all_return_data(results: list[Evaluated]) -> None:
    empty = [r.where for r in results if not r.series]
    assert results
    assert not empty, "panel queries without data:\n" + "\n".join(empty)


def test_overview_panels_return_data_for_all_models(prometheus: PrometheusServer) -> None:
    assert_all_return_data(evaluate(prometheus, "overview.json", ALL))


def test_overview_panels_return_data_for_one_model(prometheus: PrometheusServer) -> None:
    # Multi-value variables reach the query regex-escaped ("GLM-4\\.7").
    chosen = {key: grafana_regex_escape(value) for key, value in ACTIVE.items()}
    results = evaluate(prometheus, "overview.json", chosen)
    assert_all_return_data(results)
    for result in results:
        for series in result.series:
            assert series["metric"].get("model", ACTIVE["model"]) == ACTIVE["model"], result.where


def test_model_detail_panels_return_data_for_an_active_model(
    prometheus: PrometheusServer,
) -> None:
    results = evaluate(prometheus, "model-detail.json", ACTIVE)
    assert_all_return_data(results)
    for result in results:
        assert all(
            s["metric"].get("model", ACTIVE["model"]) == ACTIVE["model"] for s in result.series
        ), result.where


def test_model_detail_for_an_idle_model(prometheus: PrometheusServer) -> None:
    """An idle model still has power, idle floor and CO2 per hour; its per-token panels are
    empty (absent, not 0) and it reads underutilized."""
    results = {
        (r.panel["title"], r.target["refId"]): r.series
        for r in evaluate(prometheus, "model-detail.json", IDLE)
    }
    assert results[("GPU power (measured)", "A")]
    assert results[("GPU power and the idle floor", "C")]
    assert results[("CO₂ emission rate", "A")]
    assert not results[("Energy per token (facility, amortized)", "A")]
    assert not results[("CO₂ per token (facility, location basis)", "A")]
    assert float(results[("Underutilized", "A")][0]["value"][1]) == 1


def test_legends_name_labels_the_series_carry(prometheus: PrometheusServer) -> None:
    for board, variables in (("overview.json", ALL), ("model-detail.json", ACTIVE)):
        for result in evaluate(prometheus, board, variables):
            wanted = re.findall(r"\{\{\s*(\w+)\s*\}\}", result.target.get("legendFormat", ""))
            for series in result.series:
                missing = [label for label in wanted if label not in series["metric"]]
                assert not missing, f"{result.where}: legend needs {missing}"


def test_table_frames_share_their_labels(prometheus: PrometheusServer) -> None:
    """Grafana's merge transformation lines rows up by their label columns: every query of a
    table must return the same label names, and no duplicate rows."""
    for board, variables in (("overview.json", ALL), ("model-detail.json", ACTIVE)):
        by_panel: dict[str, list[Evaluated]] = {}
        for result in evaluate(prometheus, board, variables):
            if result.panel["type"] == "table":
                by_panel.setdefault(result.panel["title"], []).append(result)
        assert by_panel
        for title, results in by_panel.items():
            keys = {frozenset(s["metric"]) for r in results for s in r.series}
            assert len(keys) == 1, f"{title}: label sets differ: {keys}"
            for result in results:
                rows = [tuple(sorted(s["metric"].items())) for s in result.series]
                assert len(rows) == len(set(rows)), result.where


def _values(results: list[Evaluated], title: str, ref: str = "A") -> dict[str, float]:
    found = next(r for r in results if r.panel["title"] == title and r.target["refId"] == ref)
    return {s["metric"].get("model", ""): float(s["value"][1]) for s in found.series}


def test_figures_agree_with_the_simulated_cluster(
    prometheus: PrometheusServer, cluster: SimCluster
) -> None:
    overview = evaluate(prometheus, "overview.json", ALL)
    fleet = _values(overview, "GPU power (measured)")[""]
    assert fleet == pytest.approx(sum(pod.power_w for pod in cluster.pods), rel=0.01)
    served = _values(overview, "Models: served, active, underutilized")[""]
    assert served == len({(pod.namespace, pod.model) for pod in cluster.pods})
    # The per-model table's commercial columns are the scale-matched baseline (GLM-4.7 is
    # large-open) at the agentic preset, and the preset share is agentic's 40000/42000.
    share = 40000 / 42000
    assert _values(overview, "Per-model figures", "H")[ACTIVE["model"]] == pytest.approx(
        share * 0.1 + (1 - share) * 0.6
    )
    assert _values(overview, "Per-model figures", "M")[ACTIVE["model"]] == pytest.approx(share)
    detail = evaluate(prometheus, "model-detail.json", ACTIVE)
    glm = sum(pod.power_w for pod in cluster.pods if pod.model == ACTIVE["model"])
    assert _values(detail, "GPU power (measured)")[""] == pytest.approx(glm, rel=0.01)


def test_variable_queries(prometheus: PrometheusServer, cluster: SimCluster) -> None:
    """label_values(llm_carbon_model_info, ...) as Grafana runs it: the models' namespaces,
    not the exporter's own (which honor_labels keeps off the per-model series)."""

    def values(label: str, match: str) -> set[str]:
        response = requests.get(
            f"{prometheus.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10
        )
        response.raise_for_status()
        return set(response.json()["data"])

    assert values("namespace", "llm_carbon_model_info") == {p.namespace for p in cluster.pods}
    assert values("model", 'llm_carbon_model_info{namespace="nrp-llm"}') == {
        p.model for p in cluster.pods if p.namespace == "nrp-llm"
    }


def test_alert_expressions_on_the_exporters_real_series(prometheus: PrometheusServer) -> None:
    """The rule expressions evaluate on what the exporter really exposes (all info labels,
    target labels, global series): the idle model draws power without tokens, the review's
    underused Kimi-K2.5 is underutilized, GLM-4.7 is neither, the exporter is healthy."""
    current = {
        rule["alert"]: {s["metric"].get("model", "") for s in query(prometheus, rule["expr"])}
        for rule in alert_rules()
    }
    assert current.pop("LLMCarbonGPUPowerWithoutTokens") == {IDLE["model"]}
    underutilized = current.pop("LLMCarbonGPUsUnderutilized")
    assert "moonshotai/Kimi-K2.5" in underutilized
    assert not underutilized & {IDLE["model"], ACTIVE["model"]}
    # The simulated traffic is agentic-like, the exporter reads its upstream, finds models
    # and joins every pod to its GPUs.
    assert current == {name: set() for name in current}


QWEN = "Qwen/Qwen3.5-397B-A17B-FP8"  # two replicas, in California and Nebraska


def panel_target_list(board: str, title: str) -> list[dict[str, Any]]:
    panel = next(p for p in queried_panels(BOARDS[board]) if p["title"] == title)
    return panel["targets"]


def panel_exprs(board: str, title: str) -> list[str]:
    return [t["expr"] for t in panel_target_list(board, title)]


def test_sidecar_replicas_add_up_and_stay_apart(
    tmp_path, endpoints: SimulatedEndpoints, cluster: SimCluster
) -> None:
    """One sidecar per replica, each seeing only its own pod: fleet totals add the replicas
    (not the largest of them), and a model's figures are its replicas' added up: one row per
    model, J/token and gCO2/token as totals over totals, grid intensity power-weighted."""
    replicas = [p for p in cluster.pods if p.model == QWEN]
    assert len(replicas) == 2
    document = demo_config(cluster, endpoints.address, "127.0.0.1:0")
    server = PrometheusServer(tmp_path, endpoints.address, [], scrape_interval=1)
    sidecars = {}
    for pod in replicas:
        direct = document["direct"]
        config = merge(
            document,
            {
                "direct": {
                    **direct,
                    "pods": [p for p in direct["pods"] if p["pod"] == pod.name],
                    "window": "10s",
                },
                "exporter": {"interval": "1s"},
            },
        )
        del config["exporter"]["listen"]  # the process picks its own free port
        # The PodMonitor's relabeling: the inference pod's name as `serving_pod`.
        sidecars[ExporterProcess(tmp_path, config)] = {"pod": pod.name, "serving_pod": pod.name}
    add_exporter_job(server, sidecars)
    with running(server, *sidecars):
        server.start()
        for sidecar in sidecars:
            sidecar.start()
        server.wait_for_series('llm_carbon_power_watts{scope="gpu"}', 2)
        (fleet,) = panel_exprs("overview.json", "GPU power (measured)")
        fleet = substitute(fleet, {"datasource": "", **ALL})
        total = sum(p.power_w for p in replicas)
        wait_until(
            lambda: abs(float(query(server, fleet)[0]["value"][1]) - total) < 0.02 * total,
            30,
            f"fleet GPU power to add both replicas' {total} W",
        )
        detail = {"namespace": replicas[0].namespace, "model": QWEN}
        # Every query of both boards evaluates (no many-to-many match across replicas).
        for board, variables in (("overview.json", ALL), ("model-detail.json", detail)):
            for panel in queried_panels(BOARDS[board]):
                for target in panel["targets"]:
                    expr = scale_integrals(target["expr"], STEP_SECONDS)
                    query(server, substitute(expr, {"datasource": "", **variables}))
        (power,) = panel_exprs("model-detail.json", "GPU power (measured)")
        got = float(query(server, substitute(power, {"datasource": "", **detail}))[0]["value"][1])
        assert got == pytest.approx(total, rel=0.02)
        table = dict(
            zip(
                (t["refId"] for t in panel_target_list("overview.json", "Per-model figures")),
                panel_exprs("overview.json", "Per-model figures"),
                strict=True,
            )
        )

        def model_row(expr: str) -> float:
            rows = query(server, substitute(expr, {"datasource": "", **ALL}))
            assert [row["metric"]["model"] for row in rows] == [QWEN], rows
            return float(rows[0]["value"][1])

        tps = sum(p.prompt_tps + p.generation_tps for p in replicas)
        facility = 1.2 * 1.4
        grams_per_second = sum(p.power_w * NODE_INTENSITY[p.node] / 3.6e6 for p in replicas)
        assert model_row(table["A"]) == sum(len(p.gpus) for p in replicas)
        assert model_row(table["C"]) == pytest.approx(tps, rel=0.03)
        assert model_row(table["D"]) == pytest.approx(total * facility / tps, rel=0.03)
        assert model_row(table["F"]) == pytest.approx(grams_per_second * facility / tps, rel=0.03)
        assert model_row(table["L"]) == pytest.approx(
            sum(p.prompt_tps for p in replicas) / tps, rel=0.03
        )
        (intensity,) = panel_exprs("model-detail.json", "Grid intensity")
        rows = query(server, substitute(intensity, {"datasource": "", **detail}))
        assert [row["metric"]["basis"] for row in rows] == ["location"]
        assert float(rows[0]["value"][1]) == pytest.approx(
            grams_per_second * 3.6e6 / total, rel=0.03
        )
