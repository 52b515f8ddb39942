"""HTTP access to upstreams: `HttpFetcher` (authentication, TLS, a total timeout, a
response-size cap, every failure classified into one `UpstreamError` reason, secrets never in
messages) and, on top of it, `PrometheusClient` for the Prometheus HTTP query API
(Prometheus, Thanos, Mimir, VictoriaMetrics)."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests
import urllib3

from exporter.config import PrometheusSettings
from exporter.text import one_line, redact

# Reasons, the values of llm_carbon_exporter_upstream_errors_total{reason}.
CONNECT = "connect"
TIMEOUT = "timeout"
HTTP_STATUS = "http_status"
QUERY_ERROR = "query_error"
MALFORMED = "malformed_response"
TOO_LARGE = "response_too_large"
INVALID_VALUE = "invalid_value"
MISSING_SERIES = "missing_series"
AUTH_FILE = "credentials_file"
PARTIAL = "partial_response"
INTERNAL = "internal_error"  # a bug in the exporter during a cycle (logged with a traceback)
REASONS = (
    CONNECT,
    TIMEOUT,
    HTTP_STATUS,
    QUERY_ERROR,
    MALFORMED,
    TOO_LARGE,
    INVALID_VALUE,
    MISSING_SERIES,
    AUTH_FILE,
    PARTIAL,
    INTERNAL,
)


class UpstreamError(Exception):
    """An upstream failure with a reason (a bounded label value) and a one-line message."""

    def __init__(self, reason: str, message: str, upstream: str | None = None) -> None:
        super().__init__(one_line(message))
        self.reason = reason
        self.upstream = upstream  # which upstream failed, where a source has several
        self.also: tuple[UpstreamError, ...] = ()  # other upstreams that failed in the same cycle


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class HttpOptions:
    """How to reach one kind of upstream; `setting` names its config section in messages."""

    timeout: float
    max_response_bytes: int
    setting: str
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token_file: str | None = None
    basic_auth: tuple[str, str] | None = None  # (username, password file)
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    accept: str = "*/*"


class HttpFetcher:
    """GET requests through one reused `requests.Session`."""

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self._session = requests.Session()
        self._session.headers.update(options.headers)
        self._session.headers["Accept"] = options.accept
        self._session.headers["User-Agent"] = "llm-carbon-exporter"
        if options.insecure_skip_verify:
            self._session.verify = False
        elif options.ca_file:
            self._session.verify = options.ca_file
        # Queries run concurrently: enough pooled connections for all of a cycle's at once.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._count = threading.Lock()
        self.requests_made = 0
        self._secrets: tuple[str, ...] = ()

    def close(self) -> None:
        self._session.close()

    def _auth_headers(self) -> dict[str, str]:
        """Credentials, read from their files on every request so rotated secrets work."""
        o = self.options
        if o.bearer_token_file:
            token = _read_secret(o.bearer_token_file).strip()
            if not token or any(ch.isspace() or ord(ch) < 32 for ch in token):
                raise UpstreamError(
                    AUTH_FILE,
                    f"bearer token file {o.bearer_token_file!r} is "
                    "empty or has whitespace inside the token",
                )
            self._secrets = (token,)
            return {"Authorization": f"Bearer {token}"}
        if o.basic_auth:
            username, password_file = o.basic_auth
            password = _read_secret(password_file).rstrip("\r\n")
            encoded = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self._secrets = tuple(x for x in (password, encoded) if x)
            return {"Authorization": f"Basic {encoded}"}
        return {}

    def scrub(self, text: str) -> str:
        """`text` without URL credentials, Authorization values or the current secrets: an
        upstream may echo request headers in an error body."""
        text = redact(text)
        text = re.sub(r"(?i)\b(bearer|basic)\s+[^\s'\",]+", r"\1 <redacted>", text)
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def get(self, url: str, params: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of a GET; transport failures raise UpstreamError."""
        with self._count:
            self.requests_made += 1
        options = self.options
        shown = redact(url)
        headers = self._auth_headers()
        deadline = time.monotonic() + options.timeout
        try:
            response = self._session.get(
                url, params=params, headers=headers, timeout=options.timeout, stream=True
            )
            with response:
                body = self._read_capped(response, deadline)
                return response.status_code, body
        except requests.exceptions.Timeout:
            raise UpstreamError(
                TIMEOUT, f"{shown} did not answer within {options.timeout:g}s"
            ) from None
        except requests.exceptions.SSLError as exc:
            raise UpstreamError(
                CONNECT, self.scrub(f"TLS error talking to {shown}: {_first_line(exc)}")
            ) from None
        except requests.exceptions.InvalidHeader:
            raise UpstreamError(
                AUTH_FILE, "a configured header or credential is not a valid HTTP header value"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            if exc.args and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError):
                raise UpstreamError(
                    TIMEOUT, f"{shown} stalled mid-response for {options.timeout:g}s"
                ) from None
            raise UpstreamError(
                CONNECT, self.scrub(f"cannot connect to {shown}: {_first_line(exc)}")
            ) from None
        except requests.exceptions.RequestException as exc:
            raise UpstreamError(
                CONNECT, self.scrub(f"request to {shown} failed: {_first_line(exc)}")
            ) from None
        # Reading the body goes to urllib3 directly (read1), so its errors arrive unwrapped.
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise UpstreamError(
                TIMEOUT, f"{shown} stalled mid-response for {options.timeout:g}s"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UpstreamError(
                CONNECT, self.scrub(f"response from {shown} broke off: {_first_line(exc)}")
            ) from None

    def _read_capped(self, response: requests.Response, deadline: float) -> bytes:
        """The body, or UpstreamError past the size cap or past the request's deadline (a
        server dripping bytes would otherwise reset the per-read timeout forever)."""
        limit, setting = self.options.max_response_bytes, self.options.setting
        chunks, size = [], 0
        while True:
            # read1: at most one read on the socket, so the deadline is checked between
            # reads however slowly the body trickles in.
            chunk = response.raw.read1(65536, decode_content=True)
            if not chunk:
                break
            if time.monotonic() > deadline:
                raise UpstreamError(TIMEOUT, f"response took longer than {setting}.timeout")
            size += len(chunk)
            if size > limit:
                raise UpstreamError(
                    TOO_LARGE,
                    f"response larger than {setting}.max_response_bytes ({limit} bytes)",
                )
            chunks.append(chunk)
        return b"".join(chunks)


class PrometheusClient:
    """Instant queries against one Prometheus-compatible query API."""

    def __init__(self, settings: PrometheusSettings) -> None:
        if not settings.url:
            raise ValueError("prometheus.url is not set")
        self.url = settings.url.rstrip("/")
        self.http = HttpFetcher(
            HttpOptions(
                timeout=settings.timeout,
                max_response_bytes=settings.max_response_bytes,
                setting="prometheus",
                headers=dict(settings.headers),
                bearer_token_file=settings.bearer_token_file,
                basic_auth=(
                    (settings.basic_auth.username, settings.basic_auth.password_file)
                    if settings.basic_auth
                    else None
                ),
                ca_file=settings.ca_file,
                insecure_skip_verify=settings.insecure_skip_verify,
                accept="application/json",
            )
        )

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    def close(self) -> None:
        self.http.close()

    def query(self, promql: str, at: float) -> list[Sample]:
        """An instant vector query evaluated at `at` (Unix seconds)."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        result_type = data.get("resultType")
        if result_type != "vector":
            raise UpstreamError(MALFORMED, f"expected a vector result, got {result_type!r}")
        result = data.get("result")
        if not isinstance(result, list):
            raise UpstreamError(MALFORMED, "result is not a list")
        samples = []
        for item in result:
            try:
                labels = item["metric"]
                _, raw = item["value"]
                value = float(raw)
            except (KeyError, TypeError, ValueError):
                raise UpstreamError(MALFORMED, "a result item lacks metric or value") from None
            if not isinstance(labels, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
            ):
                raise UpstreamError(MALFORMED, "a result item's metric is not a string mapping")
            samples.append(Sample(labels, value))
        return samples

    def _get(self, path: str, params: Mapping[str, str]) -> dict:
        status, body = self.http.get(self.url + path, params)
        url, scrub = redact(self.url), self.http.scrub
        payload = _decode(body)
        if status >= 400 or (payload and payload.get("status") == "error"):
            if payload and payload.get("status") == "error":
                detail = f"{payload.get('errorType', 'error')}: {payload.get('error', '')}".strip()
                reason = QUERY_ERROR if status in (200, 400, 422) else HTTP_STATUS
            else:
                detail = snippet(body)
                reason = HTTP_STATUS
            raise UpstreamError(reason, scrub(f"HTTP {status} from {url}{path}: {detail}"))
        if payload is None:
            raise UpstreamError(
                MALFORMED, scrub(f"{url}{path} did not return JSON: {snippet(body)}")
            )
        if payload.get("status") != "success" or not isinstance(payload.get("data"), dict):
            raise UpstreamError(MALFORMED, f"{url}{path}: unexpected response shape")
        # A querier's failed store (Thanos partial responses, VictoriaMetrics isPartial): the
        # result may lack series. PromQL's own annotations ("PromQL info: metric might not be
        # a counter ...", which older Prometheus and Thanos put under warnings) are not that.
        warnings = [
            str(w) for w in payload.get("warnings") or [] if not str(w).startswith("PromQL ")
        ]
        if warnings or payload.get("isPartial") is True:
            detail = "; ".join(warnings) or "isPartial"
            raise UpstreamError(PARTIAL, scrub(f"{url}{path}: partial result: {detail}"))
        return payload["data"]


def _read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UpstreamError(AUTH_FILE, f"cannot read credentials file {path!r}: {why}") from None


def _decode(body: bytes) -> dict | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def snippet(body: bytes) -> str:
    """The start of a body on one line, for messages."""
    text = body[:200].decode("utf-8", "replace")
    return " ".join(text.split())[:120] or "(empty body)"


def _first_line(exc: BaseException) -> str:
    text = redact(str(exc))
    # requests wraps urllib3 errors in long reprs; keep the informative tail.
    match = re.search(r"\[Errno[^\]]*\][^')\"]*", text)
    if match:
        return match.group(0).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def is_count(value: float) -> bool:
    """A finite, non-negative whole number: what a GPU count must be."""
    return is_valid_value(value) and value == int(value)


def is_valid_value(value: float) -> bool:
    """Finite and not negative: what a power or rate sample must be."""
    return math.isfinite(value) and value >= 0


def describe_invalid(value: float) -> str:
    """What is wrong with a sample that is not valid, in words that stay the same while the
    fault lasts (a log line is written once per distinct message)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "negative"
