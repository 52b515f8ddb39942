"""`llm-carbon-exporter demo`: a simulated cluster (the NRP review's models, one idle, one
across two grid regions) served as vLLM and dcgm-exporter pages on loopback, a simulated live
grid (Electricity Maps and WattTime stand-ins), and the exporter reading them in direct-scrape
mode, as a sidecar would. Real output from one command."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO

from exporter import PROG
from exporter.config import ConfigError, build, default_document, merge
from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.grid import SimulatedGrid
from exporter.demo.nrp import nrp_cluster
from exporter.demo.simulation import SimCluster, targets
from exporter.engine import Engine
from exporter.exposition.report import table
from exporter.exposition.server import parse_listen, start
from exporter.signals import stop_on_signals
from exporter.sources.direct import DirectSource
from exporter.sources.grid_live import live_grid

INTERVAL_S = 5
WINDOW_S = 60


def demo_config(cluster: SimCluster, address: str, listen: str) -> dict[str, Any]:
    """The exporter's configuration for reading `cluster` at `address`."""
    pages = {t.key: f"http://{address}{t.path}" for t in targets(cluster)}
    return merge(
        default_document(),
        {
            "source": "direct",
            "direct": {
                "dcgm_urls": [pages[node.hostname] for node in cluster.nodes],
                "pods": [
                    {"namespace": pod.namespace, "pod": pod.name, "vllm_urls": [pages[pod.name]]}
                    for pod in cluster.pods
                ],
                "window": f"{WINDOW_S}s",
            },
            "exporter": {"listen": listen, "interval": f"{INTERVAL_S}s"},
        },
    )


def run_demo(listen: str, out: TextIO = sys.stdout, stop: threading.Event | None = None) -> int:
    cluster = nrp_cluster(wave=0.25)
    endpoints = SimulatedEndpoints(cluster).start()
    grid = SimulatedGrid().start()

    def stop_simulation() -> None:
        endpoints.stop()
        grid.stop()

    try:
        document = demo_config(cluster, endpoints.address, listen)
        config = build(merge(document, {"grid": {"live": grid.live()}}))
    except ConfigError as exc:
        stop_simulation()
        for line in exc.lines:
            print(f"{PROG}: config error: {line}", file=sys.stderr)
        return 2
    feed = live_grid(config)
    engine = Engine(config, DirectSource(config), grid=feed)
    try:
        http = start(engine, config.exporter.listen)
    except OSError as exc:
        stop_simulation()
        print(
            f"{PROG}: cannot listen on {listen}: {exc.strerror} "
            f"(try --listen {listen.rpartition(':')[0]}:0 for any free port)",
            file=sys.stderr,
        )
        return 1
    if feed is not None:
        feed.start()
    stop = stop or stop_on_signals(logging.getLogger("exporter"))
    loop = threading.Thread(target=engine.run_forever, args=(stop,), daemon=True, name="cycle")
    loop.start()
    _show(engine, cluster, endpoints, grid, _base(listen, http.server_address[1]), out, stop)
    stop.wait()
    loop.join(timeout=10)
    http.shutdown()
    http.server_close()
    engine.close()
    stop_simulation()
    return 0


def _base(listen: str, port: int) -> str:
    host, _ = parse_listen(listen)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def diagnose_command(cluster: SimCluster, address: str) -> str:
    """`diagnose` for the demo's first pod, as a sidecar beside it would run it."""
    pod = cluster.pods[0]
    return (
        f"{PROG} diagnose --vllm-url http://{address}/vllm/{pod.name}/metrics "
        f"--dcgm-url http://{address}/dcgm/{pod.node}/metrics "
        f"--pod {pod.name} --namespace {pod.namespace}"
    )


def _show(
    engine: Engine,
    cluster: SimCluster,
    endpoints: SimulatedEndpoints,
    grid: SimulatedGrid,
    base: str,
    out: TextIO,
    stop: threading.Event,
) -> None:
    """Where everything is, then the first table of figures (within a minute)."""
    print(
        f"llm-carbon-exporter demo: {len({p.model for p in cluster.pods})} models on "
        f"{len(cluster.nodes)} simulated GPU nodes, read in direct-scrape mode.\n"
        f"  simulated pages:  http://{endpoints.address}/vllm/<pod>/metrics, "
        f"/dcgm/<node>/metrics\n"
        f"  live grid:        {grid.describe()}\n"
        f"  exporter:         {base}/  (per-model table)   {base}/metrics\n"
        f"First figures in about {2 * INTERVAL_S} s: a rate needs two samples ...",
        file=out,
        flush=True,
    )
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        snapshot = engine.state.snapshot
        if snapshot is not None and any(f.active for f in snapshot.models):
            print("\n" + table(snapshot, engine.settings) + "\n", file=out, flush=True)
            print(
                f"Try: curl -s {base}/metrics | grep '^llm_carbon_energy_joules_per_token'\n"
                f"     curl -s {base}/metrics | grep 'grid_intensity'   (location and marginal)\n"
                f"     curl -s {base}/metrics | grep -E '_per_request|^llm_carbon_sci'   "
                "(per request, SCI)\n"
                f"     {diagnose_command(cluster, endpoints.address)}\n"
                "       (the checklist an operator runs on a real cluster, for one pod)\n"
                "The load oscillates over 10 minutes, the simulated grid over 20; figures "
                f"refresh every {INTERVAL_S} s. Ctrl-C to stop.",
                file=out,
                flush=True,
            )
            break
        stop.wait(0.5)
