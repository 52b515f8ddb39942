"""Sharding: exporters that each read one set of namespaces (`prometheus.namespaces`) give,
in the overview dashboard, the same per-model rows as one exporter over everything. Real
Prometheus servers throughout: one holds the simulated cluster (with backfilled history) and
scrapes the shards; another scrapes the single exporter."""

from __future__ import annotations

import time
from typing import Any

import pytest

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.simulation import SimCluster, targets
from tests.dashboards_util import load_dashboards, queried_panels, substitute
from tests.harness import ExporterProcess, PrometheusServer, running, wait_until
from tests.integration.test_dashboards_live import add_exporter_job, query
from tests.live import HISTORY_SECONDS, SCRAPE_SECONDS
from tests.simulated import openmetrics_history

pytestmark = pytest.mark.integration

ALL = {"datasource": "", "namespace": ".*", "model": ".*"}
TABLE = "Per-model figures"


def table_rows(prometheus: PrometheusServer) -> dict[str, dict[tuple[str, str], float]]:
    """The overview's per-model table as Grafana would ask for it: refId -> (namespace,
    model) -> value."""
    board = load_dashboards()["overview.json"]
    (panel,) = [p for p in queried_panels(board) if p["title"] == TABLE]
    out: dict[str, dict[tuple[str, str], float]] = {}
    for target in panel["targets"]:
        rows = query(prometheus, substitute(target["expr"], ALL))
        keyed = {(r["metric"].get("namespace", ""), r["metric"]["model"]): r for r in rows}
        assert len(keyed) == len(rows), f"{target['refId']}: one row per model, got {rows}"
        out[target["refId"]] = {key: float(r["value"][1]) for key, r in keyed.items()}
    return out


def models_on(prometheus: PrometheusServer) -> set[tuple[str, str]]:
    rows = query(prometheus, 'group by (namespace, model) (llm_carbon_power_watts{scope="gpu"})')
    return {(r["metric"]["namespace"], r["metric"]["model"]) for r in rows}


def test_disjoint_namespace_shards_give_the_same_rows_as_one_exporter(
    tmp_path, endpoints: SimulatedEndpoints, cluster: SimCluster
) -> None:
    namespaces = sorted({p.namespace for p in cluster.pods})
    assert len(namespaces) >= 2, "the simulated cluster needs two namespaces to shard"
    now = time.time()
    start = now - HISTORY_SECONDS
    history = openmetrics_history(
        cluster, endpoints.address, start - start % SCRAPE_SECONDS, now - 1, SCRAPE_SECONDS
    )
    upstream = PrometheusServer(
        tmp_path / "upstream",
        endpoints.address,
        targets(cluster),
        backfill=history,
        scrape_interval=SCRAPE_SECONDS,
    )
    single = PrometheusServer(tmp_path / "single", endpoints.address, [], scrape_interval=1)

    def exporter(name: str, shard: str) -> ExporterProcess:
        (tmp_path / name).mkdir()
        settings: dict[str, Any] = {"url": upstream.url, "namespaces": shard}
        return ExporterProcess(
            tmp_path / name, {"prometheus": settings, "exporter": {"interval": "1s"}}
        )

    # One shard per namespace (regex metacharacters escaped as an operator would), and one
    # exporter over everything.
    shards = [exporter(f"shard-{i}", ns.replace(".", r"\.")) for i, ns in enumerate(namespaces)]
    whole = exporter("whole", "")
    add_exporter_job(
        upstream,
        {e: {"namespace": "monitoring", "pod": f"exporter-{i}"} for i, e in enumerate(shards)},
    )
    add_exporter_job(single, {whole: {"namespace": "monitoring", "pod": "exporter"}})
    served = {(p.namespace, p.model) for p in cluster.pods}
    with running(upstream, single, whole, *shards):
        upstream.start()
        single.start()
        for process in (whole, *shards):
            process.start()
        for server in (upstream, single):
            wait_until(lambda s=server: models_on(s) == served, 60, "every model's power")
        time.sleep(12)  # rates over the dashboard's ranges settle on both sides
        for shard, namespace in zip(shards, namespaces, strict=True):
            on_page = {labels["namespace"] for _, labels, _ in shard.samples() if "model" in labels}
            assert on_page == {namespace}, f"shard {namespace} shows {on_page}"
        sharded, one = table_rows(upstream), table_rows(single)

    assert sharded.keys() == one.keys()
    for ref, rows in one.items():
        assert sharded[ref].keys() == rows.keys(), ref
        for key, value in rows.items():
            assert sharded[ref][key] == pytest.approx(value, rel=0.03, abs=1e-9), (ref, key)
    assert {key for rows in one.values() for key in rows} == served
