"""PrometheusClient against a real HTTP server on loopback: parsing, every failure reason,
credentials on the wire, and secrets kept out of error messages. No mocks of `requests`."""

from __future__ import annotations

import base64
import contextlib
import gc
import gzip
import http.server
import json
import math
import shutil
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from exporter.config import BasicAuth, PrometheusSettings
from exporter.model.problems import (
    AUTH_FILE,
    CONNECT,
    HTTP_STATUS,
    MALFORMED,
    QUERY_ERROR,
    TIMEOUT,
    TOO_LARGE,
    UpstreamError,
)
from exporter.sources.prometheus_api import PrometheusClient, Sample

TIMEOUT_S = 0.3
HOLD_S = 5.0  # how long a slow handler holds at most; teardown releases it at once


# --------------------------------------------------------------------------- fake server


@dataclass
class Reply:
    """What the server answers to the next requests."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hold_before_headers: bool = False  # wait (up to HOLD_S) before answering at all
    stall_after: int | None = None  # send headers and this many body bytes, then stall
    echo_authorization: bool = False  # replace "{auth}" in body with the Authorization header
    headers: dict[str, str] = field(default_factory=dict)  # more response headers


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names


@dataclass
class FakePrometheus:
    url: str
    reply: Reply = field(default_factory=Reply)
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(
        self, status: int = 200, body: bytes | str | dict[str, Any] = b"", **kw: Any
    ) -> None:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.reply = Reply(status=status, body=body, **kw)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakePrometheus

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that gave up (timeouts) make handlers hit broken pipes: expected, quiet."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        fake.requests.append(
            Recorded(
                method="GET",
                path=parts.path,
                params=parse_qs(parts.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
            )
        )
        reply = fake.reply
        if reply.hold_before_headers:
            fake.release.wait(HOLD_S)
            return
        body = reply.body
        if reply.echo_authorization:
            body = body.replace(b"{auth}", self.headers.get("Authorization", "").encode())
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if reply.stall_after is not None:
            self.wfile.write(body[: reply.stall_after])
            self.wfile.flush()
            fake.release.wait(HOLD_S)
            return
        self.wfile.write(body)


def _serve(ssl_context: ssl.SSLContext | None = None) -> Iterator[FakePrometheus]:
    server = _Server(("127.0.0.1", 0), _Handler)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if ssl_context is not None else "http"
    fake = FakePrometheus(url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; loopback tests must talk to loopback."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    yield from _serve()


ClientFactory = Callable[..., PrometheusClient]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    clients: list[PrometheusClient] = []

    def make(url: str, **settings: Any) -> PrometheusClient:
        settings.setdefault("timeout", TIMEOUT_S)
        client = PrometheusClient(PrometheusSettings(url=url, **settings))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def vector(*items: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(items)}}


def item(value: str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, value]}


def expect_error(client: PrometheusClient, reason: str, promql: str = "up") -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        client.query(promql, 1700000000.0)
    assert info.value.reason == reason, str(info.value)
    return info.value


def closed_port() -> int:
    """A loopback port that was just bound and released: nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- good answers


def test_vector_parses_labels_and_values(prom: FakePrometheus, make_client: ClientFactory) -> None:
    prom.answer(
        body=vector(
            item("1.5", __name__="DCGM_FI_DEV_POWER_USAGE", pod="vllm-0", gpu="0"),
            item("0", pod="vllm-1"),
            item("NaN", pod="nan"),
            item("+Inf", pod="inf"),
            item("-Inf", pod="neg"),
        )
    )
    samples = make_client(prom.url).query("DCGM_FI_DEV_POWER_USAGE", 1700000000.0)

    assert [s.labels for s in samples] == [
        {"__name__": "DCGM_FI_DEV_POWER_USAGE", "pod": "vllm-0", "gpu": "0"},
        {"pod": "vllm-1"},
        {"pod": "nan"},
        {"pod": "inf"},
        {"pod": "neg"},
    ]
    assert samples[0] == Sample(
        {"__name__": "DCGM_FI_DEV_POWER_USAGE", "pod": "vllm-0", "gpu": "0"}, 1.5
    )
    assert samples[1].value == 0.0
    assert all(isinstance(s.value, float) for s in samples)
    assert math.isnan(samples[2].value)
    assert samples[3].value == math.inf
    assert samples[4].value == -math.inf


