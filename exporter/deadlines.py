"""Deadlines for work on sockets: a request to an upstream, a request from a client.

Socket timeouts restart on every read, so a peer that trickles one line every few seconds
holds an exchange far past its timeout. Work run under a `Deadline` registers its sockets
with it (`watch`, or `watch_current` for the deadline of the running thread), and one
watchdog thread shuts those sockets down when the deadline passes, which ends any read or
write blocked on them at once. The work then fails, and the caller, seeing
`deadline.expired`, reports a timeout.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator

_local = threading.local()


class Deadline:
    """The moment a request must be over by; the sockets it uses are shut down then."""

    __slots__ = ("_lock", "_sockets", "at", "expired", "released")

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self.released = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            late = self.expired
        if late:
            _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def release(self) -> None:
        """The request is over: its sockets (back in the pool) are no longer watched."""
        with self._lock:
            self._sockets = []
            self.released = True

    @staticmethod
    @contextlib.contextmanager
    def running(seconds: float) -> Iterator[Deadline]:
        """A deadline for the request made inside the block, by this thread."""
        deadline = Deadline(seconds)
        _local.deadline = deadline
        _watchdog().add(deadline)
        try:
            yield deadline
        finally:
            _local.deadline = None
            deadline.release()
            _watchdog().discard(deadline)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def watch_current(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_local, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _Watchdog:
    """One daemon thread expiring deadlines in order. A deadline released before it passes
    stays in the heap until the heap is mostly such deadlines, then they are swept out at
    once: at hundreds of requests a second, keeping each until its moment would hold every
    request of the last REQUEST_SECONDS in memory."""

    SWEEP_AT = 64  # released deadlines in the heap before a sweep is considered

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        # Released deadlines still in the heap (give or take one that expired just before
        # its release: the sweep, which counts afresh, puts that right).
        self._released = 0
        self._order = itertools.count()
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="http-deadlines", daemon=True).start()

    def add(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            self._wake.notify()

    def discard(self, deadline: Deadline) -> None:
        """`deadline` was released: forget it, at the latest in the next sweep."""
        with self._wake:
            self._released += 1
            if self._released >= self.SWEEP_AT and 2 * self._released > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].released]
                heapq.heapify(self._heap)
                self._released = 0

    def __len__(self) -> int:
        with self._wake:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap:
                    self._wake.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if deadline.released:
                    self._released -= 1
                    continue
            deadline.expire()


_watchdog_lock = threading.Lock()
_watchdog_instance: _Watchdog | None = None


def _watchdog() -> _Watchdog:
    global _watchdog_instance
    with _watchdog_lock:
        if _watchdog_instance is None:
            _watchdog_instance = _Watchdog()
        return _watchdog_instance
