"""Performance benchmark of llm-carbon-exporter: a script, not a timed test.

For each size (10 → 2,000 models, one 8-GPU pod each) it backfills a real Prometheus with a
synthetic cluster's history, then measures in a fresh process: upstream requests per cycle,
upstream query wall time vs exporter CPU per cycle, the /metrics pre-render that follows each
cycle on the engine's thread, body sizes, peak RSS, scrape latency around a cycle and one
keep-alive scraper's latency. In another fresh process it fills the engine's look-back
tracker with what a full utilization.lookback (7 days) of cycles leaves in it and measures
cycles and RSS again. At 200 models it hammers /metrics with 20 concurrent scrapers, the
exporter's own server and prometheus_client's stock start_http_server. It times a sidecar
(direct-scrape) cycle on one 8-GPU node page, and the look-back query (peak_tokens) against
longer histories. What-ifs undo a change from the outside (the exporter's code unchanged) to
put the previous behaviour next to the current one. Prints the numbers, the ratios against the
targets, and exits 1 when a target is missed (2 when prometheus/promtool are missing).

    python3 bench/bench.py            # the full run: 11-15 minutes, 1.6 GB of scratch disk
    python3 bench/bench.py --quick    # sizes 10 and 200, short load runs: about 2 minutes

Needs Debian's prometheus and promtool on PATH (`make system-deps` installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import floor  # noqa: E402
import yaml  # noqa: E402
from hostile import new_connection_load, peak_rss_under_huge_responses  # noqa: E402
from load import PLAIN_HEADERS, PROMETHEUS_HEADERS, LoadResult, hammer  # noqa: E402
from synthetic import GPUS_PER_NODE, write_history  # noqa: E402

from exporter.config import build, default_document, merge  # noqa: E402
from exporter.sources import recording  # noqa: E402
from exporter.sources.queries import MAX_PER_CYCLE, Queries  # noqa: E402
from tests.harness import PrometheusServer, promtool_backfill, require_binary, stop_process  # noqa: E402

SIZES = (10, 50, 200, 1000, 2000)
QUICK_SIZES = (10, 200)
CONCURRENCY_SIZE = 200
CONCURRENCY = 20
# Backfilled history: 10 minutes every 30 s, inside one 2-hour TSDB block; queries are
# evaluated at its end, so every 5-minute window is full.
HISTORY_START = 1_700_006_460.0
HISTORY_SECONDS = 600.0
HISTORY_STEP = 30.0
AT = HISTORY_START + HISTORY_SECONDS
WORKER = ROOT / "bench" / "worker.py"

# Targets (docs/performance.md).
MAX_FLOOR_RATIO = 2.0  # upstream query time over the floor's, summed and all at once
MAX_CPU_RATIO = 0.25
MAX_LINEARITY = 1.25  # CPU per model at the largest size / at the next size
MAX_P99_S = 0.100
MAX_RSS_MB = 60.0  # 10^6 bytes: the stricter reading
MAX_SIDECAR_S = 0.020
MAX_HUGE_RSS_MB = 200.0  # peak RSS while every upstream response is past the size cap
NEW_CONNECTION_CLIENTS = (20, 50, 100)
NEW_CONNECTION_TARGET = 50  # clients at which the p99 target applies


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the machine


def machine() -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    cpu = (
        f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')})"
    )
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    prometheus = subprocess.run(
        [require_binary("prometheus"), "--version"], capture_output=True, text=True, check=False
    )
    version_line = (prometheus.stdout or prometheus.stderr).splitlines()[0]
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "os": os_name(),
        "python": platform.python_version(),
        "prometheus": version_line,
        "prometheus_client": version("prometheus-client"),
        "exporter": version("llm-carbon-exporter") if _installed() else "source tree",
        "commit": commit(),
    }


def commit() -> str:
    """The checkout's commit, and whether exporter/ has uncommitted changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "exporter"], capture_output=True, text=True
    ).stdout.strip()
    return head.stdout.strip() + (" with uncommitted changes in exporter/" if dirty else "")


def os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        return "unknown"


def _installed() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("llm-carbon-exporter")
    except PackageNotFoundError:
        return False
    return True


# ---- processes


def worker_env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path}


def run_worker(*args: str, timeout: float = 900) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=worker_env(),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    pid: int

    def cpu_seconds(self) -> float:
        from worker import process_cpu_seconds

        return process_cpu_seconds(self.pid)

    def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            line = self.process.stdout.readline()
            self.process.wait(30)
        finally:
            stop_process(self.process)
        return json.loads(line) if line.strip() else {}


def serve(
    url: str, server: str, *, lazy: bool = False, nagle: bool = False, interval: float = 0.0
) -> Served:
    args = ["serve", "--prometheus", url, "--at", repr(AT), "--server", server]
    if lazy:
        args.append("--lazy")
    if nagle:
        args.append("--nagle")
    if interval:
        args += ["--interval", repr(interval)]
    process = subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=worker_env(),
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        stop_process(process)
        raise RuntimeError(f"serve worker ({server}) did not start")
    info = json.loads(line)
    return Served(process, info["port"], info["pid"])