def test_empty_vector_is_an_empty_list(prom: FakePrometheus, make_client: ClientFactory) -> None:
    prom.answer(body=vector())
    assert make_client(prom.url).query("absent_metric", 1700000000.0) == []
    assert len(prom.requests) == 1


def test_query_is_get_api_v1_query_with_query_and_time(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    prom.answer(body=vector())
    promql = 'sum by (pod) (rate(vllm:prompt_tokens_total{namespace="a b",x=~".+"}[5m]))'
    client = make_client(prom.url)
    client.query(promql, 1700000000.25)

    [request] = prom.requests
    assert request.method == "GET"
    assert request.path == "/api/v1/query"
    assert request.params == {"query": [promql], "time": ["1700000000.250"]}
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == "llm-carbon-exporter"
    assert "authorization" not in request.headers
    assert client.requests_made == 1


def test_url_path_prefix_is_kept(prom: FakePrometheus, make_client: ClientFactory) -> None:
    """Mimir and Thanos often sit under a prefix such as /prometheus."""
    prom.answer(body=vector(item("2", job="x")))
    samples = make_client(prom.url + "/prometheus/").query("up", 1.0)
    assert samples == [Sample({"job": "x"}, 2.0)]
    assert [r.path for r in prom.requests] == ["/prometheus/api/v1/query"]


# --------------------------------------------------------------------------- transport failures


def test_connection_refused_is_connect(make_client: ClientFactory) -> None:
    port = closed_port()
    started = time.monotonic()
    error = expect_error(make_client(f"http://127.0.0.1:{port}"), CONNECT)
    assert time.monotonic() - started < 2
    assert f"127.0.0.1:{port}" in str(error)
    assert "\n" not in str(error)


def test_slow_handler_is_timeout(prom: FakePrometheus, make_client: ClientFactory) -> None:
    prom.answer(body=vector(), hold_before_headers=True)
    started = time.monotonic()
    error = expect_error(make_client(prom.url), TIMEOUT)
    elapsed = time.monotonic() - started
    assert TIMEOUT_S * 0.9 <= elapsed < 2, elapsed
    assert "0.3s" in str(error)
    assert len(prom.requests) == 1  # the request did reach the server


def test_stall_mid_body_is_timeout(prom: FakePrometheus, make_client: ClientFactory) -> None:
    prom.answer(body=json.dumps(vector()).encode() + b" " * 100, stall_after=10)
    started = time.monotonic()
    expect_error(make_client(prom.url), TIMEOUT)
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- HTTP and API errors


ENVELOPE = {"status": "error", "errorType": "execution", "error": "query timed out in expr eval"}
BAD_DATA = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}


@pytest.mark.parametrize(
    ("status", "body", "content_type", "detail"),
    [
        (500, "Internal Server Error: boom", "text/plain", "Internal Server Error: boom"),
        (503, "Service Unavailable\n  try later", "text/plain", "Service Unavailable try later"),
        (502, "<html><body>Bad Gateway</body></html>", "text/html", "Bad Gateway"),
        (503, json.dumps(ENVELOPE), "application/json", "execution: query timed out"),
        (401, "", "text/plain", "(empty body)"),
    ],
)
def test_http_error_status_is_http_status(
    prom: FakePrometheus,
    make_client: ClientFactory,
    status: int,
    body: str,
    content_type: str,
    detail: str,
) -> None:
    prom.answer(status=status, body=body, content_type=content_type)
    error = expect_error(make_client(prom.url), HTTP_STATUS)
    assert f"HTTP {status}" in str(error)
    assert "/api/v1/query" in str(error)
    assert detail in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("status", "envelope"),
    [(422, ENVELOPE), (400, BAD_DATA), (200, ENVELOPE)],
)
def test_prometheus_error_envelope_is_query_error(
    prom: FakePrometheus, make_client: ClientFactory, status: int, envelope: dict[str, str]
) -> None:
    prom.answer(status=status, body=envelope)
    error = expect_error(make_client(prom.url), QUERY_ERROR)
    assert f"HTTP {status}" in str(error)
    assert f"{envelope['errorType']}: {envelope['error']}" in str(error)


