"""Two benchmark measurements of the edge, each in its own exporter process:

- scrapers that open a new connection for every request (20, 50, 100 at once), which a short
  listen backlog turns into SYN retries (seconds);
- peak memory while the upstream answers every query with a response past the size cap
  (400 MB plain, and a gzip bomb), which must stay bounded by the cap.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from load import PROMETHEUS_HEADERS, percentile  # noqa: E402

from tests.harness import free_port, stop_process, wait_until  # noqa: E402


def new_connection_load(
    port: int, clients: int, duration: float = 5.0, warmup: float = 1.0
) -> dict[str, float]:
    """`clients` threads, each opening a new connection for every /metrics request, back to
    back: p50/p99/max latency (connect included) and failures."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = time.perf_counter() + 0.2
    measure_from, end = start + warmup, start + warmup + duration

    def run(slot: int) -> None:
        while time.perf_counter() < start:
            time.sleep(0.001)
        while (began := time.perf_counter()) < end:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                conn.close()
            if not ok:
                errors[slot] += 1
            elif began >= measure_from:
                latencies[slot].append(time.perf_counter() - began)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + warmup + 60)
    merged = sorted(v for slot in latencies for v in slot)
    return {
        "clients": clients,
        "requests": len(merged),
        "errors": sum(errors),
        "p50_s": statistics.median(merged) if merged else float("nan"),
        "p99_s": percentile(merged, 0.99),
        "max_s": merged[-1] if merged else float("nan"),
    }


def gzip_bomb(size: int) -> bytes:
    """`size` bytes of spaces, gzipped (about 1 KB per MB), without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b" " * 1_000_000
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, packer.flush()])


class _Huge(BaseHTTPRequestHandler):
    """Answers every request with `server.body_mb` MB of JSON-looking bytes, generated as it
    is sent (never held here), optionally gzipped into a small bomb."""

    server: _HugeServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.server.bomb is not None:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(self.server.bomb)))
            self.end_headers()
            self.wfile.write(self.server.bomb)
            return
        self.end_headers()  # no length: read until the connection closes
        chunk = b"[" + b"1," * 32767 + b"1]"
        try:
            for _ in range(self.server.body_mb * 1_000_000 // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass  # the client hung up at its cap: what it should do
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


class _HugeServer(ThreadingHTTPServer):
    daemon_threads = True
    body_mb = 400
    bomb: bytes | None = None


def peak_rss_under_huge_responses(workdir: Path, bomb: bool) -> dict[str, Any]:
    """Peak RSS of a `serve` process whose Prometheus answers every query past the 64 MiB
    cap (400 MB, or a gzip bomb of 1 GB in about 1 MB), after a few cycles refusing them."""
    upstream = _HugeServer(("127.0.0.1", 0), _Huge)
    if bomb:
        upstream.bomb = gzip_bomb(1_000_000_000)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    log = workdir / f"huge-{'bomb' if bomb else 'plain'}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "serve",
                "--prometheus-url",
                f"http://127.0.0.1:{upstream.server_address[1]}",
                "--listen",
                f"127.0.0.1:{port}",
                "--interval",
                "2s",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        refused = 'reason="response_too_large",upstream="prometheus"} '

        def cycles_refused() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode()
            finally:
                conn.close()
            line = next((x for x in text.splitlines() if refused in x), "")
            return bool(line) and float(line.rsplit(" ", 1)[1]) >= 3

        wait_until(cycles_refused, 120, "three refused cycles")
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak_kib = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmHWM:"))
        return {"peak_rss_kib": peak_kib, "bomb_bytes": len(upstream.bomb or b"")}
    finally:
        stop_process(process)
        upstream.shutdown()
        upstream.server_close()
