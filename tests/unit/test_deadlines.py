"""Deadlines for work on sockets: a deadline that passes shuts its sockets down, one released
in time does not, and released deadlines do not pile up in memory however many requests a
second end early."""

from __future__ import annotations

import socket
import time

from exporter.deadlines import Deadline, _watchdog


def test_a_deadline_that_passes_shuts_its_socket_down() -> None:
    ours, theirs = socket.socketpair()
    try:
        with Deadline.running(0.05) as deadline:
            deadline.watch(ours)
            ours.settimeout(5)
            started = time.monotonic()
            assert ours.recv(1) == b""  # the shutdown ends the blocked read
        assert deadline.expired and time.monotonic() - started < 2
    finally:
        ours.close()
        theirs.close()


def test_a_released_deadline_leaves_its_socket_alone() -> None:
    ours, theirs = socket.socketpair()
    try:
        with Deadline.running(0.05) as deadline:
            deadline.watch(ours)
        time.sleep(0.2)
        assert not deadline.expired
        theirs.sendall(b"x")
        ours.settimeout(1)
        assert ours.recv(1) == b"x"
    finally:
        ours.close()
        theirs.close()


def test_released_deadlines_do_not_accumulate() -> None:
    watchdog = _watchdog()
    before = len(watchdog)
    for _ in range(5000):
        with Deadline.running(15):
            pass
    assert len(watchdog) - before <= 2 * watchdog.SWEEP_AT