def test_html_with_200_is_malformed(prom: FakePrometheus, make_client: ClientFactory) -> None:
    prom.answer(
        body="<!doctype html><html><title>Grafana login</title></html>", content_type="text/html"
    )
    error = expect_error(make_client(prom.url), MALFORMED)
    assert "did not return JSON" in str(error)
    assert "Grafana login" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {"status": "success", "data": {"resultType": "matrix", "result": []}}, id="matrix"
        ),
        pytest.param(
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}, id="scalar"
        ),
        pytest.param(
            {"status": "success", "data": {"resultType": "vector", "result": {"a": 1}}},
            id="result-not-list",
        ),
        pytest.param(vector({"metric": {"pod": "a"}}), id="item-without-value"),
        pytest.param(vector({"value": [1, "1"]}), id="item-without-metric"),
        pytest.param(vector({"metric": {}, "value": [1, "watts"]}), id="value-not-number"),
        pytest.param(vector({"metric": {}, "value": [1]}), id="value-one-element"),
        pytest.param(vector({"metric": {}, "value": None}), id="value-null"),
        pytest.param(vector({"metric": ["pod"], "value": [1, "1"]}), id="metric-not-mapping"),
        pytest.param(vector("not an object"), id="item-not-object"),  # type: ignore[arg-type]
        pytest.param({"status": "success"}, id="no-data"),
        pytest.param({"status": "success", "data": []}, id="data-not-mapping"),
        pytest.param({"data": {"resultType": "vector", "result": []}}, id="no-status"),
        pytest.param([1, 2, 3], id="json-array"),
        pytest.param("", id="empty-body"),
    ],
)
def test_unexpected_json_shape_is_malformed(
    prom: FakePrometheus, make_client: ClientFactory, body: Any
) -> None:
    prom.answer(body=json.dumps(body) if not isinstance(body, (dict, str)) else body)
    expect_error(make_client(prom.url), MALFORMED)


# --------------------------------------------------------------------------- size cap


