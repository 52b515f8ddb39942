"""The table the demo prints, computed at the demo cluster's mean load on a fixed clock, so it
is the same on every run: the README shows it, and a test regenerates it so it cannot drift.

    python -m exporter.demo.sample --check   # exit 1 if README.md's copy differs
    python -m exporter.demo.sample --write   # update README.md's copy
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from exporter.config import build
from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.nrp import nrp_cluster
from exporter.demo.run import INTERVAL_S, demo_config
from exporter.engine import Engine
from exporter.exposition.report import table
from exporter.sources.direct import DirectSource

START = 1_800_000_000.0  # any time after the simulation's epoch
README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"(<!-- demo table -->\n```\n)(.*?)(```\n)", re.S)


def sample_table() -> str:
    """The demo's first table (its second cycle, a rate needing two samples), without the
    legend, at mean load."""
    cluster = nrp_cluster(wave=0.0)
    now = [START]
    endpoints = SimulatedEndpoints(cluster, clock=lambda: now[0]).start()
    try:
        config = build(demo_config(cluster, endpoints.address, "127.0.0.1:0"))
        source = DirectSource(config, clock=lambda: now[0])
        engine = Engine(config, source, clock=lambda: now[0])
        try:
            engine.run_cycle()
            now[0] += INTERVAL_S
            engine.run_cycle()
        finally:
            source.close()
    finally:
        endpoints.stop()
    snapshot = engine.state.snapshot
    if snapshot is None:
        raise RuntimeError("the demo cluster gave no figures")
    return table(snapshot, engine.settings, legend=False) + "\n"


def readme_copy(text: str) -> str | None:
    found = BLOCK.search(text)
    return found.group(2) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The README's copy of the demo's table.")
    parser.add_argument("--write", action="store_true", help="update README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs")
    args = parser.parse_args(argv)
    text, want = README.read_text(), sample_table()
    if args.write:
        README.write_text(BLOCK.sub(lambda m: m.group(1) + want + m.group(3), text, count=1))
        return 0
    if args.check:
        if readme_copy(text) != want:
            print("README.md's demo table is out of date: python -m exporter.demo.sample --write")
            return 1
        return 0
    print(want, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
