"""The measured side of the benchmark, run by bench.py in a fresh process per measurement so
peak RSS belongs to one size alone. Prints one JSON object on stdout.

    worker.py cycles  --prometheus URL --at T [--cycles N] [--renders N] [--prometheus-pid P]
    worker.py full-lookback --prometheus URL --at T [--cycles N]
    worker.py serve   --prometheus URL --at T --server exporter|stock [--lazy] [--nagle]
    worker.py sidecar [--runs N]

Nothing here changes the exporter's code: timing wraps instance methods and listeners from the
outside, and the what-ifs (`--lazy`: no pre-render; `--nagle`: Nagle's algorithm back on)
undo a change of f271da3 the same way, to show the before next to the after. Modules only the
benchmark needs are imported where used, so they do not count in the RSS figures.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from load import PROMETHEUS_HEADERS  # noqa: E402

from exporter.config import Config, build, default_document, merge  # noqa: E402
from exporter.engine import Engine  # noqa: E402
from exporter.gc_tuning import tune_for_cycles  # noqa: E402
from exporter.malloc_tuning import limit_arenas  # noqa: E402
from exporter.model.observations import Observation  # noqa: E402
from exporter.sources.prometheus import PrometheusSource  # noqa: E402

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def status_kib(field: str, pid: str = "self") -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU of another process (/proc/<pid>/stat, clock-tick resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def prometheus_config(url: str, interval: float = 30.0) -> Config:
    return build(
        merge(
            default_document(),
            {"prometheus": {"url": url, "timeout": "120s"}, "exporter": {"interval": interval}},
        )
    )


class Meter:
    """Accumulates the wall time and the calling thread's CPU time spent inside wrapped calls
    (the source runs its queries on a thread pool, so calls overlap), and the span from the
    first call's start to the last call's end."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._lock = threading.Lock()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                end, used = time.perf_counter(), time.thread_time() - cpu
                with self._lock:
                    self.wall[name] = self.wall.get(name, 0.0) + end - wall
                    self.cpu[name] = self.cpu.get(name, 0.0) + used
                    self.calls[name] = self.calls.get(name, 0) + 1
                    self.first[name] = min(self.first.get(name, wall), wall)
                    self.last[name] = max(self.last.get(name, end), end)

        return timed

    def span(self, name: str) -> float:
        return self.last[name] - self.first[name] if name in self.first else 0.0

    def reset(self) -> None:
        with self._lock:
            for table in (self.wall, self.cpu, self.calls, self.first, self.last):
                table.clear()


