"""Compare the /metrics page of two revisions on fixed simulated clusters.

    PYTHONPATH=. python scripts/compare_metrics.py dump   # this checkout's series, sorted
    python scripts/compare_metrics.py compare REV     # REV's series against this checkout's

Each cluster is read in direct-scrape mode under a frozen clock (the same samples, the same
times in both revisions), for enough cycles to fill windows and look-backs, and the page is
rendered by the exporter's own collector. Only the cycle's wall time differs between runs, so
it is left out. A restructuring that changes no behaviour prints "identical"; any difference
is printed as a diff and the exit status is 1.
"""

from __future__ import annotations

import difflib
import importlib
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

START = "2026-11-26 12:00:00"
CYCLES = 30
STEP_S = 5  # the demo configuration's interval
VOLATILE = ("llm_carbon_exporter_cycle_duration_seconds",)


def _first(*modules: str):
    """The first of `modules` that imports from the checkout being dumped (module paths
    moved between revisions; an editable install may offer the other checkout's)."""
    root = Path(importlib.import_module("exporter").__file__).parent
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if Path(module.__file__).is_relative_to(root):
            return module
    raise ModuleNotFoundError(modules[-1])


def _nrp_cluster(sim):
    try:
        return _first("exporter.demo.nrp").nrp_cluster
    except ModuleNotFoundError:
        return sim.nrp_cluster


def clusters(sim) -> dict[str, object]:
    """The NRP cluster with a load wave, a MIG node and time-sliced GPUs shared across models
    and within one, and a cluster of idle models."""
    nrp = _nrp_cluster(sim)(wave=0.25)
    a100 = "NVIDIA A100-SXM4-80GB"

    def shared(mig: int, b_serves: str):
        node = sim.SimNode("gpu-m.sdsc.optiputer.net", a100, 2, mig_instances=mig)
        pods = (
            sim.SimPod("ns", "a", "m/a", node.hostname, (0,), 200.0, 100.0, 10.0),
            sim.SimPod("ns", "b", b_serves, node.hostname, (0,), 100.0, 50.0, 5.0),
            sim.SimPod("ns", "c", "m/c", node.hostname, (1,), 150.0, 80.0, 8.0),
        )
        return sim.SimCluster(nodes=(node,), pods=pods)

    idle = replace(
        nrp,
        pods=tuple(replace(p, prompt_tps=0.0, generation_tps=0.0, wave=0.0) for p in nrp.pods),
    )
    return {
        "nrp": nrp,
        "time-sliced-across-models": shared(0, "m/b"),
        "time-sliced-replicas": shared(0, "m/a"),
        "mig": shared(3, "m/b"),
        "idle": idle,
    }


def dump() -> str:
    from freezegun import freeze_time

    # Only the checkout in PYTHONPATH: an editable install would offer another checkout's
    # modules to one that lacks them.
    sys.meta_path[:] = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", "")]

    config_mod = importlib.import_module("exporter.config")
    sim = _first("exporter.demo.simulation", "exporter.simulation")
    endpoints_mod = _first("exporter.demo.endpoints", "exporter.simulated_endpoints")
    demo = _first("exporter.demo.run", "exporter.demo")
    engine_mod = importlib.import_module("exporter.engine")
    direct = importlib.import_module("exporter.sources.direct")
    collector = _first("exporter.exposition.collector", "exporter.collector")

    out: list[str] = []
    for name, cluster in clusters(sim).items():
        with freeze_time(START) as frozen:
            endpoints = endpoints_mod.SimulatedEndpoints(cluster).start()
            try:
                config = config_mod.build(demo.demo_config(cluster, endpoints.address, ":0"))
                engine = engine_mod.Engine(config, direct.DirectSource(config))
                for cycle in range(CYCLES):
                    if cycle:
                        frozen.tick(STEP_S)
                    engine.run_cycle()
                text = collector.ExporterCollector(engine).exposition(False).decode()
                engine.source.close()
            finally:
                endpoints.stop()
        for line in text.splitlines():
            if line.startswith("#") or line.startswith(VOLATILE):
                continue
            out.append(f"{name} {line}")
    return "\n".join(sorted(out)) + "\n"


def _dump_in(root: Path) -> str | None:
    """`dump` run on the checkout at `root`, or None (its error printed) if it fails."""
    run = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "dump"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )
    if run.returncode:
        sys.stderr.write(run.stderr)
        return None
    return run.stdout


def compare(revision: str) -> int:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(tree), revision],
            check=True,
        )
        try:
            before = _dump_in(tree)
        finally:
            subprocess.run(
                ["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=True
            )
    after = _dump_in(root)
    if before is None or after is None:
        return 2
    if before == after:
        print(f"identical: {len(after.splitlines())} series on {len(clusters_names())} clusters")
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=revision,
            tofile="this checkout",
        )
    )
    return 1


def clusters_names() -> list[str]:
    return ["nrp", "time-sliced-across-models", "time-sliced-replicas", "mig", "idle"]


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "dump":
        sys.stdout.write(dump())
    elif len(sys.argv) == 3 and sys.argv[1] == "compare":
        raise SystemExit(compare(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
