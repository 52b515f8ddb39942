"""A fault-injecting HTTP proxy for integration tests: it sits on 127.0.0.1 (a free port from
the OS) in front of a real Prometheus and passes every request through, except that, on
demand, it answers /api/v1/query requests (all of them, or only chosen PromQL expressions)
with a fault: a canned reply (HTTP 500/422/503, an HTML page, a {"status":"error"} envelope),
a delay, a trickled body, an oversized body, a rewritten result (values replaced, items
dropped), a truncated body or a reset connection. It can also stop listening altogether
(connections refused) and listen again on the same port.

Every request is recorded with the fault it met, so a test can check a fault was applied.

`SimProcess` serves the simulated cluster's pages from a child process, every sample stamped
with its time, so that neither work in the test process (holding the GIL) nor a loaded machine
skews the rates Prometheus computes from them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.simulation import SimCluster
from tests.harness import free_port

QUERY_PATH = "/api/v1/query"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: from the upstream, or made up."""

    status: int
    body: bytes
    content_type: str = "application/json"


class Fault:
    """How the proxy answers a matching request; subclasses override `respond`."""

    name = "fault"

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Reply(Fault):
    """A canned answer instead of the upstream's."""

    def __init__(self, status: int, body: bytes | str, content_type: str = "") -> None:
        self.answer = Answer(
            status,
            body.encode() if isinstance(body, str) else body,
            content_type or "application/json",
        )
        self.name = f"reply {status}"

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        handler.send_answer(self.answer)


def json_reply(status: int, document: Any) -> Reply:
    return Reply(status, json.dumps(document), "application/json")


def html_reply(status: int, title: str = "Sign in") -> Reply:
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n"
        f"<body><h1>{title}</h1><p>nginx</p></body></html>\n"
    )
    return Reply(status, page, "text/html; charset=utf-8")


def error_envelope(status: int, error_type: str, error: str) -> Reply:
    return json_reply(status, {"status": "error", "errorType": error_type, "error": error})


class Delay(Fault):
    """The upstream's answer, after `seconds` (cut short when the fault is cleared)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.name = f"delay {seconds:g}s"

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        handler.proxy.released.wait(self.seconds)
        handler.send_answer(forward())


class Trickle(Fault):
    """The upstream's answer with headers at once, then the body one byte every `pause`
    seconds (the rest at once when the fault is cleared)."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.name = f"trickle {pause:g}s/byte"

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        answer = forward()
        released = handler.proxy.released
        handler.send_head(answer.status, answer.content_type, len(answer.body))
        for index in range(len(answer.body)):
            if released.is_set():
                handler.wfile.write(answer.body[index:])
                break
            handler.wfile.write(answer.body[index : index + 1])
            handler.wfile.flush()
            released.wait(self.pause)
        handler.wfile.flush()


