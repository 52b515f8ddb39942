"""Deadlines for work on sockets: a deadline that passes shuts its sockets down, one released
in time does not, and released deadlines do not pile up in memory however many requests a
second end early."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from exporter.deadlines import Deadline, _watchdog


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


def test_a_deadline_that_passes_shuts_its_socket_down(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, _ = pair
    with Deadline.running(0.05) as deadline:
        deadline.watch(ours)
        ours.settimeout(5)
        started = time.monotonic()
        assert ours.recv(1) == b""  # the shutdown ends the blocked read
    assert deadline.expired and time.monotonic() - started < 2


def test_a_released_deadline_leaves_its_socket_alone(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    with Deadline.running(0.05) as deadline:
        deadline.watch(ours)
    time.sleep(0.2)
    assert not deadline.expired
    theirs.sendall(b"x")
    ours.settimeout(1)
    assert ours.recv(1) == b"x"


def test_released_deadlines_do_not_accumulate() -> None:
    watchdog = _watchdog()
    before = len(watchdog)
    for _ in range(5000):
        with Deadline.running(15):
            pass
    assert len(watchdog) - before <= 2 * watchdog.SWEEP_AT
