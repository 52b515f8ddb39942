"""HTTP access to upstreams: `HttpFetcher` (authentication, TLS, a total timeout, a
response-size cap, every failure classified into one `UpstreamError` reason, secrets never in
messages)."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests
import urllib3

from exporter.model.problems import (
    AUTH_FILE,
    CONNECT,
    TIMEOUT,
    TOO_LARGE,
    UpstreamError,
)
from exporter.text import redact


@dataclass(frozen=True)
class HttpOptions:
    """How to reach one kind of upstream; `setting` names its config section in messages
    (and, with `limits_configurable`, its timeout and max_response_bytes keys)."""

    timeout: float
    max_response_bytes: int
    setting: str
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token_file: str | None = None
    # The token file's token goes bare in this header instead of `Authorization: Bearer`
    # (Electricity Maps' `auth-token`).
    token_header: str | None = None
    basic_auth: tuple[str, str] | None = None  # (username, password file)
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    accept: str = "*/*"
    limits_configurable: bool = True


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]  # as received; look names up case-insensitively

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


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
        self._secrets: tuple[str, ...] = ()  # the configured credentials, as last read
        self._runtime_secrets: tuple[str, ...] = ()  # the last `auth` headers' values

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
            if o.token_header:
                return {o.token_header: token}
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
        for secret in (*self._secrets, *self._runtime_secrets):
            text = text.replace(secret, "<redacted>")
        return text

    def get(self, url: str, params: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of a GET; transport failures raise UpstreamError."""
        response = self.fetch(url, params)
        return response.status, response.body

    def fetch(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        auth: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """A GET with its response headers. `auth`: credential headers for this request,
        instead of the configured ones (a token obtained at run time); kept out of messages
        like them. Transport failures raise UpstreamError."""
        with self._count:
            self.requests_made += 1
        options = self.options
        shown = redact(url)
        if auth is None:
            headers = self._auth_headers()
        else:
            headers = dict(auth)
            self._runtime_secrets = tuple(v.split()[-1] for v in auth.values() if v.split())
        deadline = time.monotonic() + options.timeout
        try:
            response = self._session.get(
                url, params=params, headers=headers, timeout=options.timeout, stream=True
            )
            with response:
                body = self._read_capped(response, deadline)
                return HttpResponse(response.status_code, body, dict(response.headers))
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
        configurable = self.options.limits_configurable
        chunks, size = [], 0
        while True:
            # read1: at most one read on the socket, so the deadline is checked between
            # reads however slowly the body trickles in.
            chunk = response.raw.read1(65536, decode_content=True)
            if not chunk:
                break
            if time.monotonic() > deadline:
                timeout = f"{setting}.timeout" if configurable else f"{self.options.timeout:g}s"
                raise UpstreamError(TIMEOUT, f"response took longer than {timeout}")
            size += len(chunk)
            if size > limit:
                cap = f"{setting}.max_response_bytes ({limit} bytes)"
                raise UpstreamError(
                    TOO_LARGE,
                    f"response larger than {cap if configurable else f'{limit} bytes'}",
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UpstreamError(AUTH_FILE, f"cannot read credentials file {path!r}: {why}") from None


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