class Oversized(Fault):
    """A 200 JSON answer of `size` bytes (a valid envelope padded out), streamed in chunks;
    `sent` lists, per answer, the bytes written before the client hung up."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent: list[int] = []
        self.name = f"oversized {size} bytes"

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        head = b'{"status":"success","data":{"resultType":"vector","result":[]},"padding":"'
        tail = b'"}'
        handler.send_head(200, "application/json", self.size)
        chunk = b"x" * 65536
        remaining = self.size - len(head) - len(tail)
        sent = 0
        try:
            handler.wfile.write(head)
            sent += len(head)
            while remaining > 0:
                piece = chunk[: min(remaining, len(chunk))]
                handler.wfile.write(piece)
                sent += len(piece)
                remaining -= len(piece)
            handler.wfile.write(tail)
            sent += len(tail)
        except OSError:
            handler.close_connection = True
        finally:
            self.sent.append(sent)


class Rewrite(Fault):
    """The upstream's answer with its JSON document passed through `change` (which edits it
    in place), e.g. to replace result values or drop result items."""

    def __init__(self, change: Callable[[dict], None], name: str = "rewrite") -> None:
        self.change = change
        self.name = name

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        answer = forward()
        document = json.loads(answer.body)
        self.change(document)
        handler.send_answer(Answer(answer.status, json.dumps(document).encode()))


class EachQuery(Fault):
    """A fault of its own for each PromQL expression (the others pass through)."""

    def __init__(self, faults: Mapping[str, Fault], name: str) -> None:
        self.faults = dict(faults)
        self.name = name

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        fault = self.faults.get(handler.query)
        if fault is None:
            handler.send_answer(forward())
        else:
            fault.respond(handler, forward)


class Truncate(Fault):
    """The upstream's headers (with the full Content-Length) and half its body, then the
    connection closes: an upstream dying mid-response."""

    name = "truncate"

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        answer = forward()
        handler.send_head(answer.status, answer.content_type, len(answer.body))
        handler.wfile.write(answer.body[: len(answer.body) // 2])
        handler.wfile.flush()
        handler.abort()


class Reset(Fault):
    """No answer: the connection is reset as soon as the request is read."""

    name = "reset"

    def respond(self, handler: ProxyHandler, forward: Callable[[], Answer]) -> None:
        handler.abort()


@dataclass(frozen=True)
class Hit:
    """One request the proxy saw: the PromQL (empty for other paths) and the fault met."""

    at: float
    query: str
    fault: str | None


class ProxyHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like a real Prometheus
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stalls

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy

    def setup(self) -> None:
        super().setup()
        self.proxy._opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.proxy._closed(self.connection)

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query).get("query", [""])[0] if split.path == QUERY_PATH else ""
        fault = self.proxy.fault_for(split.path, query)
        self.query = query
        self.proxy._record(Hit(time.monotonic(), query, None if fault is None else fault.name))
        forward = self._forward
        try:
            if fault is None:
                self.send_answer(forward())
            else:
                fault.respond(self, forward)
        except OSError:  # the client hung up (as it should past its timeout or size cap)
            self.close_connection = True

    def _forward(self) -> Answer:
        host, port = self.proxy.upstream
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            connection.request("GET", self.path, headers={"Accept": "application/json"})
            response = connection.getresponse()
            body = response.read()
            content_type = response.getheader("Content-Type", "application/json")
            return Answer(response.status, body, content_type)
        finally:
            connection.close()

    def send_head(self, status: int, content_type: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def send_answer(self, answer: Answer) -> None:
        self.send_head(answer.status, answer.content_type, len(answer.body))
        self.wfile.write(answer.body)

    def abort(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0), answering nothing more."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-fault are expected


class FaultProxy:
    """A proxy on 127.0.0.1 in front of `upstream_url` (http://host:port)."""

    def __init__(self, upstream_url: str) -> None:
        split = urlsplit(upstream_url)
        self.upstream = (split.hostname or "127.0.0.1", split.port or 80)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self._only: frozenset[str] | None = None
        self._connections: set[socket.socket] = set()
        self.hits: list[Hit] = []
        self.released = threading.Event()
        self.port = free_port()  # kept for every listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- listening

    def listen(self) -> FaultProxy:
        """Accept connections on the proxy's port (again)."""
        if self._server is not None:
            return self
        deadline = time.monotonic() + 5
        while True:
            try:
                server = _Server(("127.0.0.1", self.port), self)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def refuse(self) -> None:
        """Stop listening and drop every open connection: the upstream is gone (clients
        get `connection refused`)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.released.set()
        self.refuse()

    # ---- faults

    def inject(self, fault: Fault, only: Collection[str] | None = None) -> None:
        """Answer /api/v1/query requests with `fault`: all of them, or only those whose
        PromQL is in `only`."""
        with self._lock:
            self.released = threading.Event()
            self._fault = fault
            self._only = None if only is None else frozenset(only)

    def clear(self) -> None:
        """Pass everything through again; faults in progress finish at once."""
        with self._lock:
            self._fault = None
            self._only = None
            self.released.set()

    def fault_for(self, path: str, query: str) -> Fault | None:
        with self._lock:
            if self._fault is None or path != QUERY_PATH:
                return None
            if self._only is not None and query not in self._only:
                return None
            return self._fault

    def faulted(self, since: float = 0.0) -> list[Hit]:
        """Requests that met a fault (after monotonic time `since`)."""
        with self._lock:
            return [hit for hit in self.hits if hit.fault is not None and hit.at >= since]

    # ---- bookkeeping

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)


# ---- the simulated endpoints, in a process of their own


def _serve_simulation(cluster: SimCluster, connection: Connection) -> None:
    server = SimulatedEndpoints(cluster, stamped=True).start()
    try:
        connection.send(server.address)
        while True:
            message = connection.recv()
            if message is None:
                break
            server.set_cluster(message)
            connection.send(True)
    except (EOFError, OSError):
        pass  # the parent went away
    finally:
        server.stop()


class SimProcess:
    """The simulated endpoints of `cluster` (the pages `SimulatedEndpoints` serves) in a child
    process; `set_cluster` swaps the cluster there and returns once the child serves it.

    Every sample carries the time its value was computed for (Prometheus honours exposed
    timestamps), so the rates Prometheus computes stay exact when a loaded machine delays a
    scrape: a 50 ms delay would otherwise skew a 3 s rate by a few percent."""

    def __init__(self, cluster: SimCluster) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self.process = context.Process(
            target=_serve_simulation, args=(cluster, child), name="simulation", daemon=True
        )
        self.process.start()
        child.close()
        if not self._connection.poll(30):
            self.stop()
            raise RuntimeError("the simulated endpoints did not start")
        self.address: str = self._connection.recv()
        self.cluster = cluster

    def set_cluster(self, cluster: SimCluster) -> None:
        self._connection.send(cluster)
        if not self._connection.poll(10) or not self._connection.recv():
            raise RuntimeError("the simulated endpoints did not take the new cluster")
        self.cluster = cluster

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self._connection.close()
