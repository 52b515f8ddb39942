"""A simulated cluster, a real Prometheus scraping it (with 7 minutes of backfilled history so
5-minute windows are full at once), and a factory for exporter processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.simulation import SimCluster, nrp_cluster, openmetrics_history, targets
from tests.harness import ExporterProcess, PrometheusServer, VictoriaMetricsServer, wait_until

SCRAPE_SECONDS = 2
HISTORY_SECONDS = 420


@pytest.fixture(scope="module")
def cluster() -> SimCluster:
    return nrp_cluster()


@pytest.fixture(scope="module")
def endpoints(cluster: SimCluster) -> Iterator[SimulatedEndpoints]:
    server = SimulatedEndpoints(cluster).start()
    yield server
    server.stop()


def start_prometheus(
    workdir: Path,
    endpoints: SimulatedEndpoints,
    cluster: SimCluster,
    kind: str = "prometheus",
    dcgm_restarted_ago: float | None = None,
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


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def prometheus(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    endpoints: SimulatedEndpoints,
    cluster: SimCluster,
) -> Iterator[PrometheusServer]:
    """The upstream query API: Prometheus, and VictoriaMetrics for compatibility."""
    server = start_prometheus(
        tmp_path_factory.mktemp(request.param), endpoints, cluster, kind=request.param
    )
    yield server
    server.stop()


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator:
    started: list[ExporterProcess] = []

    def make(config: dict, *args: str, wait_ready: bool = True) -> ExporterProcess:
        process = ExporterProcess(tmp_path, config, args)
        started.append(process)
        return process.start(wait_ready=wait_ready)

    yield make
    for process in started:
        process.stop()