class GcMeter:
    """CPU of the cyclic garbage collector's passes, by where they ran: in the cycle, or in
    the pre-render that follows it (a pass runs wherever allocations cross the threshold,
    so either may pay for the other's objects)."""

    def __init__(self) -> None:
        self.cpu = {"cycle": 0.0, "prerender": 0.0}
        self.passes = {"cycle": 0, "prerender": 0}
        self.where = "cycle"
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.cpu[self.where] += time.process_time() - self._started
            self.passes[self.where] += 1

    def reset(self) -> None:
        self.cpu = dict.fromkeys(self.cpu, 0.0)
        self.passes = dict.fromkeys(self.passes, 0)

    def around(self, where: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.where = where
            try:
                return fn(*args, **kwargs)
            finally:
                self.where = "cycle"

        return counted


class Bench:
    """An engine on a PrometheusSource evaluated at the fixed time `at`, with the HTTP
    requests, the query calls (HTTP + JSON decoding + samples), compute and the listeners
    (the pre-render, once a server is started) wrapped; it keeps the last observation so
    cycles can be replayed without asking Prometheus again."""

    def __init__(self, url: str, at: float, interval: float = 30.0) -> None:
        config = prometheus_config(url, interval)
        clock = lambda: at  # noqa: E731
        self.at = at
        self.source = PrometheusSource(config, clock=clock)
        self.engine = Engine(config, self.source, clock=clock)
        self.meter = Meter()
        self.gc = GcMeter()
        queries = self.source.queries
        self.lookback_queries = tuple(queries.lookback())
        names = {v: k for k, v in {**queries.per_cycle(), **queries.lookback()}.items()}
        self.per_query: dict[str, list[float]] = {}
        self.query_rows: dict[str, int] = {}
        client = self.source.client
        client.http.get = self.meter.wrap("http", client.http.get)  # type: ignore[method-assign]
        query = self.meter.wrap("query", client.query)

        lock = threading.Lock()

        def query_by_name(promql: str, when: float) -> Any:
            started = time.perf_counter()
            samples = query(promql, when)
            name = names.get(promql, "?")
            with lock:
                self.per_query.setdefault(name, []).append(time.perf_counter() - started)
                self.query_rows[name] = max(self.query_rows.get(name, 0), len(samples))
            return samples

        client.query = query_by_name  # type: ignore[method-assign]
        compute = self.meter.wrap("compute", self.engine.compute)
        self.engine.compute = compute  # type: ignore[method-assign]
        fetch = self.source.fetch
        self.last: Observation | None = None

        def keep(fetch: Callable[[], Observation] = fetch) -> Observation:
            self.last = fetch()
            return self.last

        self.source.fetch = keep  # type: ignore[method-assign]
        tune_for_cycles()  # as `serve` does before its first cycle

    def meter_listeners(self) -> None:
        """Wrap the listeners registered so far (the server's MetricsCache.prerender)."""
        self.engine.listeners[:] = [
            self.gc.around("prerender", self.meter.wrap("prerender", fn))
            for fn in self.engine.listeners
        ]

    def replay(self) -> bool:
        """One cycle on the last observation (compute, publish, listeners; no upstream)."""
        assert self.last is not None
        fetch, observation = self.source.fetch, self.last
        self.source.fetch = lambda: observation  # type: ignore[method-assign]
        try:
            return self.engine.run_cycle()
        finally:
            self.source.fetch = fetch  # type: ignore[method-assign]

    def cycle(self, prometheus_pid: int | None) -> dict[str, float]:
        """One measured cycle. `cpu_s` is the process's CPU over the cycle (every thread: the
        query pool's too) without the listeners' (fetch, compute, publish); the pre-render that
        follows it on the engine's thread is `prerender_*`. Upstream time is both the sum of
        the requests' latencies (`http_wall_s`; they overlap) and the span from the first
        request sent to the last response read (`http_span_s`)."""
        meter, source = self.meter, self.source
        meter.reset()
        self.gc.reset()
        requests_before = requests_made(source)
        prom_cpu = process_cpu_seconds(prometheus_pid) if prometheus_pid else 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        ok = self.engine.run_cycle()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if not ok:
            raise SystemExit(f"cycle failed: {self.engine.state.errors_total}")
        prerender_cpu = meter.cpu.get("prerender", 0.0)
        return {
            "wall_s": wall - meter.wall.get("prerender", 0.0),
            "cpu_s": cpu - prerender_cpu,
            "prerender_s": meter.wall.get("prerender", 0.0),
            "prerender_cpu_s": prerender_cpu,
            "http_wall_s": meter.wall.get("http", 0.0),
            "http_span_s": meter.span("http"),
            "http_cpu_s": meter.cpu.get("http", 0.0),
            "decode_cpu_s": meter.cpu.get("query", 0.0) - meter.cpu.get("http", 0.0),
            "compute_cpu_s": meter.cpu.get("compute", 0.0),
            "gc_cpu_s": self.gc.cpu["cycle"],
            "gc_passes": float(self.gc.passes["cycle"]),
            "prerender_gc_cpu_s": self.gc.cpu["prerender"],
            "prerender_gc_passes": float(self.gc.passes["prerender"]),
            "requests": float(requests_made(source) - requests_before),
            "prometheus_cpu_s": (process_cpu_seconds(prometheus_pid) - prom_cpu)
            if prometheus_pid
            else 0.0,
        }


def requests_made(source: Any) -> int:
    """A source's HTTP requests so far, over all its upstreams."""
    return sum(source.requests_by_upstream.values())


def mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means over cycles (a garbage collection lands in some cycles only: the mean carries its
    amortized cost), plus the spread of the exporter's CPU."""
    out = {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}
    out["cpu_min_s"] = min(row["cpu_s"] for row in rows)
    out["cpu_max_s"] = max(row["cpu_s"] for row in rows)
    return out


def timed_median(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


# What Prometheus 2.42 sends when it scrapes (OpenMetrics, legacy names: one of the two
# bodies MetricsCache pre-renders).
PROMETHEUS_ACCEPT = PROMETHEUS_HEADERS["Accept"]
# What Prometheus 3 sends with its default scrape protocols (prometheus/prometheus scrape
# tests, "default scrape protocols with no escaping"): prometheus_client answers it with a
# content type of its own (escaping=allow-utf-8), which MetricsCache pre-renders once a
# scraper has asked for it.
PROMETHEUS3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def scrape(port: int, accept: str, gzip: bool = True) -> tuple[float, int]:
    """One GET /metrics on a new connection: (seconds, body size as sent)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Accept": accept, **({"Accept-Encoding": "gzip"} if gzip else {})}
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"/metrics answered {response.status}")
        return time.perf_counter() - started, len(body)
    finally:
        conn.close()


def spread(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "max_s": max(values)}


def probe_scrapes(bench: Bench, port: int, runs: int) -> dict[str, dict[str, float]]:
    """Scrape latency around a cycle, as a scraper sees it. The cycles replay the last
    observation (no upstream work: only compute, publish and the listeners)."""
    engine = bench.engine
    out: dict[str, dict[str, float]] = {}
    # Prometheus 3's Accept header, the first scrape after each cycle.
    times = []
    for _ in range(runs):
        bench.replay()
        times.append(scrape(port, PROMETHEUS3_ACCEPT)[0])
    out["prometheus3_after_cycle"] = spread(times)
    # A scrape arriving as the state is published, while the pre-render runs: a listener
    # placed before the pre-render starts it.
    times = []
    for _ in range(runs):
        done: list[float] = []
        threads: list[threading.Thread] = []

        def fire(done: list[float] = done, threads: list[threading.Thread] = threads) -> None:
            def run() -> None:
                done.append(scrape(port, PROMETHEUS_ACCEPT)[0])

            threads.append(threading.Thread(target=run))
            threads[-1].start()

        engine.listeners.insert(0, fire)
        try:
            bench.replay()
        finally:
            engine.listeners.remove(fire)
        for thread in threads:
            thread.join(300)
        times += done
    out["at_publish"] = spread(times)
    # Without the pre-render (what-if, as at 2db771d): the first scrape after a cycle renders.
    listeners = list(engine.listeners)
    engine.listeners.clear()
    try:
        times = []
        for _ in range(runs):
            bench.replay()
            times.append(scrape(port, PROMETHEUS_ACCEPT)[0])
        out["lazy_after_cycle"] = spread(times)
    finally:
        engine.listeners[:] = listeners
    return out


def tracker_pass(engine: Engine) -> dict[str, float]:
    """What the engine's look-back tracker costs per cycle: the engine's observe() calls for
    every model of the last snapshot, its one prune() and the history() calls, replayed at the
    snapshot's time (an idempotent repeat), medians of 3."""
    snapshot = engine.state.snapshot
    assert snapshot is not None
    tracker, t = engine._lookback, snapshot.taken_at

    def observe_all() -> None:
        for f in snapshot.models:
            # The engine passes the share-weighted GPU count; every synthetic pod serves one
            # model (share 1), so it is the model's GPU count here.
            tracker.observe(
                f.key, t, f.total_tokens_per_second, f.active, f.power_w.get("gpu"), f.gpus or 0
            )

    def history_all() -> None:
        for f in snapshot.models:
            tracker.history(f.key)

    observe_s, _ = timed_median(observe_all, 3)
    prune_s, _ = timed_median(lambda: tracker.prune(t), 3)
    history_s, _ = timed_median(history_all, 3)
    return {
        "observe_s": observe_s,
        "prune_s": prune_s,
        "history_s": history_s,
        "buckets": float(sum(len(b) for b in tracker._models.values())),
    }


def run_cycles(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import generate_latest

    from exporter.exposition.server import MetricsCache, start

    rss_imports = status_kib("VmRSS")
    bench = Bench(args.prometheus, args.at)
    engine = bench.engine
    # Serve as `llm-carbon-exporter serve` does (the server registers its pre-render as a
    # listener before the first cycle), and scrape between cycles from this thread, so no
    # scrape overlaps a measured cycle: Prometheus 2.42's Accept header, then a plain one.
    server = start(engine, "127.0.0.1:0")
    port = server.server_address[1]
    bench.meter_listeners()
    first = bench.cycle(args.prometheus_pid)
    scrape(port, PROMETHEUS_ACCEPT)
    scrape(port, "", gzip=False)
    rss_first = status_kib("VmRSS")
    steady, after_cycle, after_cycle_plain = [], [], []
    for _ in range(args.cycles):
        steady.append(bench.cycle(args.prometheus_pid))
        after_cycle.append(scrape(port, PROMETHEUS_ACCEPT)[0])
        after_cycle_plain.append(scrape(port, "", gzip=False)[0])
    peak_rss = status_kib("VmHWM")
    rss_serving = status_kib("VmRSS")
    probes = probe_scrapes(bench, port, args.probes)
    probes["after_cycle"] = spread(after_cycle)
    probes["plain_after_cycle"] = spread(after_cycle_plain)
    server.shutdown()
    server.server_close()
    tracker = tracker_pass(engine)

    snapshot = engine.state.snapshot
    assert snapshot is not None
    models = len(snapshot.models)
    with_power = sum(1 for f in snapshot.models if f.power_w)
    active = sum(1 for f in snapshot.models if f.active)

    # Renders on a fresh cache (not registered as a listener): both pre-rendered bodies, as
    # the engine thread renders them after each cycle, and each format alone.
    prerender_s, _ = timed_median(lambda: MetricsCache(engine).prerender(), args.renders)
    text_s, (text_gz, _) = timed_median(lambda: MetricsCache(engine).gzipped(""), args.renders)
    om_s, (om_gz, _) = timed_median(
        lambda: MetricsCache(engine).gzipped(PROMETHEUS_ACCEPT), args.renders
    )
    cache = MetricsCache(engine)
    cache.prerender()
    hit_s, _ = timed_median(lambda: cache.gzipped(PROMETHEUS_ACCEPT), 1000)
    plain_hit_s, _ = timed_median(
        lambda: cache.body(""), 20
    )  # the first call decompresses and keeps it
    raw_s, raw = timed_median(lambda: generate_latest(cache.registry), args.renders)
    text = gzip.decompress(text_gz)

    steady_gc = []
    if args.gc_what_if:
        # What-if, from the outside: the objects of startup frozen out of the collector's
        # scans, no cyclic collection during a cycle and one full collection after it (its
        # CPU counted in the cycle's).
        gc.collect()
        gc.freeze()
        for _ in range(args.cycles):
            gc.disable()
            try:
                row = bench.cycle(args.prometheus_pid)
            finally:
                gc.enable()
            cpu = time.process_time()
            gc.collect()
            row["gc_collect_s"] = time.process_time() - cpu
            row["cpu_s"] += row["gc_collect_s"]
            steady_gc.append(row)
        gc.unfreeze()
    profile = ""
    if args.profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        bench.cycle(None)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
        profile = out.getvalue()

    queries = {name: statistics.median(values) for name, values in bench.per_query.items()}
    return {
        "models": models,
        "models_with_power": with_power,
        "models_active": active,
        "first_cycle": first,
        "steady_cycle": mean_of(steady),
        "steady_cycle_gc": mean_of(steady_gc) if steady_gc else None,
        "steady_cycles": len(steady),
        "lookback_queries": list(bench.lookback_queries),
        "lookback_requests": first["requests"] - steady[0]["requests"],
        "query_wall_s": queries,
        "query_rows": bench.query_rows,
        "scrapes": probes,
        "tracker": tracker,
        "prerender_s": prerender_s,
        "render_text_s": text_s,
        "render_openmetrics_s": om_s,
        "cache_hit_s": hit_s,
        "plain_hit_s": plain_hit_s,
        "generate_latest_s": raw_s,
        "body_bytes": len(text),
        "body_gzip_bytes": len(text_gz),
        "body_openmetrics_bytes": len(gzip.decompress(om_gz)),
        "body_openmetrics_gzip_bytes": len(om_gz),
        "generate_latest_bytes": len(raw),
        "series": sum(1 for line in text.splitlines() if line and not line.startswith(b"#")),
        "rss_after_imports_kib": rss_imports,
        "rss_after_first_cycle_kib": rss_first,
        "rss_serving_kib": rss_serving,
        "peak_rss_kib": peak_rss,
        "profile": profile,
    }


def fill_lookback(engine: Engine) -> int:
    """Fill the engine's look-back tracker with what a week of cycles leaves in it: every
    model of the last snapshot observed once per bucket over the whole utilization.lookback
    before the snapshot's time, through the tracker's own observe() (so its arrays are the
    ones a real week fills), with activity, throughput and power varied from bucket to
    bucket (a model is inactive in one bucket in four, an idle model in all). Returns the
    buckets written."""
    snapshot = engine.state.snapshot
    assert snapshot is not None
    tracker, now = engine._lookback, snapshot.taken_at
    tracker._models.clear()  # buckets must be in time order: the current bucket comes last
    steps = int(tracker.lookback // tracker.bucket)
    for j in range(steps, 0, -1):
        t = now - j * tracker.bucket
        for i, f in enumerate(snapshot.models):
            active = f.active and (i + j) % 4 != 0
            tps = f.total_tokens_per_second * (1.0 + (j % 10) / 100) if active else 0.0
            power = f.power_w.get("gpu")
            if power is not None:
                power *= 0.9 + (j % 7) / 70
            tracker.observe(f.key, t, tps, active, power, f.gpus or 0)
    tracker.prune(now)
    return sum(len(b) for b in tracker._models.values())


def run_full_lookback(args: argparse.Namespace) -> dict[str, Any]:
    """The exporter after a full utilization.lookback (7 days) of cycles: the tracker filled
    (`fill_lookback`), then real cycles against Prometheus, scraped between cycles as in
    `cycles`. A fresh process, so its RSS is this state's alone."""
    from exporter.exposition.server import start

    bench = Bench(args.prometheus, args.at)
    engine = bench.engine
    server = start(engine, "127.0.0.1:0")
    port = server.server_address[1]
    bench.meter_listeners()
    bench.cycle(args.prometheus_pid)
    scrape(port, PROMETHEUS_ACCEPT)
    scrape(port, "", gzip=False)
    gc.collect()
    rss_before = status_kib("VmRSS")
    buckets = fill_lookback(engine)
    gc.collect()
    rss_filled = status_kib("VmRSS")
    cpu = time.process_time()
    gc.collect()
    gc_full_s = time.process_time() - cpu
    steady = []
    for _ in range(args.cycles):
        steady.append(bench.cycle(args.prometheus_pid))
        scrape(port, PROMETHEUS_ACCEPT)
        scrape(port, "", gzip=False)
    peak_rss = status_kib("VmHWM")
    rss_serving = status_kib("VmRSS")
    server.shutdown()
    server.server_close()
    snapshot = engine.state.snapshot
    assert snapshot is not None
    return {
        "models": len(snapshot.models),
        "buckets_filled": buckets,
        "idle_floor_observed": sum(1 for f in snapshot.models if f.info.idle_source == "observed"),
        "steady_cycle": mean_of(steady),
        "tracker": tracker_pass(engine),
        "gc_full_collection_s": gc_full_s,
        "gc_tracked_objects": len(gc.get_objects()),
        "rss_before_fill_kib": rss_before,
        "rss_filled_kib": rss_filled,
        "rss_serving_kib": rss_serving,
        "peak_rss_kib": peak_rss,
    }


def run_serve(args: argparse.Namespace) -> None:
    """Serve /metrics for the load generator until stdin closes."""
    from prometheus_client import CollectorRegistry, start_http_server

    from exporter.exposition.collector import ExporterCollector
    from exporter.exposition.server import Handler, start

    bench = Bench(args.prometheus, args.at, args.interval or 30.0)
    engine = bench.engine
    if args.server == "exporter":
        if args.nagle:  # what-if, from the outside: Nagle's algorithm on, as at 2db771d
            Handler.disable_nagle_algorithm = False
        server = start(engine, "127.0.0.1:0")  # before the first cycle, as `serve` does
        if args.lazy:  # what-if: no pre-render, the first scrape after a cycle renders
            engine.listeners.clear()
        port = server.server_address[1]
        stop: Callable[[], None] = server.shutdown
    else:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ExporterCollector(engine))
        httpd, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        port = httpd.server_port
        stop = httpd.shutdown
    bench.cycle(None)
    stop_cycles = threading.Event()
    if args.interval:  # keep cycling, as `serve` does: every new state is rendered anew
        threading.Thread(target=engine.run_forever, args=(stop_cycles,), daemon=True).start()
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    sys.stdin.read()
    stop_cycles.set()
    stop()
    print(json.dumps({"peak_rss_kib": status_kib("VmHWM")}), flush=True)


# ---- sidecar


class StaticPages:
    """An HttpFetcher stand-in serving pre-rendered pages: parse + compute without HTTP."""

    def __init__(self, pages: dict[str, list[bytes]]) -> None:
        self.pages = pages
        self.index = 0
        self.requests_made = 0

    def get(self, url: str, params: Any = None) -> tuple[int, bytes]:
        self.requests_made += 1
        return 200, self.pages[url][self.index]

    def scrub(self, text: str) -> str:
        return text

    def close(self) -> None:
        pass


def _serve_pages(pages: dict[str, list[bytes]], index: Any, conn: Any) -> None:
    """Child process: serve pages[path][index.value] over HTTP."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as Go's net/http (dcgm-exporter) and uvicorn (vLLM)

        def do_GET(self) -> None:
            body = pages[self.path][index.value]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    server.serve_forever()


class FixedClock:
    """A clock the benchmark moves by hand, 30 s per cycle."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sidecar_config(namespace: str, pod: str, dcgm_url: str, vllm_url: str) -> Config:
    direct = {
        "dcgm_urls": [dcgm_url],
        "pods": [{"namespace": namespace, "pod": pod, "vllm_urls": [vllm_url]}],
    }
    return build(merge(default_document(), {"source": "direct", "direct": direct}))


def sidecar_cycles(
    config: Config, fetcher: Any, times: list[float], step: Callable[[int], None], warmup: int
) -> list[float]:
    """Wall time of each cycle after `warmup` cycles (which fill the 5-minute window)."""
    from exporter.sources.direct import DirectSource

    clock = FixedClock(times[0])
    source = DirectSource(config, fetcher=fetcher, clock=clock)
    engine = Engine(config, source, clock=clock)
    out = []
    for k, t in enumerate(times):
        step(k)
        clock.t = t
        started = time.perf_counter()
        ok = engine.run_cycle()
        elapsed = time.perf_counter() - started
        if not ok:
            raise SystemExit(f"sidecar cycle failed: {engine.state.errors_total}")
        if k >= warmup:
            out.append(elapsed)
    snapshot = engine.state.snapshot
    if snapshot is None or len(snapshot.models) != 1 or not snapshot.models[0].power_w:
        raise SystemExit("sidecar cycles produced no figures")
    source.close()
    return sorted(out)


def run_sidecar(args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing

    from synthetic import SIDECAR_T0, sidecar_cluster, sidecar_pages

    from exporter.sources.page_parser import parse

    cluster = sidecar_cluster()
    pod = cluster.pods[0]
    warmup = 12  # a full 5-minute window of 30 s cycles before timing
    times = [SIDECAR_T0 + 30.0 * k for k in range(warmup + args.runs)]
    out: dict[str, Any] = {"runs": args.runs}
    for padded in (False, True):
        rendered = [sidecar_pages(cluster, t, padded) for t in times]
        pages = {
            "/dcgm": [d.encode() for d, _ in rendered],
            "/vllm": [v.encode() for _, v in rendered],
        }

        # Parse + compute: the pages handed over in memory, no HTTP.
        fetcher = StaticPages({f"http://local{path}": body for path, body in pages.items()})
        config = sidecar_config(pod.namespace, pod.name, "http://local/dcgm", "http://local/vllm")

        def show(k: int, fetcher: StaticPages = fetcher) -> None:
            fetcher.index = k

        cycles = sidecar_cycles(config, fetcher, times, show, warmup)
        names = config.upstream.metrics
        dcgm_text, vllm_text = rendered[-1]
        dcgm_names = (names.gpu_energy, names.gpu_power, names.gpu_util, names.gpu_engine_active)
        token_names = (names.prompt_tokens, names.generation_tokens)

        def parse_both(
            dcgm: str = dcgm_text,
            vllm: str = vllm_text,
            dcgm_names: tuple[str, ...] = dcgm_names,
            token_names: tuple[str, ...] = token_names,
        ) -> None:
            list(parse(dcgm, dcgm_names))
            list(parse(vllm, token_names))

        parse_s, _ = timed_median(parse_both, args.runs)

        # The same cycles over loopback HTTP, the pages served by a child process.
        index = multiprocessing.Value("i", 0)
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(
            target=_serve_pages, args=(pages, index, child), daemon=True
        )
        server.start()
        try:
            base = f"http://127.0.0.1:{parent.recv()}"
            config = sidecar_config(pod.namespace, pod.name, f"{base}/dcgm", f"{base}/vllm")

            def serve(k: int, index: Any = index) -> None:
                index.value = k

            http_cycles = sidecar_cycles(config, None, times, serve, warmup)
        finally:
            server.terminate()
            server.join(5)
        out["padded" if padded else "bare"] = {
            "dcgm_lines": dcgm_text.count("\n"),
            "vllm_lines": vllm_text.count("\n"),
            "dcgm_bytes": len(dcgm_text),
            "vllm_bytes": len(vllm_text),
            "cycle_median_s": statistics.median(cycles),
            "cycle_p99_s": cycles[int(0.99 * (len(cycles) - 1))],
            "parse_median_s": parse_s,
            "http_cycle_median_s": statistics.median(http_cycles),
            "http_cycle_p99_s": http_cycles[int(0.99 * (len(http_cycles) - 1))],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    cycles = sub.add_parser("cycles")
    full = sub.add_parser("full-lookback")
    serve = sub.add_parser("serve")
    for p in (cycles, full, serve):
        p.add_argument("--prometheus", required=True)
        p.add_argument("--at", type=float, required=True)
    for p in (cycles, full):
        p.add_argument("--cycles", type=int, default=5)
        p.add_argument("--prometheus-pid", type=int)
    cycles.add_argument("--renders", type=int, default=5)
    cycles.add_argument("--probes", type=int, default=3, help="cycles per scrape probe")
    cycles.add_argument("--profile", action="store_true")
    cycles.add_argument("--gc-what-if", action="store_true")
    serve.add_argument("--server", choices=("exporter", "stock"), required=True)
    serve.add_argument("--lazy", action="store_true", help="what-if: no pre-render")
    serve.add_argument("--nagle", action="store_true", help="what-if: Nagle's algorithm on")
    serve.add_argument("--interval", type=float, help="run cycles every this many seconds")
    sidecar = sub.add_parser("sidecar")
    sidecar.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    if args.mode == "serve":
        run_serve(args)
        return
    modes = {"cycles": run_cycles, "full-lookback": run_full_lookback, "sidecar": run_sidecar}
    print(json.dumps(modes[args.mode](args)), flush=True)


if __name__ == "__main__":
    threading.current_thread().name = "bench-worker"
    limit_arenas()  # as `serve` does before its first thread
    main()
