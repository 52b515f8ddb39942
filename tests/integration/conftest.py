"""A simulated cluster, a real Prometheus scraping it (with 7 minutes of backfilled history so
5-minute windows are full at once), and a factory for exporter processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.nrp import nrp_cluster
from exporter.demo.simulation import SimCluster
from tests.harness import ExporterProcess, PrometheusServer
from tests.live import start_prometheus


@pytest.fixture(scope="module")
def cluster() -> SimCluster:
    return nrp_cluster()


@pytest.fixture(scope="module")
def endpoints(cluster: SimCluster) -> Iterator[SimulatedEndpoints]:
    server = SimulatedEndpoints(cluster).start()
    yield server
    server.stop()


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
