"""A real Prometheus (or VictoriaMetrics) scraping a simulated cluster, with history
backfilled so 5-minute windows are full at once."""

from __future__ import annotations

import time
from pathlib import Path

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.simulation import SimCluster, targets
from tests.harness import PrometheusServer, VictoriaMetricsServer, wait_until
from tests.simulated import openmetrics_history

SCRAPE_SECONDS = 2
HISTORY_SECONDS = 420


def start_prometheus(
    workdir: Path,
    endpoints: SimulatedEndpoints,
    cluster: SimCluster,
    kind: str = "prometheus",
    dcgm_restarted_ago: float | None = None,
    vllm_moved_ago: float | None = None,
    scraped_twice: tuple[str, ...] = (),
) -> PrometheusServer:
    now = time.time()
    start = now - HISTORY_SECONDS
    history = openmetrics_history(
        cluster,
        endpoints.address,
        start - start % SCRAPE_SECONDS,
        now - 1,
        SCRAPE_SECONDS,
        dcgm_restarted_at=None if dcgm_restarted_ago is None else now - dcgm_restarted_ago,
        vllm_moved_at=None if vllm_moved_ago is None else now - vllm_moved_ago,
        scraped_twice=scraped_twice,
    )
    server_class = VictoriaMetricsServer if kind == "victoria-metrics" else PrometheusServer
    server = server_class(
        workdir,
        endpoints.address,
        targets(cluster),
        backfill=history,
        scrape_interval=SCRAPE_SECONDS,
    ).start()
    wait_for_live_scrapes(server, len(targets(cluster)))
    return server


def wait_for_live_scrapes(server: PrometheusServer, count: int) -> None:
    """Until every target has been scraped within the last interval. Prometheus's first
    scrapes come seconds after start; until then a rate's window ends with a gap that its
    edge extrapolation only half covers, biasing rates low by up to a few percent."""

    def fresh() -> bool:
        up = server.query("count(up == 1)")
        age = server.query("max(time() - timestamp(up))")
        return (
            bool(up)
            and int(float(up[0]["value"][1])) == count
            and bool(age)
            and float(age[0]["value"][1]) < SCRAPE_SECONDS
        )

    wait_until(fresh, 30, "every target to be scraped live")