def test_body_over_max_response_bytes_is_too_large(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    body = json.dumps(vector(*[item("1", pod=f"p{i}") for i in range(2000)])).encode()
    prom.answer(body=body)
    error = expect_error(make_client(prom.url, max_response_bytes=10_000), TOO_LARGE)
    assert len(body) > 10_000
    assert "10000" in str(error)


def test_max_response_bytes_boundary(prom: FakePrometheus, make_client: ClientFactory) -> None:
    body = json.dumps(vector(item("3", pod="a"))).encode()
    prom.answer(body=body)
    exact = make_client(prom.url, max_response_bytes=len(body))
    assert exact.query("up", 1.0) == [Sample({"pod": "a"}, 3.0)]
    expect_error(make_client(prom.url, max_response_bytes=len(body) - 1), TOO_LARGE)


# --------------------------------------------------------------------------- credentials


def test_bearer_token_is_sent_and_reread_after_rotation(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token-abc\n")
    prom.answer(body=vector())
    client = make_client(prom.url, bearer_token_file=str(token_file))

    client.query("up", 1.0)
    token_file.write_text("second-token-xyz")
    client.query("up", 2.0)

    assert [r.headers.get("authorization") for r in prom.requests] == [
        "Bearer first-token-abc",
        "Bearer second-token-xyz",
    ]


def test_basic_auth_header_on_the_wire(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("p@ss: wörd\n")
    prom.answer(body=vector())
    client = make_client(
        prom.url, basic_auth=BasicAuth(username="alice", password_file=str(password_file))
    )
    client.query("up", 1.0)
    password_file.write_text("rotated")
    client.query("up", 2.0)

    sent = [r.headers["authorization"] for r in prom.requests]
    assert [base64.b64decode(s.removeprefix("Basic ")).decode() for s in sent] == [
        "alice:p@ss: wörd",
        "alice:rotated",
    ]
    assert all(s.startswith("Basic ") for s in sent)


def test_extra_headers_on_the_wire(prom: FakePrometheus, make_client: ClientFactory) -> None:
    prom.answer(body=vector())
    client = make_client(prom.url, headers={"X-Scope-OrgID": "tenant-a", "X-Extra": "1"})
    client.query("up", 1.0)
    client.query("up", 2.0)
    for request in prom.requests:
        assert request.headers["x-scope-orgid"] == "tenant-a"
        assert request.headers["x-extra"] == "1"
        assert "authorization" not in request.headers
    assert len(prom.requests) == 2


def test_extra_headers_with_bearer_token(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok")
    prom.answer(body=vector())
    make_client(
        prom.url, bearer_token_file=str(token_file), headers={"X-Scope-OrgID": "tenant-b"}
    ).query("up", 1.0)
    [request] = prom.requests
    assert request.headers["x-scope-orgid"] == "tenant-b"
    assert request.headers["authorization"] == "Bearer tok"


def test_missing_token_file_is_credentials_file(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-token"
    prom.answer(body=vector())
    error = expect_error(make_client(prom.url, bearer_token_file=str(missing)), AUTH_FILE)
    assert str(missing) in str(error)
    assert prom.requests == []  # nothing sent without the credential


def test_missing_password_file_is_credentials_file(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-password"
    prom.answer(body=vector())
    client = make_client(prom.url, basic_auth=BasicAuth(username="bob", password_file=str(missing)))
    error = expect_error(client, AUTH_FILE)
    assert str(missing) in str(error)
    assert prom.requests == []


def test_token_file_that_reappears_works_again(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    prom.answer(body=vector())
    client = make_client(prom.url, bearer_token_file=str(token_file))
    expect_error(client, AUTH_FILE)
    token_file.write_text("late-token")
    assert client.query("up", 1.0) == []
    assert [r.headers["authorization"] for r in prom.requests] == ["Bearer late-token"]


# --------------------------------------------------------------------------- secrets in messages


URL_USER = "scott"
URL_PASSWORD = "Tiger-Secret-9931"


def _assert_no_url_secret(error: UpstreamError, names_url: bool = True) -> None:
    text = str(error)
    assert URL_PASSWORD not in text
    assert f"{URL_USER}:" not in text
    if names_url:  # the URL is in the message, with its credentials replaced
        assert "<redacted>@127.0.0.1" in text


def test_url_password_not_in_connect_error(make_client: ClientFactory) -> None:
    url = f"http://{URL_USER}:{URL_PASSWORD}@127.0.0.1:{closed_port()}"
    _assert_no_url_secret(expect_error(make_client(url), CONNECT))


def test_url_password_not_in_timeout_error(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    prom.answer(hold_before_headers=True)
    url = prom.url.replace("//", f"//{URL_USER}:{URL_PASSWORD}@")
    _assert_no_url_secret(expect_error(make_client(url), TIMEOUT))


@pytest.mark.parametrize(
    ("status", "body", "reason", "names_url"),
    [
        pytest.param(500, "oops", HTTP_STATUS, True, id="500"),
        pytest.param(422, json.dumps(ENVELOPE), QUERY_ERROR, True, id="422-envelope"),
        pytest.param(200, "<html>login</html>", MALFORMED, True, id="html"),
        pytest.param(200, json.dumps(vector(item("x"))), MALFORMED, False, id="bad-value"),
    ],
)
def test_url_password_not_in_http_errors(
    prom: FakePrometheus,
    make_client: ClientFactory,
    status: int,
    body: str,
    reason: str,
    names_url: bool,
) -> None:
    prom.answer(status=status, body=body)
    url = prom.url.replace("//", f"//{URL_USER}:{URL_PASSWORD}@")
    _assert_no_url_secret(expect_error(make_client(url), reason), names_url)


TOKEN = "tok-SECRET-5f1e9c"


def test_bearer_token_not_in_transport_errors(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    refused = make_client(f"http://127.0.0.1:{closed_port()}", bearer_token_file=str(token_file))
    assert TOKEN not in str(expect_error(refused, CONNECT))
    prom.answer(hold_before_headers=True)
    slow = make_client(prom.url, bearer_token_file=str(token_file))
    assert TOKEN not in str(expect_error(slow, TIMEOUT))
    assert prom.requests[0].headers["authorization"] == f"Bearer {TOKEN}"  # it was sent


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        pytest.param(500, "unauthorized request with {auth}", HTTP_STATUS, id="500-text"),
        pytest.param(403, "denied for {auth}", HTTP_STATUS, id="403-text"),
        pytest.param(
            422,
            '{"status":"error","errorType":"execution","error":"bad {auth}"}',
            QUERY_ERROR,
            id="422-envelope",
        ),
        pytest.param(200, "<html>who is {auth}?</html>", MALFORMED, id="200-html"),
        # The token alone, where a message's excerpt of the body would cut it in two: the
        # start of a secret is as much a leak as all of it.
        pytest.param(500, "x" * 107 + " " + TOKEN, HTTP_STATUS, id="500-cut-in-the-token"),
        pytest.param(200, "<p>" + "x" * 104 + " " + TOKEN, MALFORMED, id="200-cut-in-the-token"),
    ],
)
def test_echoed_bearer_token_not_in_message(
    prom: FakePrometheus,
    make_client: ClientFactory,
    tmp_path: Path,
    status: int,
    body: str,
    reason: str,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    prom.answer(status=status, body=body, echo_authorization=True)
    error = expect_error(make_client(prom.url, bearer_token_file=str(token_file)), reason)
    assert TOKEN[:8] not in str(error)


def test_malformed_token_file_does_not_leak_token(
    prom: FakePrometheus, make_client: ClientFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\nsecond-line\n")
    prom.answer(body=vector())
    with pytest.raises(UpstreamError) as info:
        make_client(prom.url, bearer_token_file=str(token_file)).query("up", 1.0)
    assert TOKEN not in str(info.value)
    assert info.value.reason == "credentials_file"
    assert prom.requests == []  # nothing was sent with a broken credential


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def tls_prom(certificate: tuple[Path, Path]) -> Iterator[FakePrometheus]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    yield from _serve(context)


def test_tls_untrusted_certificate_is_connect(
    tls_prom: FakePrometheus, make_client: ClientFactory
) -> None:
    tls_prom.answer(body=vector())
    error = expect_error(make_client(tls_prom.url), CONNECT)
    assert "TLS error" in str(error)


def test_tls_ca_file_trusts_certificate(
    tls_prom: FakePrometheus, make_client: ClientFactory, certificate: tuple[Path, Path]
) -> None:
    tls_prom.answer(body=vector(item("7", pod="tls")))
    client = make_client(tls_prom.url, ca_file=str(certificate[0]))
    assert client.query("up", 1.0) == [Sample({"pod": "tls"}, 7.0)]


def test_tls_insecure_skip_verify_says_so_once_not_per_request(
    tls_prom: FakePrometheus, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    tls_prom.answer(body=vector(item("8", pod="insecure")))
    client = make_client(tls_prom.url, insecure_skip_verify=True)
    with warnings.catch_warnings(record=True) as seen:
        for _ in range(3):
            assert client.query("up", 1.0) == [Sample({"pod": "insecure"}, 8.0)]
    assert [str(w.message) for w in seen] == []  # not one warning per request on stderr
    assert caplog.text.count("TLS certificates are not verified") == 1


def test_partial_results_fail_but_promql_annotations_do_not(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    def envelope(**extra: object) -> str:
        return json.dumps(
            {"status": "success", **extra, "data": {"resultType": "vector", "result": []}}
        )

    prom.answer(body=envelope(warnings=["store gateway unavailable: partial response"]))
    assert expect_error(make_client(prom.url), "partial_response")
    prom.answer(body=envelope(isPartial=True))
    assert expect_error(make_client(prom.url), "partial_response")
    notice = 'PromQL info: metric might not be a counter, name does not end in _total: "X"'
    prom.answer(body=envelope(warnings=[notice]))
    assert make_client(prom.url).query("rate(X[5m])", 1.0) == []


# --------------------------------------------------------------------------- hostile upstreams


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """A loopback server that hands each connection to a script (after reading the request),
    for answers no HTTP library would write."""
    listeners: list[socket.socket] = []
    done = threading.Event()

    def start(script: Callable[[socket.socket], None]) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listeners.append(listener)

        def serve() -> None:
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    with contextlib.suppress(OSError):
                        script(conn)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    done.set()
    for listener in listeners:
        listener.close()


def test_trickled_headers_cannot_hold_a_request_past_its_timeout(
    raw_server: Callable[[Callable[[socket.socket], None]], str], make_client: ClientFactory
) -> None:
    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for i in range(40):  # a header line every 0.1 s: each read well within the timeout
            time.sleep(0.1)
            conn.sendall(f"X-Slow-{i}: 1\r\n".encode())

    client = make_client(raw_server(trickle), timeout=0.5)
    started = time.monotonic()
    error = expect_error(client, TIMEOUT)
    assert time.monotonic() - started < 1.5
    assert "did not answer within 0.5s" in str(error)


def test_a_declared_length_over_the_cap_is_refused_unread(
    raw_server: Callable[[Callable[[socket.socket], None]], str], make_client: ClientFactory
) -> None:
    sent: list[int] = []

    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400000000\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(6000):  # up to 400 MB, unless the client hangs up
            conn.sendall(chunk)
            sent.append(len(chunk))

    client = make_client(raw_server(huge), max_response_bytes=1_000_000)
    expect_error(client, TOO_LARGE)
    time.sleep(0.2)
    assert sum(sent) < 50_000_000  # the client hung up long before the end


def test_a_gzip_bomb_stops_at_the_cap_and_gzip_within_it_is_read(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    bomb = gzip.compress(b" " * 50_000_000)  # 50 MB of spaces in about 50 KB
    assert len(bomb) < 100_000
    prom.answer(body=bomb, headers={"Content-Encoding": "gzip"})
    tracemalloc.start()
    try:
        expect_error(make_client(prom.url, max_response_bytes=1_000_000), TOO_LARGE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000  # never inflated past the cap (50 MB if it had been)
    packed = gzip.compress(json.dumps(vector(item("3", pod="gz"))).encode())
    prom.answer(body=packed, headers={"Content-Encoding": "gzip"})
    assert make_client(prom.url).query("up", 1.0) == [Sample({"pod": "gz"}, 3.0)]
    assert prom.requests[-1].headers["accept-encoding"] == "gzip"


def test_a_refused_body_is_freed_at_once(prom: FakePrometheus, make_client: ClientFactory) -> None:
    """No reference cycle keeps the partial body of a failed request alive until the next
    garbage collection."""
    prom.answer(body=b"[" + b"1," * 4_000_000 + b"1]")
    client = make_client(prom.url, max_response_bytes=6_000_000)
    gc.disable()
    tracemalloc.start()
    try:
        expect_error(client, TOO_LARGE)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held < 1_000_000


def test_deeply_nested_json_is_malformed_not_a_crash(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    prom.answer(body=b'{"status":"success","data":' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    error = expect_error(make_client(prom.url), MALFORMED)
    assert len(str(error)) < 300
    prom.answer(body=b"[" * 200_000 + b"]" * 200_000)
    expect_error(make_client(prom.url), MALFORMED)


def test_redirects_are_refused_and_headers_never_follow(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    elsewhere = next(_serve())
    try:
        elsewhere.answer(body=vector())
        prom.answer(status=302, headers={"Location": f"{elsewhere.url}/api/v1/query"})
        client = make_client(prom.url, headers={"X-Scope-OrgID": "tenant-a"})
        error = expect_error(client, HTTP_STATUS)
        assert "redirects (302)" in str(error) and "prometheus.url" in str(error)
        assert elsewhere.requests == []
    finally:
        elsewhere.release.set()


def test_ca_file_wins_over_the_environment(
    tls_prom: FakePrometheus,
    make_client: ClientFactory,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With REQUESTS_CA_BUNDLE naming the CA that signed the server, a configured ca_file of
    another CA still decides: the server is refused, and the reason says why."""
    other = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=other", "-keyout", str(tmp_path / "k.pem"),
         "-out", str(other)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(certificate[0]))
    tls_prom.answer(body=vector())
    error = expect_error(make_client(tls_prom.url, ca_file=str(other)), CONNECT)
    assert "certificate verify failed" in str(error)
    assert make_client(tls_prom.url).query("up", 1.0) == []  # no ca_file: the environment's


def test_a_missing_ca_file_is_named(prom: FakePrometheus, make_client: ClientFactory) -> None:
    error = expect_error(make_client(prom.url, ca_file="/nonexistent/ca.pem"), AUTH_FILE)
    assert str(error) == "prometheus.ca_file '/nonexistent/ca.pem' does not exist"
    assert prom.requests == []


def test_responses_read_at_once_share_the_cap(
    prom: FakePrometheus, make_client: ClientFactory
) -> None:
    """Two responses of 0.7 x the cap, both held 0.62 read at the same time: together they
    pass it, so one is refused; afterwards nothing is counted as held."""
    cap = 1_000_000
    body = json.dumps(vector(item("1", pod="x" * 700_000))).encode()
    prom.answer(body=body, stall_after=620_000)
    client = make_client(prom.url, max_response_bytes=cap, timeout=2.0)
    reasons: list[str] = []

    def query() -> None:
        try:
            client.query("up", 1.0)
        except UpstreamError as exc:
            reasons.append(exc.reason)
            if exc.reason == TOO_LARGE:
                prom.release.set()  # let the other one finish

    threads = [threading.Thread(target=query) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert TOO_LARGE in reasons
    assert client.http._held == 0
