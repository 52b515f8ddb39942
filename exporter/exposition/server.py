"""HTTP endpoints: /metrics, /healthz, /readyz and a landing page at /.

No endpoint changes state or triggers upstream work. The /metrics body is rendered once per
engine state (and staleness, and format) and then served from memory, so concurrent scrapers
cost a dictionary lookup, not a render.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import select
import socket
import sys
import threading
from collections.abc import Callable
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.deadlines import Deadline
from exporter.engine import Engine
from exporter.exposition import guides
from exporter.exposition.collector import ExporterCollector
from exporter.exposition.encoding import Encoded
from exporter.exposition.landing import METHODOLOGY_PATH, TROUBLESHOOTING_PATH, landing_page

log = logging.getLogger("exporter.http")

LISTEN_BACKLOG = 128  # connections the kernel queues before the server accepts them
MAX_CONNECTIONS = 128  # client connections served at once, each on its own thread
IDLE_SECONDS = 30  # an idle keep-alive connection is closed after this long
REQUEST_SECONDS = 15  # to read a request and write its answer, once it has begun
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 28\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections; retry\n"
)


# The current state's families, ready to be written in either format.
Render = Callable[[], Encoded]


class MetricsCache:
    """Rendered /metrics bodies keyed by (state version, staleness, content type).

    Bodies are rendered right after each cycle (`prerender`, on the engine's thread) for the
    content types scrapers asked for in the last few cycles (Prometheus 2 and 3 ask for
    different ones), so a scrape normally finds its body ready. The gzipped body is what
    scrapers ask for; a plain body is decompressed from it on the first plain request of a
    state and kept, so concurrent plain scrapers share one copy."""

    # Pre-rendered before any scrape has said what it wants: text and OpenMetrics.
    PRERENDERED = ("", "application/openmetrics-text; version=1.0.0")
    # A content type nobody asked for in this many cycles is no longer pre-rendered.
    KEEP_CYCLES = 10

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.collector = ExporterCollector(engine)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._lock = threading.Lock()
        self._key: tuple[int, bool] | None = None
        self._bodies: dict[tuple[str, bool], bytes] = {}
        # content type -> (an Accept header that selects it, state version it was last asked at)
        self._asked: dict[str, tuple[str, int]] = {
            choose_encoder(accept)[1]: (accept, engine.state.version) for accept in self.PRERENDERED
        }

    def gzipped(self, accept: str) -> tuple[bytes, str]:
        """(gzipped body, content type) for a scraper's Accept header."""
        return self._gzipped(accept, asked=True)

    def _state_key(self) -> tuple[int, bool]:
        state = self.engine.state
        return state.version, self.engine.is_stale(state)

    def _gzipped(
        self, accept: str, asked: bool, shared: tuple[tuple[int, bool], Render] | None = None
    ) -> tuple[bytes, str]:
        """`shared`: a state key and the one render of it that the pre-render shares between
        the content types it writes."""
        encoder, content_type = choose_encoder(accept)
        # the render reads a state at least as new as the key
        key, render = shared or (self._state_key(), None)
        with self._lock:
            if asked:
                self._asked[content_type] = (accept, key[0])
            if self._key is None or key > self._key:  # versions grow; staleness comes later
                self._key, self._bodies = key, {}
            elif key < self._key:
                # A newer state's bodies are kept (say, the state went stale during the
                # pre-render): serve or add to them, rendering afresh, never the older render.
                render = None
            body = self._bodies.get((content_type, True))
            if body is None:
                body = gzip.compress(self._render(encoder, content_type, render), compresslevel=5)
                self._bodies[(content_type, True)] = body
        return body, content_type

    def _render(
        self,
        encoder: Callable[[CollectorRegistry], bytes],
        content_type: str,
        render: Render | None = None,
    ) -> bytes:
        if "escaping=dots" in content_type:  # renames legal names too: prometheus_client's own
            return encoder(self.registry)
        openmetrics = content_type.startswith("application/openmetrics-text")
        return (render or self.collector.encoded)().body(openmetrics)

    def body(self, accept: str) -> tuple[bytes, bytes, str]:
        """(plain body, gzipped body, content type) for a scraper's Accept header."""
        zipped, content_type = self.gzipped(accept)
        with self._lock:
            plain = self._bodies.get((content_type, False))
            if plain is None:
                plain = gzip.decompress(zipped)
                if self._bodies.get((content_type, True)) is zipped:  # still this state's
                    self._bodies[(content_type, False)] = plain
        return plain, zipped, content_type

    def prerender(self) -> None:
        """Render the bodies asked for recently, the most recently asked first, from one
        render of the state."""
        version = self.engine.state.version
        with self._lock:
            recent = sorted(
                (v for v in self._asked.values() if version - v[1] <= self.KEEP_CYCLES),
                key=lambda item: -item[1],
            )
        shared = self._state_key(), cache(self.collector.encoded)  # once, if a body is missing
        for accept, _ in recent:
            self._gzipped(accept, asked=False, shared=shared)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip: listed (or `*`) without q=0."""
    allowed: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[name.strip().lower()] = q > 0
    return allowed.get("gzip", allowed.get("*", False))


DOCS = {METHODOLOGY_PATH: "methodology", TROUBLESHOOTING_PATH: "troubleshooting"}


class Handler(BaseHTTPRequestHandler):
    server: ExporterHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm holds the
    # second write for the client's delayed ACK (about 40 ms per small response).
    disable_nagle_algorithm = True
    timeout = IDLE_SECONDS

    def handle_one_request(self) -> None:
        """One request on the connection: wait (up to the idle timeout) for it to begin,
        then read it and answer within REQUEST_SECONDS, however slowly the client sends or
        reads; past that the connection is closed."""
        readable, _, _ = select.select([self.connection], [], [], self.timeout)
        if not readable:
            self.close_connection = True
            return
        with Deadline.running(REQUEST_SECONDS) as deadline:
            deadline.watch(self.connection)
            super().handle_one_request()
        if deadline.expired:
            self.close_connection = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        engine = self.server.engine
        if path == "/metrics":
            accept = self.headers.get("Accept", "")
            if accepts_gzip(self.headers.get("Accept-Encoding", "")):
                zipped, content_type = self.server.metrics.gzipped(accept)
                self._send(200, zipped, content_type, {"Content-Encoding": "gzip"})
            else:
                plain, _, content_type = self.server.metrics.body(accept)
                self._send(200, plain, content_type)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            if engine.ready.is_set():
                self._send(200, b"ready\n", "text/plain; charset=utf-8")
            else:
                self._send(
                    503, b"not ready: no successful cycle yet\n", "text/plain; charset=utf-8"
                )
        elif path in DOCS:
            self._send(200, guides.packaged(DOCS[path]), "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, landing_page(engine).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        """GET's status and headers without its body (uptime checkers use HEAD)."""
        self._head = True
        try:
            self.do_GET()
        finally:
            self._head = False

    def do_POST(self) -> None:
        self._send(
            405, b"method not allowed\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"}
        )

    do_PUT = do_DELETE = do_PATCH = do_POST
    _head = False

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class ExporterHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once (more are answered 503 and
    closed), a listen backlog for bursts of new connections, and no traceback when a client
    goes away."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], engine: Engine) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.engine = engine
        self.metrics = MetricsCache(engine)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        engine.listeners.append(self.metrics.prerender)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        with contextlib.suppress(OSError):
            request.settimeout(1.0)
            request.sendall(BUSY)
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not a traceback: a client that resets or times out is routine."""
        exc = sys.exc_info()[1]
        peer = client_address[0] if isinstance(client_address, tuple) else client_address
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("client %s went away: %s", peer, type(exc).__name__)
        else:
            log.warning("request from %s failed: %s: %s", peer, type(exc).__name__, exc)


def parse_listen(listen: str) -> tuple[str, int]:
    """':29877' -> ('0.0.0.0', 29877); '[::1]:9' -> ('::1', 9)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def start(engine: Engine, listen: str) -> ExporterHTTPServer:
    """Serve in a daemon thread; returns the server (call .shutdown() to stop)."""
    server = ExporterHTTPServer(parse_listen(listen), engine)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
