"""An HTTP server for a simulated cluster's pages: /vllm/<pod>/metrics and
/dcgm/<node>/metrics, read at the current time of a (replaceable) clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter.demo.simulation import SimCluster, page, targets


def _stamp(text: str, t: float) -> str:
    """The page with every sample line ending in `t` as a millisecond timestamp."""
    stamp = f" {int(t * 1000)}"
    return "\n".join(
        line + stamp if line and not line.startswith("#") else line for line in text.split("\n")
    )


class _Handler(BaseHTTPRequestHandler):
    server: SimulatedEndpoints

    def do_GET(self) -> None:
        target = self.server.routes.get(self.path.split("?", 1)[0])
        if target is None:
            body, status = b"not found\n", 404
        else:
            now = self.server.clock()
            text = page(self.server.cluster, target, now)
            if self.server.stamped:
                text = _stamp(text, now)
            body, status = text.encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SimulatedEndpoints(ThreadingHTTPServer):
    """Serves every target page of `cluster`; `cluster` may be swapped at run time."""

    daemon_threads = True

    def __init__(
        self,
        cluster: SimCluster,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        stamped: bool = False,
    ) -> None:
        """`stamped`: every sample carries the time its value was computed for."""
        super().__init__((host, port), _Handler)
        self.clock = clock or (lambda: time.time())  # late-bound: freezegun can move it
        self.stamped = stamped
        self.set_cluster(cluster)
        self._thread: threading.Thread | None = None

    def set_cluster(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.routes = {t.path: t for t in targets(cluster)}

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> SimulatedEndpoints:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="sim")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
