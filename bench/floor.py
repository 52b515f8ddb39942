"""The upstream cost of a cycle next to its floor, measured against one Prometheus.

The floor reads every raw series the figures rest on once, with the plain function the figures
use: `increase(energy[w])`, `avg_over_time(power[w])` and of the two busy fields, `rate(
counter[w])` of each token counter, every series returned as it is. The scalar floor is
stricter: the same functions summed into one number per series set, so it costs the reading
alone, not the answer. Where the exporter's recording rules are loaded (for the same
configuration), the recorded reads a cycle would make instead are timed too. Every query is
timed alone (median of `runs`), then each set again all at once, as the exporter runs its
cycle. Prometheus reports the samples each query touched (`stats=all`).

    python3 bench/floor.py http://127.0.0.1:9090 --at 1700007060
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import Config, build, default_document, merge
from exporter.durations import promql_duration
from exporter.sources import recording
from exporter.sources.prometheus_api import Sample
from exporter.sources.promql import COMPUTED_SOURCE
from exporter.sources.queries import Queries


def floor_queries(config: Config, scalar: bool = False) -> dict[str, str]:
    """One query per raw series set the per-cycle queries read: the plain function, or
    (`scalar`) its sum."""
    names = config.upstream.metrics
    w = promql_duration(config.prometheus.window)
    gpu = config.prometheus.gpu_selector.strip().strip("{}")
    tok = config.prometheus.token_selector.strip().strip("{}")

    def sel(base: str, extra: str = "") -> str:
        return "{" + ", ".join(p for p in (base, extra) if p) + "}"

    out = {
        "energy": f"increase({names.gpu_energy}{sel(gpu)}[{w}])",
        "power": f"avg_over_time({names.gpu_power}{sel(gpu)}[{w}])",
        "engine_active": f"avg_over_time({names.gpu_engine_active}{sel(gpu)}[{w}])",
        "gpu_util": f"avg_over_time({names.gpu_util}{sel(gpu)}[{w}])",
        "prompt": f"rate({names.prompt_tokens}{sel(tok)}[{w}])",
        "generation": f"rate({names.generation_tokens}{sel(tok)}[{w}])",
    }
    if names.requests:
        out["requests"] = f"rate({names.requests}{sel(tok)}[{w}])"
    if names.prompt_tokens_by_source:
        by_source = sel(tok, COMPUTED_SOURCE)
        out["prompt_computed"] = f"rate({names.prompt_tokens_by_source}{by_source}[{w}])"
    return {name: f"sum({q})" if scalar else q for name, q in out.items()}


class Timer:
    def __init__(self, url: str, at: float) -> None:
        self.url = url.rstrip("/") + "/api/v1/query"
        self.at = at
        self.session = requests.Session()

    def once(
        self, promql: str, session: requests.Session | None = None
    ) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        response = (session or self.session).post(
            self.url, data={"query": promql, "time": repr(self.at), "stats": "all"}, timeout=600
        )
        elapsed = time.perf_counter() - started
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body.get('error')}: {promql[:120]}")
        return elapsed, body["data"]

    def alone(self, promql: str, runs: int) -> dict[str, float]:
        times, data = [], {}
        for _ in range(runs):
            elapsed, data = self.once(promql)
            times.append(elapsed)
        samples = data.get("stats", {}).get("samples", {})
        return {
            "s": statistics.median(times),
            "rows": float(len(data["result"])),
            "samples": float(samples.get("totalQueryableSamples", 0)),
            "peak_samples": float(samples.get("peakSamples", 0)),
        }

    def together(self, queries: dict[str, str], runs: int) -> float:
        """Median wall time of running all `queries` at once, one thread and connection each
        (requests' sessions are not thread-safe)."""

        def fresh(promql: str) -> tuple[float, dict[str, Any]]:
            with requests.Session() as session:
                return self.once(promql, session)

        walls = []
        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            for _ in range(runs):
                started = time.perf_counter()
                list(pool.map(fresh, queries.values()))
                walls.append(time.perf_counter() - started)
        return statistics.median(walls)


def measure(url: str, at: float, runs: int = 3, config: Config | None = None) -> dict[str, Any]:
    config = config or build(merge(default_document(), {"prometheus": {"url": url}}))
    per_cycle = Queries.build(config).per_cycle()
    sets = {
        "exporter": per_cycle,
        "floor": floor_queries(config),
        "scalar_floor": floor_queries(config, scalar=True),
    }
    timer = Timer(url, at)
    timer.alone(sets["scalar_floor"]["energy"], 1)  # warm the head and the connection
    _, found = timer.once(recording.detection())
    if recording.in_force([Sample(r["metric"], 1.0) for r in found["result"]], per_cycle):
        sets["recorded"] = {name: recording.selector(name, q) for name, q in per_cycle.items()}
    result: dict[str, Any] = {}
    for side, queries in sets.items():
        result[side] = {name: timer.alone(q, runs) for name, q in queries.items()}
        result[f"{side}_wall_s"] = timer.together(queries, runs)
        result[f"{side}_sum_s"] = sum(row["s"] for row in result[side].values())
        result[f"{side}_samples"] = sum(row["samples"] for row in result[side].values())
    if "recorded" in sets:
        result["recorded_sum_ratio"] = result["recorded_sum_s"] / result["floor_sum_s"]
    for floor in ("floor", "scalar_floor"):
        prefix = "" if floor == "floor" else "scalar_"
        result[f"{prefix}sum_ratio"] = result["exporter_sum_s"] / result[f"{floor}_sum_s"]
        result[f"{prefix}wall_ratio"] = result["exporter_wall_s"] / result[f"{floor}_wall_s"]
    return result


def table(result: dict[str, Any]) -> str:
    lines = ["| query | ms alone | rows | samples touched |", "|---|---:|---:|---:|"]
    sides = [side for side in ("exporter", "recorded", "floor", "scalar_floor") if side in result]
    for side in sides:
        for name, row in result[side].items():
            lines.append(
                f"| {side.replace('_', ' ')}: {name} | {row['s'] * 1000:.0f} | {row['rows']:.0f} "
                f"| {row['samples']:,.0f} |"
            )
    lines.append("")
    for side in sides:
        lines.append(
            f"{side.replace('_', ' ')}: {result[f'{side}_sum_s'] * 1000:.0f} ms summed, "
            f"{result[f'{side}_wall_s'] * 1000:.0f} ms all at once, "
            f"{result[f'{side}_samples']:,.0f} samples touched"
        )
    lines.append(
        f"exporter / floor: {result['sum_ratio']:.2f} summed, {result['wall_ratio']:.2f} all at "
        f"once; / scalar floor: {result['scalar_sum_ratio']:.2f} summed, "
        f"{result['scalar_wall_ratio']:.2f} all at once"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="Prometheus base URL")
    parser.add_argument("--at", type=float, default=None, help="evaluation time (default: now)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = measure(args.url, time.time() if args.at is None else args.at, args.runs)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