def load_run(served: Served, path: str, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    cpu = served.cpu_seconds()
    result: LoadResult = hammer(served.port, path, headers, **kw)
    row = result.as_dict()
    row["server_cpu_per_request_s"] = (served.cpu_seconds() - cpu) / max(result.requests, 1)
    return row


# ---- one size


def measure_size(models: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    here = workdir / f"models-{models}"
    here.mkdir(parents=True)
    started = time.monotonic()
    server, samples, history_bytes = backfilled_prometheus(
        here, models, HISTORY_START, AT, HISTORY_STEP, f"{models} models"
    )
    result: dict[str, Any] = {"samples": samples, "history_bytes": history_bytes}
    try:
        server.start()
        assert server.process is not None
        common = ["--prometheus", server.url, "--at", repr(AT)]
        common += ["--prometheus-pid", str(server.process.pid)]
        worker_args = ["--cycles", str(args.cycles), "--renders", str(args.renders)]
        worker_args += ["--probes", str(args.probes)]
        if args.what_if:
            worker_args.append("--gc-what-if")
        if args.profile and models == max(args.sizes):
            worker_args.append("--profile")
        result["cycles"] = run_worker("cycles", *common, *worker_args)
        log(f"  {models} models: the per-cycle queries next to their floor")
        result["floor"] = floor.measure(server.url, AT, runs=args.floor_runs)
        c = result["cycles"]
        if c["models"] != models or c["models_with_power"] != models:
            raise RuntimeError(
                f"expected {models} models with power, the exporter saw {c['models']} "
                f"({c['models_with_power']} with power)"
            )
        if args.full_lookback:
            log(f"  {models} models: the engine after a full look-back")
            result["full_lookback"] = run_worker(
                "full-lookback", *common, "--cycles", str(args.full_cycles)
            )
        # One keep-alive scraper (as Prometheus), and /healthz; again with Nagle's algorithm
        # switched back on from the outside (the handler as it was at 2db771d).
        result["single_scraper"] = {}
        for key, nagle in (("exporter", False), ("exporter_nagle", True)):
            served = serve(server.url, "exporter", nagle=nagle)
            try:
                result["single_scraper"][key] = {
                    "metrics": load_run(served, "/metrics", PROMETHEUS_HEADERS, concurrency=1,
                                        duration=args.single_seconds, warmup=0.3),
                    "healthz": load_run(served, "/healthz", {}, concurrency=1,
                                        duration=min(args.single_seconds, 1.0), warmup=0.3),
                }  # fmt: skip
            finally:
                served.stop()
        if models == CONCURRENCY_SIZE:
            result["concurrency"] = measure_concurrency(server.url, args)
            result["new_connections"] = measure_new_connections(server.url, args)
        if models == max(args.sizes):  # last: it restarts the server
            log(f"  {models} models: the queries with the recording rules evaluated")
            backfill_rules(server, here)
            result["floor_with_rules"] = floor.measure(server.url, AT, runs=args.floor_runs)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(here, ignore_errors=True)
    result["seconds"] = time.monotonic() - started
    return result


def backfill_rules(server: PrometheusServer, here: Path) -> None:
    """The exporter's recording rules evaluated over the last 90 s of the history (promtool
    reads the running `server`), their blocks added to its data, and `server` restarted."""
    config = build(merge(default_document(), {"prometheus": {"url": server.url}}))
    rules = here / "rules.yaml"
    groups = recording.rule_groups(Queries.build(config).per_cycle(), 30.0)
    rules.write_text(yaml.safe_dump(groups))
    blocks = here / "rule-blocks"
    subprocess.run(
        [require_binary("promtool"), "tsdb", "create-blocks-from", "rules",
         f"--start={AT - 90:.0f}", f"--end={AT + 1:.0f}", "--eval-interval=30s",
         f"--url={server.url}", f"--output-dir={blocks}", str(rules)],
        check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    server.stop()
    for block in blocks.iterdir():
        shutil.move(str(block), server.data / block.name)
    server.start()


def backfilled_prometheus(
    here: Path, models: int, start: float, end: float, step: float, label: str
) -> tuple[PrometheusServer, int, int]:
    """A (not yet started) Prometheus holding `models` models' history; (server, samples,
    bytes of OpenMetrics written). Logs what it wrote under `label`."""
    started = time.monotonic()
    history = here / "history.om"
    samples = write_history(models, history, start, end, step)
    size = history.stat().st_size
    server = PrometheusServer(here, "127.0.0.1:9", [])
    try:
        promtool_backfill(history, server.data, timeout=1800)
    finally:
        history.unlink()
    log(
        f"  {label}: {samples:,} samples ({size / 1e6:.0f} MB of OpenMetrics) "
        f"backfilled in {time.monotonic() - started:.1f} s"
    )
    return server, samples, size


LOOKBACK_MODELS = 200
LOOKBACK_STEP = 120.0  # two or three samples per 5-minute window: enough for rate()


def measure_lookback(hours: float, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The look-back queries (utilization.lookback = 7 days, refreshed every 10 minutes; since
    f271da3 only peak_tokens) and the per-cycle queries against `hours` of history: the
    look-back's cost grows with the history it scans."""
    from worker import prometheus_config

    from exporter.sources.prometheus_api import PrometheusClient

    here = workdir / f"lookback-{hours:g}h"
    here.mkdir(parents=True)
    end = HISTORY_START + 7200 * 24  # on a 2-hour block boundary
    server, samples, _ = backfilled_prometheus(
        here,
        LOOKBACK_MODELS,
        end - hours * 3600,
        end,
        LOOKBACK_STEP,
        f"{hours:g} h of history, {LOOKBACK_MODELS} models",
    )
    out: dict[str, Any] = {"hours": hours, "samples": samples}
    try:
        server.start()
        config = prometheus_config(server.url)
        queries = Queries.build(config)
        client = PrometheusClient(config.prometheus)
        try:
            for name, promql in {**queries.lookback(), "per_cycle": ""}.items():
                times = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    if name == "per_cycle":
                        for expr in queries.per_cycle().values():
                            client.query(expr, end)
                    else:
                        client.query(promql, end)
                    times.append(time.perf_counter() - t0)
                out[name] = min(times)
        finally:
            client.close()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(here, ignore_errors=True)
    return out


@dataclass(frozen=True)
class LoadRun:
    server: str  # exporter | stock
    title: str
    headers: str  # a key of HEADER_PROFILES
    interval: float = 0.0  # keep cycling every this many seconds
    lazy: bool = False  # what-if: no pre-render


# One serving process per run, so each peak RSS belongs to one kind of load.
LOAD_RUNS = {
    "exporter": LoadRun("exporter", "exporter server (pre-rendered, gzip kept)", "prometheus"),
    "exporter_plain": LoadRun("exporter", "exporter server (plain: body kept)", "plain"),
    "stock": LoadRun(
        "stock", "prometheus_client start_http_server (render per scrape)", "prometheus"
    ),
    "stock_plain": LoadRun(
        "stock", "prometheus_client start_http_server (render per scrape)", "plain"
    ),
    "exporter_cycling": LoadRun(
        "exporter",
        "exporter server, a cycle every 2 s (pre-render on the engine thread)",
        "prometheus",
        interval=2.0,
    ),
    "exporter_cycling_lazy": LoadRun(
        "exporter",
        "exporter server, a cycle every 2 s, no pre-render (what-if, as at 2db771d)",
        "prometheus",
        interval=2.0,
        lazy=True,
    ),
}
HEADER_PROFILES = {"prometheus": PROMETHEUS_HEADERS, "plain": PLAIN_HEADERS}


def measure_concurrency(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, run in LOAD_RUNS.items():
        log(f"  {CONCURRENCY} scrapers: {run.title}, {run.headers} headers")
        served = serve(url, run.server, lazy=run.lazy, interval=run.interval)
        try:
            row = load_run(
                served,
                "/metrics",
                HEADER_PROFILES[run.headers],
                concurrency=CONCURRENCY,
                duration=args.load_seconds,
                warmup=1.0,
            )
        finally:
            stopped = served.stop()
        row["peak_rss_kib"] = stopped.get("peak_rss_kib")
        out[key] = row
    return out


def measure_new_connections(url: str, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Scrapers opening a new connection per request, as short-lived clients do."""
    out = {}
    for clients in NEW_CONNECTION_CLIENTS:
        log(f"  {clients} clients, a new connection per /metrics request")
        served = serve(url, "exporter")
        try:
            out[clients] = new_connection_load(served.port, clients, duration=args.load_seconds)
        finally:
            served.stop()
    return out


# ---- targets and report


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    text: str
    applies: bool = True

    @property
    def ok(self) -> bool:
        return not self.applies or self.value <= self.limit


def steady(result: dict[str, Any]) -> dict[str, float]:
    return result["cycles"]["steady_cycle"]


def full(result: dict[str, Any]) -> dict[str, float] | None:
    """The steady cycle after a full look-back, when it was measured."""
    return result["full_lookback"]["steady_cycle"] if "full_lookback" in result else None


def query_ratio(cycle: dict[str, float], prerender: bool = False) -> float:
    """Exporter CPU per cycle over the upstream phase's wall time (first request sent to last
    response read: the queries run concurrently, so this is less than their summed latency,
    and the ratio is the stricter one)."""
    cpu = cycle["cpu_s"] + (cycle["prerender_cpu_s"] if prerender else 0.0)
    return cpu / cycle["http_span_s"]


def amortized_requests(result: dict[str, Any], interval: float, refresh: float) -> float:
    return steady(result)["requests"] + result["cycles"]["lookback_requests"] * interval / refresh


def per_model_ratio(per_cycle: dict[int, float], small: int, large: int) -> float:
    """Cost per model at `large` models / at `small` models: 1 when linear (a little under 1
    from the fixed per-cycle cost), above 1 when the cost per model grows with the models."""
    return (per_cycle[large] / large) / (per_cycle[small] / small)


def mb(kib: float) -> float:
    return kib * 1024 / 1e6


def checks(results: dict[int, dict[str, Any]], sidecar: dict[str, Any]) -> list[Check]:
    sizes = sorted(results)
    largest = sizes[-1]
    out = []
    counts = {steady(results[n])["requests"] for n in sizes}
    out.append(
        Check(
            "upstream requests per cycle",
            max(counts),
            MAX_PER_CYCLE,
            f"{'constant ' if len(counts) == 1 else 'NOT constant '}"
            f"{', '.join(f'{c:g}' for c in sorted(counts))} at every size "
            f"(target <= {MAX_PER_CYCLE}, constant)",
        )
    )
    if len(counts) != 1:
        out.append(Check("requests constant across sizes", 1, 0, "requests vary with size"))
    s = steady(results[largest])
    ratio = query_ratio(s)
    out.append(
        Check(
            "exporter CPU / upstream query time",
            ratio,
            MAX_CPU_RATIO,
            f"compute/query = {ratio:.3f} at {largest} models (target <= {MAX_CPU_RATIO}): "
            f"{s['cpu_s'] * 1000:.0f} ms of CPU against {s['http_span_s']:.2f} s of upstream "
            f"wall time ({s['cpu_s'] / s['http_wall_s']:.3f} against the queries' summed "
            f"latency); {query_ratio(s, True):.3f} with the pre-render that follows the cycle",
        )
    )
    f = full(results[largest])
    if f is not None:
        ratio = query_ratio(f)
        out.append(
            Check(
                "exporter CPU / upstream query time after a full look-back",
                ratio,
                MAX_CPU_RATIO,
                f"compute/query after a full 7-day look-back = {ratio:.3f} at {largest} models "
                f"(target <= {MAX_CPU_RATIO}); {query_ratio(f, True):.3f} with the pre-render",
            )
        )
    if largest >= 1000 and len(sizes) >= 2:
        below = sizes[-2]

        def field(name: str, source: str = "steady_cycle") -> dict[int, float]:
            return {n: results[n]["cycles"][source][name] for n in (below, largest)}

        linear = per_model_ratio(field("cpu_s"), below, largest)
        compute = per_model_ratio(field("compute_cpu_s"), below, largest)
        text = (
            f"linearity: exporter CPU per model at {largest} / at {below} = {linear:.2f}, "
            f"compute alone {compute:.2f} (target <= {MAX_LINEARITY})"
        )
        if results[largest]["cycles"].get("steady_cycle_gc"):
            what_if = per_model_ratio(field("cpu_s", "steady_cycle_gc"), below, largest)
            text += f"; with the GC what-if {what_if:.2f}"
        out.append(Check("linear in models", linear, MAX_LINEARITY, text))
        fulls = {n: full(results[n]) for n in (below, largest)}
        if all(fulls.values()):
            cpu = {n: f["cpu_s"] for n, f in fulls.items() if f}
            compute = {n: f["compute_cpu_s"] for n, f in fulls.items() if f}
            linear = per_model_ratio(cpu, below, largest)
            out.append(
                Check(
                    "linear in models after a full look-back",
                    linear,
                    MAX_LINEARITY,
                    f"linearity after a full 7-day look-back: exporter CPU per model at "
                    f"{largest} / at {below} = {linear:.2f}, compute alone "
                    f"{per_model_ratio(compute, below, largest):.2f} "
                    f"(target <= {MAX_LINEARITY})",
                )
            )
    else:
        out.append(Check("linear in models", 0, 1, "linearity: n/a (needs sizes >= 1000)", False))
    if CONCURRENCY_SIZE in results:
        conc = results[CONCURRENCY_SIZE]["concurrency"]
        p99 = max(conc[key]["p99_s"] for key in ("exporter", "exporter_plain"))
        stock = conc["stock"]["p99_s"]
        out.append(
            Check(
                "/metrics p99 under 20 scrapers",
                p99,
                MAX_P99_S,
                f"/metrics p99 = {p99 * 1000:.1f} ms with {CONCURRENCY} concurrent scrapers at "
                f"{CONCURRENCY_SIZE} models (target < {MAX_P99_S * 1000:.0f} ms; stock "
                f"start_http_server: {stock * 1000:.0f} ms, {stock / p99:.0f}x)",
            )
        )
        # A failed scrape drops out of the latencies: it must count against the run.
        failed = sum(conc[key]["errors"] for key in ("exporter", "exporter_plain"))
        out.append(
            Check(
                "scrapes failed",
                failed,
                0,
                f"failed /metrics requests under {CONCURRENCY} scrapers = {failed} (target 0)",
            )
        )
        c = results[CONCURRENCY_SIZE]["cycles"]
        serving = {key: conc[key]["peak_rss_kib"] or 0 for key in ("exporter", "exporter_plain")}
        rss = mb(max(c["peak_rss_kib"], *serving.values()))
        out.append(
            Check(
                "peak RSS",
                rss,
                MAX_RSS_MB,
                f"peak RSS = {rss:.1f} MB ({rss * 1e6 / 2**20:.1f} MiB) at {CONCURRENCY_SIZE} "
                f"models, fresh processes (target <= {MAX_RSS_MB:.0f} MB): cycles and scrapes "
                f"{mb(c['peak_rss_kib']):.1f} MB, 20 scrapers with Prometheus's headers "
                f"{mb(serving['exporter']):.1f} MB, 20 plain scrapers "
                f"{mb(serving['exporter_plain']):.1f} MB",
            )
        )
        if "full_lookback" in results[CONCURRENCY_SIZE]:
            fl = results[CONCURRENCY_SIZE]["full_lookback"]
            rss = mb(fl["peak_rss_kib"])
            tracker = mb(fl["rss_filled_kib"] - fl["rss_before_fill_kib"])
            out.append(
                Check(
                    "peak RSS after a full look-back",
                    rss,
                    MAX_RSS_MB,
                    f"peak RSS after a full 7-day look-back = {rss:.1f} MB "
                    f"({rss * 1e6 / 2**20:.1f} MiB) at {CONCURRENCY_SIZE} models, of which "
                    f"{tracker:.1f} MB the look-back tracker (target <= {MAX_RSS_MB:.0f} MB)",
                )
            )
    else:
        for name in ("/metrics p99 under 20 scrapers", "peak RSS"):
            text = f"{name}: n/a (measured at {CONCURRENCY_SIZE} models, not in --sizes)"
            out.append(Check(name, 0, 1, text, False))
    side = max(sidecar["bare"]["cycle_median_s"], sidecar["padded"]["cycle_median_s"])
    out.append(
        Check(
            "sidecar parse + compute",
            side,
            MAX_SIDECAR_S,
            f"sidecar parse + compute = {side * 1000:.2f} ms per 8-GPU node page + vLLM page "
            f"(target < {MAX_SIDECAR_S * 1000:.0f} ms)",
        )
    )
    out += edge_checks(results, sidecar)
    f = results[largest]["floor"]
    for key, what in (("sum", "summed"), ("wall", "all at once")):
        out.append(
            Check(
                f"upstream {what} / floor",
                f[f"{key}_ratio"],
                MAX_FLOOR_RATIO,
                f"upstream query time {what} / its floor = {f[f'{key}_ratio']:.2f} at "
                f"{largest} models ({f[f'exporter_{key}_s'] * 1000:.0f} ms / "
                f"{f[f'floor_{key}_s'] * 1000:.0f} ms; target <= {MAX_FLOOR_RATIO})",
            )
        )
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def spread_ms(row: dict[str, float]) -> str:
    return f"{ms(row['median_s'])} / {ms(row['max_s'])}"


def edge_checks(results: dict[int, dict[str, Any]], sidecar: dict[str, Any]) -> list[Check]:
    out = []
    new = results.get(CONCURRENCY_SIZE, {}).get("new_connections")
    if new:
        row = new[NEW_CONNECTION_TARGET]
        failed = sum(r["errors"] for r in new.values())
        out.append(
            Check(
                "/metrics p99, new connection per request",
                row["p99_s"],
                MAX_P99_S,
                f"/metrics p99 = {row['p99_s'] * 1000:.1f} ms with {NEW_CONNECTION_TARGET} clients "
                f"opening a new connection per request at {CONCURRENCY_SIZE} models (target < "
                f"{MAX_P99_S * 1000:.0f} ms); "
                + ", ".join(f"{n}: {r['p99_s'] * 1000:.1f} ms" for n, r in sorted(new.items())),
            )
        )
        out.append(
            Check(
                "new-connection requests failed",
                failed,
                0,
                f"failed requests with a new connection each = {failed} (target 0)",
            )
        )
    for kind, row in sidecar.get("huge", {}).items():
        rss = mb(row["peak_rss_kib"])
        what = "400 MB responses" if kind == "plain" else f"a {row['bomb_bytes']:,}-byte gzip bomb"
        out.append(
            Check(
                f"peak RSS under {kind} responses past the cap",
                rss,
                MAX_HUGE_RSS_MB,
                f"peak RSS = {rss:.1f} MB while the upstream answers every query with {what} "
                f"(target < {MAX_HUGE_RSS_MB:.0f} MB; cap 64 MiB for all responses at once)",
            )
        )
    return out


def edge_table(results: dict[int, dict[str, Any]], sidecar: dict[str, Any]) -> str:
    lines = []
    new = results.get(CONCURRENCY_SIZE, {}).get("new_connections")
    if new:
        lines += [
            "",
            f"| a new connection per request, {CONCURRENCY_SIZE} models | requests | "
            "p50 ms | p99 ms | max ms | failed |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for clients, r in sorted(new.items()):
            lines.append(
                f"| {clients} clients | {r['requests']} | {r['p50_s'] * 1000:.1f} | "
                f"{r['p99_s'] * 1000:.1f} | {r['max_s'] * 1000:.1f} | {r['errors']} |"
            )
    if sidecar.get("huge"):
        lines += ["", "| upstream answering past the cap | peak RSS MB |", "|---|---:|"]
        for kind, row in sidecar["huge"].items():
            lines.append(f"| {kind} | {mb(row['peak_rss_kib']):.1f} |")
    return "\n".join(lines)


def tables(
    results: dict[int, dict[str, Any]], sidecar: dict[str, Any], interval: float, refresh: float
) -> str:
    """The results as Markdown tables."""
    sizes = sorted(results)
    lines = [
        "| models | GPUs | requests/cycle (amortized) | upstream wall ms "
        "| summed query latency ms | Prometheus CPU ms "
        "| exporter CPU ms (min-max) | HTTP client / JSON / rows+publish / compute ms "
        "| CPU / query | CPU µs per model | compute µs per model "
        "| pre-render CPU ms | CPU / query incl. pre-render "
        "| GC passes / ms: in the cycle, in the pre-render |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for n in sizes:
        s = steady(results[n])
        rest = s["cpu_s"] - s["http_cpu_s"] - s["decode_cpu_s"] - s["compute_cpu_s"]
        lines.append(
            f"| {n} | {n * GPUS_PER_NODE} | {s['requests']:g} "
            f"({amortized_requests(results[n], interval, refresh):.2f}) "
            f"| {ms(s['http_span_s'])} | {ms(s['http_wall_s'])} | {ms(s['prometheus_cpu_s'])} "
            f"| {ms(s['cpu_s'])} ({ms(s['cpu_min_s'])}-{ms(s['cpu_max_s'])}) "
            f"| {ms(s['http_cpu_s'])} / {ms(s['decode_cpu_s'])} / {ms(rest)} "
            f"/ {ms(s['compute_cpu_s'])} "
            f"| {query_ratio(s):.3f} | {s['cpu_s'] / n * 1e6:.0f} "
            f"| {s['compute_cpu_s'] / n * 1e6:.0f} | {ms(s['prerender_cpu_s'])} "
            f"| {query_ratio(s, True):.3f} "
            f"| {s['gc_passes']:.1f} / {ms(s['gc_cpu_s'])}, "
            f"{s['prerender_gc_passes']:.1f} / {ms(s['prerender_gc_cpu_s'])} |"
        )
    if all(results[n]["cycles"].get("steady_cycle_gc") for n in sizes):
        lines += [
            "",
            "| models | exporter CPU ms, default GC | GC what-if: CPU ms incl. the collection "
            "| of which gc.collect() ms | compute ms, default GC | compute ms, what-if |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n in sizes:
            a, b = steady(results[n]), results[n]["cycles"]["steady_cycle_gc"]
            lines.append(
                f"| {n} | {ms(a['cpu_s'])} | {ms(b['cpu_s'])} | {ms(b['gc_collect_s'])} "
                f"| {ms(a['compute_cpu_s'])} | {ms(b['compute_cpu_s'])} |"
            )
    lines += tracker_table(results)
    names = results[sizes[0]]["cycles"]["lookback_queries"]
    lines += [
        "",
        "| models | look-back cycle: requests | "
        + " | ".join(f"{name} ms" for name in names)
        + " | slowest per-cycle query |",
        "|---:|---:|" + "---:|" * len(names) + "---|",
    ]
    for n in sizes:
        c = results[n]["cycles"]
        per_cycle = {k: v for k, v in c["query_wall_s"].items() if k not in names}
        slowest = max(per_cycle, key=per_cycle.__getitem__)
        lines.append(
            f"| {n} | {c['first_cycle']['requests']:g} | "
            + " | ".join(ms(c["query_wall_s"][name]) for name in names)
            + f" | {slowest} {ms(per_cycle[slowest])} ms |"
        )
    c = results[sizes[-1]]["cycles"]
    per_cycle = {k: v for k, v in c["query_wall_s"].items() if k not in names}
    lines += [
        "",
        f"Per-cycle queries at {sizes[-1]} models, ms: "
        + ", ".join(f"{k} {ms(v)}" for k, v in per_cycle.items()),
    ]
    lines += [
        "",
        "| models | series on /metrics | text KB | gzip KB | pre-render in the cycle ms (wall) "
        "| pre-render on a fresh cache ms | text + gzip ms | OpenMetrics + gzip ms "
        "| generate_latest ms | cache hit µs | plain request (kept body) ms "
        "| RSS MiB after imports | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        c = results[n]["cycles"]
        lines.append(
            f"| {n} | {c['series']:,} | {c['body_bytes'] / 1000:.0f} "
            f"| {c['body_gzip_bytes'] / 1000:.1f} | {ms(c['steady_cycle']['prerender_s'])} "
            f"| {ms(c['prerender_s'])} | {ms(c['render_text_s'])} "
            f"| {ms(c['render_openmetrics_s'])} | {ms(c['generate_latest_s'])} "
            f"| {c['cache_hit_s'] * 1e6:.1f} | {ms(c['plain_hit_s'])} "
            f"| {mib(c['rss_after_imports_kib'])} | {mib(c['peak_rss_kib'])} |"
        )
    lines += [
        "",
        "| models | first scrape after a cycle, Prometheus 2.42 headers: median / max ms "
        "| same, plain | same, Prometheus 3 headers | a scrape arriving at publish "
        "| first scrape after a cycle without the pre-render (what-if, as at 2db771d) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        p = results[n]["cycles"]["scrapes"]
        lines.append(
            f"| {n} | {spread_ms(p['after_cycle'])} | {spread_ms(p['plain_after_cycle'])} "
            f"| {spread_ms(p['prometheus3_after_cycle'])} | {spread_ms(p['at_publish'])} "
            f"| {spread_ms(p['lazy_after_cycle'])} |"
        )
    lines += [
        "",
        "| models | one keep-alive scraper: /metrics p50 / p99 ms "
        "| same, Nagle on (what-if, as at 2db771d) | /healthz p50 ms | same, Nagle on |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        single = results[n]["single_scraper"]
        a, b = single["exporter"], single["exporter_nagle"]
        lines.append(
            f"| {n} | {ms(a['metrics']['p50_s'])} / {ms(a['metrics']['p99_s'])} "
            f"| {ms(b['metrics']['p50_s'])} / {ms(b['metrics']['p99_s'])} "
            f"| {ms(a['healthz']['p50_s'])} | {ms(b['healthz']['p50_s'])} |"
        )
    if CONCURRENCY_SIZE in results:
        conc = results[CONCURRENCY_SIZE]["concurrency"]
        lines += [
            "",
            f"| {CONCURRENCY} scrapers, {CONCURRENCY_SIZE} models | headers | scrapes/s "
            "| p50 ms | p90 ms | p99 ms | max ms | server CPU ms per scrape | peak RSS MiB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, r in conc.items():
            run = LOAD_RUNS[key]
            lines.append(
                f"| {run.title} | {run.headers} | {r['per_second']:.0f} "
                f"| {ms(r['p50_s'])} | {ms(r['p90_s'])} | {ms(r['p99_s'])} "
                f"| {ms(r['max_s'])} | {r['server_cpu_per_request_s'] * 1000:.2f} "
                f"| {mib(r['peak_rss_kib'] or 0)} |"
            )
    lines += [
        "",
        "| sidecar page set | DCGM lines | vLLM lines | parse + compute median ms | p99 ms "
        "| of which parse ms | with loopback HTTP median ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in ("bare", "padded"):
        r = sidecar[label]
        lines.append(
            f"| {label} | {r['dcgm_lines']} | {r['vllm_lines']} | {r['cycle_median_s'] * 1000:.2f} "
            f"| {r['cycle_p99_s'] * 1000:.2f} | {r['parse_median_s'] * 1000:.2f} "
            f"| {r['http_cycle_median_s'] * 1000:.2f} |"
        )
    return "\n".join(lines) + "\n"


def tracker_table(results: dict[int, dict[str, Any]]) -> list[str]:
    """The engine's look-back tracker per cycle: fresh (the per-size runs' few cycles) and
    after a full 7-day look-back (the full-lookback worker)."""
    lines = [
        "",
        "| models | tracker, fresh: observe / prune / history ms "
        "| after 7 days: buckets | observe / prune / history ms "
        "| exporter CPU ms | compute ms | CPU / query | RSS MiB before → after filling "
        "| peak RSS MiB | gc.collect() ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def passes(t: dict[str, float]) -> str:
        return f"{ms(t['observe_s'])} / {ms(t['prune_s'])} / {ms(t['history_s'])}"

    for n in sorted(results):
        row = f"| {n} | {passes(results[n]['cycles']['tracker'])} "
        fl = results[n].get("full_lookback")
        if fl is None:
            lines.append(row + "| n/a |" + " |" * 7)
            continue
        f = fl["steady_cycle"]
        lines.append(
            row + f"| {fl['tracker']['buckets']:,.0f} | {passes(fl['tracker'])} "
            f"| {ms(f['cpu_s'])} | {ms(f['compute_cpu_s'])} | {query_ratio(f):.3f} "
            f"| {mib(fl['rss_before_fill_kib'])} → {mib(fl['rss_filled_kib'])} "
            f"| {mib(fl['peak_rss_kib'])} | {ms(fl['gc_full_collection_s'])} |"
        )
    return lines


def duration(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:g} h"


def lookback_table(
    results: dict[int, dict[str, Any]], runs: list[dict[str, Any]], timeout: float
) -> str:
    """Look-back query time against history length at LOOKBACK_MODELS models, and a straight
    line through it."""
    rows = []
    if LOOKBACK_MODELS in results:
        c = results[LOOKBACK_MODELS]["cycles"]
        names = c["lookback_queries"]
        row = {name: c["query_wall_s"][name] for name in names}
        row["hours"] = HISTORY_SECONDS / 3600
        row["per_cycle"] = None  # the cycles ran them concurrently: not comparable
        rows.append(row)
    rows += runs
    if len(rows) < 2:
        return ""
    names = [k for k in rows[-1] if k not in ("hours", "samples", "per_cycle")]
    lines = [
        "",
        f"| history, {LOOKBACK_MODELS} models | "
        + " | ".join(f"{name} s" for name in names)
        + " | the 7 per-cycle queries one after another s |",
        "|---:|" + "---:|" * len(names) + "---:|",
    ]
    for row in sorted(rows, key=lambda r: r["hours"]):
        lines.append(
            f"| {duration(row['hours'])} | "
            + " | ".join(f"{row[name]:.2f}" for name in names)
            + (f" | {row['per_cycle']:.2f} |" if row["per_cycle"] is not None else " | – |")
        )
    hours = [r["hours"] for r in rows]
    lines.append("")
    for name in names:
        slope, intercept = statistics.linear_regression(hours, [r[name] for r in rows])
        week = intercept + slope * 168
        lines.append(
            f"{name}: {intercept:.3f} s + {slope * 1000:.1f} ms per hour of history; a straight "
            f"line (an extrapolation) puts 7 days, the default utilization.lookback, at about "
            f"{week:.1f} s (prometheus.timeout default: {timeout:g} s)"
        )
    return "\n".join(lines) + "\n"


def scaling(results: dict[int, dict[str, Any]]) -> str:
    """Least-squares line of exporter CPU and upstream time against models, and ratios."""
    sizes = sorted(results)
    if len(sizes) < 2:
        return ""
    lines = []
    series = [
        ("exporter CPU", lambda n: steady(results[n])["cpu_s"]),
        ("upstream wall", lambda n: steady(results[n])["http_span_s"]),
        ("summed query latency", lambda n: steady(results[n])["http_wall_s"]),
        ("pre-render CPU", lambda n: steady(results[n])["prerender_cpu_s"]),
    ]
    if all(full(results[n]) for n in sizes):
        series.append(
            (
                "exporter CPU, 7-day look-back",
                lambda n: results[n]["full_lookback"]["steady_cycle"]["cpu_s"],
            )
        )
    for label, get in series:
        ys = [get(n) for n in sizes]
        slope, intercept = statistics.linear_regression(sizes, ys)
        r = statistics.correlation(sizes, ys) if len(sizes) > 2 else 1.0
        lines.append(
            f"{label}: {intercept * 1000:.1f} ms + {slope * 1e6:.1f} µs x models "
            f"(r^2 = {r * r:.4f})"
        )
    base = sizes[0]
    for n in sizes[1:]:
        growth = [f"{label} x{get(n) / get(base):.1f}" for label, get in series]
        lines.append(f"{base} -> {n} models (x{n / base:g}): " + ", ".join(growth))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10 and 200, short runs")
    parser.add_argument(
        "--sizes", help="comma-separated model counts (default 10,50,200,1000,2000)"
    )
    parser.add_argument("--cycles", type=int, help="steady cycles per size (default 8, quick 3)")
    parser.add_argument(
        "--lookback-hours",
        help="history lengths for the look-back query runs (default 2,6,24; quick: none)",
    )
    parser.add_argument(
        "--no-what-if", action="store_true", help="skip the GC what-if cycles (quick skips them)"
    )
    parser.add_argument(
        "--no-full-lookback",
        action="store_true",
        help="skip the runs after a full 7-day look-back (their RSS and CPU checks too)",
    )
    parser.add_argument("--renders", type=int, default=5, help="renders timed per size")
    parser.add_argument("--floor-runs", type=int, default=3, help="runs per query, floor")
    parser.add_argument("--probes", type=int, help="cycles per scrape probe (default 5, quick 3)")
    parser.add_argument("--load-seconds", type=float, help="per load run (default 10, quick 3)")
    parser.add_argument("--sidecar-runs", type=int, help="sidecar cycles (default 500, quick 100)")
    parser.add_argument("--workdir", type=Path, help="for Prometheus data (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the Prometheus data")
    parser.add_argument("--profile", action="store_true", help="cProfile one cycle, largest size")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--markdown", type=Path, help="write the result tables here")
    args = parser.parse_args(argv)
    args.sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else SIZES)
    )
    args.cycles = args.cycles or (3 if args.quick else 8)
    args.full_cycles = 2 if args.quick else 3
    args.full_lookback = not args.no_full_lookback
    args.probes = args.probes or (3 if args.quick else 5)
    hours = (
        args.lookback_hours if args.lookback_hours is not None else ("" if args.quick else "2,6,24")
    )
    args.lookback_hours = tuple(float(h) for h in hours.split(",") if h)
    args.what_if = not (args.quick or args.no_what_if)
    args.load_seconds = args.load_seconds or (3.0 if args.quick else 10.0)
    args.single_seconds = 1.0 if args.quick else 2.0
    args.sidecar_runs = args.sidecar_runs or (100 if args.quick else 500)

    try:
        info = machine()
        require_binary("promtool")
    except AssertionError as exc:
        log(f"bench: {exc}")
        return 2
    log("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lce-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        for models in sorted(args.sizes):
            log(f"size {models} models ({models * GPUS_PER_NODE} GPUs)")
            results[models] = measure_size(models, workdir, args)
        log("sidecar")
        sidecar = run_worker("sidecar", "--runs", str(args.sidecar_runs))
        log("an upstream answering past the size cap: 400 MB, and a gzip bomb")
        sidecar["huge"] = {
            kind: peak_rss_under_huge_responses(workdir, bomb=kind == "bomb")
            for kind in ("plain", "bomb")
        }
        history = []
        for hours in args.lookback_hours:
            log(f"look-back queries over {hours:g} h of history")
            history.append(measure_lookback(hours, workdir, args))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    defaults = build(default_document())
    interval, refresh = defaults.exporter.interval, defaults.utilization.refresh
    timeout = defaults.prometheus.timeout
    report = tables(results, sidecar, interval, refresh) + lookback_table(results, history, timeout)
    curve = scaling(results)
    results_checks = checks(results, sidecar)
    print(report)
    print(curve)
    for n in sorted(results):
        c = results[n]["cycles"]
        lookback = sum(c["query_wall_s"][k] for k in c["lookback_queries"])
        if lookback > 0.5 * timeout:
            print(
                f"[note] the look-back queries took {lookback:.1f} s at {n} models over "
                f"{HISTORY_SECONDS / 60:.0f} minutes of history (default prometheus.timeout "
                f"{timeout:g} s per query)"
            )
    print(edge_table(results, sidecar))
    largest = max(results)
    print(f"\nThe per-cycle queries and their floor at {largest} models:\n")
    print(floor.table(results[largest]["floor"]))
    rules = results[largest].get("floor_with_rules", {})
    if "recorded" in rules:
        print(
            f"\nWith the recording rules evaluated: the recorded reads take "
            f"{rules['recorded_sum_s'] * 1000:.0f} ms summed, {rules['recorded_wall_s'] * 1000:.0f}"
            f" ms all at once ({rules['recorded_sum_s'] / rules['exporter_sum_s']:.3f} of the "
            f"live queries' {rules['exporter_sum_s'] * 1000:.0f} ms)"
        )
    for check in results_checks:
        mark = "n/a " if not check.applies else ("ok  " if check.ok else "MISS")
        print(f"[{mark}] {check.text}")
    if args.profile:
        print(results[max(args.sizes)]["cycles"]["profile"])
    print(f"\n({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "results": results, "sidecar": sidecar, "lookback": history},
                indent=1,
            )
        )
    if args.markdown:
        args.markdown.write_text(report + "\n```\n" + curve + "```\n")
    return 0 if all(c.ok for c in results_checks) else 1


if __name__ == "__main__":
    sys.exit(main())
