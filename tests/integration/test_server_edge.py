"""The exporter's HTTP server under hostile clients: clients that reset mid-response, trickle
their request, or open more connections than it serves at once; and SIGHUP to `serve`."""

from __future__ import annotations

import logging
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from exporter.config import load
from exporter.engine import Engine
from exporter.exposition import server as http_server
from exporter.model.observations import ENERGY_COUNTER, Observation, PodGpus, PodTokens
from tests.harness import ExporterProcess, wait_until

pytestmark = pytest.mark.integration


class ManyModels:
    """A source with 300 models, so /metrics is large enough to be cut mid-response."""

    name = "prometheus"
    upstreams = ("prometheus",)
    gpu_upstream = "prometheus"
    reads = "queries"
    window = 300.0
    requests_by_upstream: ClassVar[dict[str, int]] = {"prometheus": 1}

    def fetch(self) -> Observation:
        gpus, tokens = [], []
        for i in range(300):
            node = "gpu-a.sdsc.optiputer.net"
            gpus.append(
                PodGpus("ns", f"p{i}", node, "NVIDIA H100 80GB HBM3", 1, 500, ENERGY_COUNTER)
            )
            tokens.append(PodTokens("ns", f"p{i}", f"org/model-{i}", 900.0, 100.0))
        return Observation(time.time(), tuple(gpus), tuple(tokens))

    def close(self) -> None:
        pass


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    monkeypatch.setattr(http_server, "REQUEST_SECONDS", 0.6)
    monkeypatch.setattr(http_server, "MAX_CONNECTIONS", 4)
    engine = Engine(load(), ManyModels())
    assert engine.run_cycle()
    server = http_server.start(engine, "127.0.0.1:0")
    try:
        yield ("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_resetting_mid_response_is_one_quiet_line(
    served: tuple[str, int], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.http")
    for _ in range(5):
        client = socket.create_connection(served)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        client.recv(100)  # the answer has begun
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST, with most of the body unsent
    wait_until(lambda: "went away" in caplog.text, 5, "the reset to be noticed")
    assert "Traceback" not in capsys.readouterr().err
    assert requests.get(f"http://{served[0]}:{served[1]}/healthz", timeout=5).text == "ok\n"


def test_a_trickling_client_is_dropped_at_the_request_deadline(served: tuple[str, int]) -> None:
    client = socket.create_connection(served)
    client.sendall(b"GET /metrics HTTP/1.1\r\n")
    started = time.monotonic()
    closed_at = None
    for i in range(30):  # one header line every 0.1 s: each within any per-read timeout
        try:
            client.sendall(f"X-Slow-{i}: 1\r\n".encode())
        except OSError:
            closed_at = time.monotonic()
            break
        time.sleep(0.1)
    else:
        client.settimeout(2)
        assert client.recv(100) == b""  # closed, with no answer
        closed_at = time.monotonic()
    client.close()
    assert closed_at - started < 1.6  # REQUEST_SECONDS is 0.6 here


def test_connections_beyond_the_cap_are_refused_not_queued_on_threads(
    served: tuple[str, int],
) -> None:
    idle = [socket.create_connection(served) for _ in range(4)]  # each holds a handler thread
    try:
        time.sleep(0.2)
        extra = socket.create_connection(served)
        extra.settimeout(2)
        answer = extra.recv(200)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
    finally:
        for connection in idle:
            connection.close()
    time.sleep(0.2)  # their threads end: slots are free again
    assert requests.get(f"http://{served[0]}:{served[1]}/healthz", timeout=5).status_code == 200


def test_serve_logs_and_ignores_sighup(tmp_path: Path) -> None:
    process = ExporterProcess(tmp_path, {"prometheus": {"url": "http://127.0.0.1:9"}}, ())
    process.start(wait_ready=False)
    try:
        process.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "received SIGHUP" in process.log(), 10, "the SIGHUP log line")
        time.sleep(0.5)
        assert process.process.poll() is None  # still running
        assert requests.get(f"{process.url}/healthz", timeout=5).status_code == 200
    finally:
        process.stop()
