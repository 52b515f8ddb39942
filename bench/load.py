"""A closed-loop load generator for /metrics: `concurrency` threads, each with its own
keep-alive connection (reopened when the server closes it, as the stock server does after
every response), requesting back to back for `duration` seconds after a warm-up.

Python threads share one interpreter lock, so the latencies include some client-side
queueing; the /healthz run against the same server shows that floor.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from dataclasses import dataclass

PROMETHEUS_HEADERS = {
    # What Prometheus 2.42 sends when it scrapes.
    "Accept": "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
PLAIN_HEADERS: dict[str, str] = {}  # curl-like: text format, no compression


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float
    body_bytes: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": self.seconds,
            "per_second": self.per_second,
            "p50_s": self.p50_s,
            "p90_s": self.p90_s,
            "p99_s": self.p99_s,
            "max_s": self.max_s,
            "body_bytes": self.body_bytes,
        }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def hammer(
    port: int,
    path: str = "/metrics",
    headers: dict[str, str] | None = None,
    concurrency: int = 20,
    duration: float = 5.0,
    warmup: float = 1.0,
) -> LoadResult:
    headers = dict(headers or {})
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    sizes = [0] * concurrency
    barrier = threading.Barrier(concurrency + 1)
    window: dict[str, float] = {}

    def run(slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out = latencies[slot]
        barrier.wait()
        measure_from, end = window["from"], window["end"]
        while True:
            started = time.perf_counter()
            if started >= end:
                break
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    errors[slot] += 1
                    continue
            except (OSError, http.client.HTTPException):
                errors[slot] += 1
                conn.close()
                continue
            finished = time.perf_counter()
            if started >= measure_from:
                out.append(finished - started)
                sizes[slot] = len(body)
        conn.close()

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    window["from"], window["end"] = now + warmup, now + warmup + duration
    barrier.wait()
    for thread in threads:
        thread.join(duration + warmup + 120)
    merged = sorted(value for slot in latencies for value in slot)
    return LoadResult(
        requests=len(merged),
        errors=sum(errors),
        seconds=duration,
        p50_s=statistics.median(merged) if merged else float("nan"),
        p90_s=percentile(merged, 0.90),
        p99_s=percentile(merged, 0.99),
        max_s=merged[-1] if merged else float("nan"),
        body_bytes=max(sizes),
    )
