"""A requests transport adapter whose connections register their sockets with the deadline of
the thread that uses them (`exporter.deadlines.Deadline.running`), so a request's deadline
covers connect, TLS handshake, headers and body."""

from __future__ import annotations

import socket
from typing import Any

import requests.adapters
import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from exporter.deadlines import watch_current


class _WatchedConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        watch_current(sock)  # before a TLS handshake: a stalled handshake is covered too
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch_current(self.sock)  # a pooled connection, reused
        super().request(*args, **kwargs)


class _WatchedTlsConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        watch_current(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch_current(self.sock)
        super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedTlsConnection


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """Connections that register their sockets with the running thread's `Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TlsPool}
