"""HTTP access to upstreams: `HttpFetcher` (authentication, TLS, a total timeout, a
response-size cap, every failure classified into one `UpstreamError` reason, secrets never in
messages)."""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl
import threading
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests
import urllib3

from exporter.deadlines import Deadline
from exporter.model.problems import (
    AUTH_FILE,
    CONNECT,
    HTTP_STATUS,
    MALFORMED,
    TIMEOUT,
    TOO_LARGE,
    UpstreamError,
)
from exporter.sources.deadline_adapter import DeadlineAdapter
from exporter.text import redact

log = logging.getLogger("exporter")
INFLATE_STEP = 1 << 20  # bytes decompressed at a time


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

    def limit_name(self, key: str, value: str) -> str:
        """How a limit is named in messages: its config key, or its value where none."""
        return f"{self.setting}.{key}" if self.limits_configurable else value


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytearray
    headers: Mapping[str, str]  # as received; look names up case-insensitively

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class HttpFetcher:
    """GET requests through one reused `requests.Session`, each under a deadline that covers
    connect, headers and body (`deadline.Deadline`), with the body capped while it streams
    (decompression included) and redirects refused."""

    def __init__(self, options: HttpOptions) -> None:
        self.options = options
        self._session = requests.Session()
        self._session.headers.update(options.headers)
        self._session.headers["Accept"] = options.accept
        self._session.headers["Accept-Encoding"] = "gzip"  # decompressed here, within the cap
        self._session.headers["User-Agent"] = "llm-carbon-exporter"
        # Passed on every request, so REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE in the environment
        # never replace a configured ca_file or insecure_skip_verify.
        self._verify: bool | str = True
        if options.insecure_skip_verify:
            self._verify = False
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
            log.warning(
                "%s: TLS certificates are not verified (insecure_skip_verify)", options.setting
            )
        elif options.ca_file:
            self._verify = options.ca_file
        # Queries run concurrently: enough pooled connections for all of a cycle's at once.
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=16)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._count = threading.Lock()
        self.requests_made = 0
        # Bytes of response bodies held right now, by all the requests in flight (a cycle's
        # queries run at once): together they stay within max_response_bytes.
        self._held = 0
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

    def excerpt(self, body: bytes | bytearray, limit: int = 120) -> str:
        """The start of a body on one line for a message, scrubbed before it is cut: a cut
        through a secret would leave its start, which the scrub no longer recognises."""
        return cut(self.scrub(body[:EXCERPT_READ].decode("utf-8", "replace")), limit)

    def get(self, url: str, params: Mapping[str, str] | None = None) -> tuple[int, bytearray]:
        """(status, body) of a GET; every failure raises UpstreamError."""
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
        like them. Every failure raises UpstreamError."""
        with self._count:
            self.requests_made += 1
        if auth is None:
            headers = self._auth_headers()
        else:
            headers = dict(auth)
            self._runtime_secrets = tuple(v.split()[-1] for v in auth.values() if v.split())
        error: UpstreamError | None = None
        with Deadline.running(self.options.timeout) as deadline:
            try:
                answer = self._fetch(url, params, headers, deadline)
                if not deadline.expired:
                    return answer
                # Cut short by the deadline (headers ended by the closed socket).
                error = self._failure(TimeoutError(), redact(url), deadline)
            except UpstreamError as exc:
                error = exc if not deadline.expired else self._failure(exc, redact(url), deadline)
            except Exception as exc:  # classified; raised outside, so no frame keeps a body
                error = self._failure(exc, redact(url), deadline)
        raise error

    def _fetch(
        self,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        deadline: Deadline,
    ) -> HttpResponse:
        if self.options.ca_file and not os.path.isfile(self.options.ca_file):
            raise UpstreamError(
                AUTH_FILE, f"{self.options.setting}.ca_file {self.options.ca_file!r} does not exist"
            )
        response = self._session.get(
            url,
            params=params,
            headers=headers,
            timeout=(max(deadline.remaining(), 0.001), self.options.timeout),
            stream=True,
            verify=self._verify,
            allow_redirects=False,
        )
        with response:
            if 300 <= response.status_code < 400:
                where = redact(response.headers.get("Location", "elsewhere"))
                raise UpstreamError(
                    HTTP_STATUS,
                    f"{redact(url)} redirects ({response.status_code}) to {where}: redirects "
                    f"are not followed, so credentials and headers stay with the configured "
                    f"host; set {self.options.setting}.url to the final address",
                    status=response.status_code,
                )
            body = self._read_capped(response, deadline)
            return HttpResponse(response.status_code, body, dict(response.headers))

    def _failure(self, exc: Exception, shown: str, deadline: Deadline) -> UpstreamError:
        """An exception of a request as an UpstreamError with its reason."""
        timeout = self.options.timeout
        if deadline.expired or isinstance(exc, requests.exceptions.ConnectTimeout):
            return UpstreamError(TIMEOUT, f"{shown} did not answer within {timeout:g}s")
        if isinstance(exc, requests.exceptions.SSLError):
            return UpstreamError(
                CONNECT, self.scrub(f"TLS error talking to {shown}: {tls_cause(exc)}")
            )
        if isinstance(exc, requests.exceptions.InvalidHeader):
            return UpstreamError(
                AUTH_FILE, "a configured header or credential is not a valid HTTP header value"
            )
        stalled = isinstance(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) or (
            isinstance(exc, requests.exceptions.ConnectionError)
            and bool(exc.args)
            and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError)
        )
        if stalled or isinstance(exc, requests.exceptions.ReadTimeout):
            return UpstreamError(TIMEOUT, f"{shown} stalled mid-response for {timeout:g}s")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return UpstreamError(
                CONNECT, self.scrub(f"cannot connect to {shown}: {_first_line(exc)}")
            )
        if isinstance(exc, requests.exceptions.RequestException):
            return UpstreamError(
                CONNECT, self.scrub(f"request to {shown} failed: {_first_line(exc)}")
            )
        if isinstance(exc, (urllib3.exceptions.HTTPError, OSError, zlib.error)):
            # Reading the body goes to urllib3 directly, so its errors arrive unwrapped.
            return UpstreamError(
                CONNECT, self.scrub(f"response from {shown} broke off: {_first_line(exc)}")
            )
        raise exc  # not a network failure: a bug, for the engine to report as one

    def _read_capped(self, response: requests.Response, deadline: Deadline) -> bytearray:
        """The body, decompressed, or UpstreamError past the size cap: the cap bounds what
        is held in memory, compressed or not, and nothing past it is read."""
        limit = self.options.max_response_bytes
        name = self.options.limit_name("max_response_bytes", "")
        at_once = "for all the responses being read at once"
        cap = f"{name} ({limit} bytes, {at_once})" if name else f"{limit} bytes ({at_once})"
        too_large = UpstreamError(TOO_LARGE, f"response larger than {cap}")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
            raise UpstreamError(MALFORMED, f"response in unsupported encoding {encoding!r}")
        inflate = None if encoding in ("identity", "") else zlib.decompressobj(zlib.MAX_WBITS | 32)
        declared = response.headers.get("Content-Length", "")
        if inflate is None and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        held = 0  # of the shared count, this request's
        try:
            while chunk := response.raw.read1(65536, decode_content=False):
                if deadline.expired:
                    timeout = self.options.limit_name("timeout", f"{self.options.timeout:g}s")
                    raise UpstreamError(TIMEOUT, f"response took longer than {timeout}")
                while chunk:
                    # Inflate a little at a time, each piece counted before the next: a small
                    # compressed body cannot blow up in memory (a gzip bomb stops at the cap).
                    out = inflate.decompress(chunk, INFLATE_STEP) if inflate else chunk
                    chunk = inflate.unconsumed_tail if inflate else b""
                    self._hold(len(out), too_large)
                    held += len(out)
                    body += out
            return body
        except BaseException:
            body.clear()  # whatever still refers to this frame, the memory goes now
            raise
        finally:
            self._hold(-held, too_large)

    def _hold(self, size: int, too_large: UpstreamError) -> None:
        """Count `size` more bytes held (less, when negative); past the cap, refuse."""
        with self._count:
            if size > 0 and self._held + size > self.options.max_response_bytes:
                raise too_large
            self._held += size


def _read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UpstreamError(AUTH_FILE, f"cannot read credentials file {path!r}: {why}") from None


EXCERPT_READ = 65536  # bytes of a body scrubbed for an excerpt: past any secret it echoes


def cut(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters."""
    return " ".join(text[: limit * 4].split())[:limit] or "(empty body)"


def _first_line(exc: BaseException) -> str:
    text = redact(str(exc))
    # requests wraps urllib3 errors in long reprs; keep the informative tail.
    match = re.search(r"\[Errno[^\]]*\][^')\"]*", text)
    if match:
        return match.group(0).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def tls_cause(exc: BaseException) -> str:
    """Why a TLS connection failed, in OpenSSL's words ("certificate verify failed:
    self-signed certificate", "hostname mismatch, ..."): found in the chain of wrapped
    exceptions, so it is not cut off behind requests' and urllib3's reprs."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return str(current.reason or current.strerror or current).lower()
        stack += [a for a in current.args if isinstance(a, BaseException)]
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return _first_line(exc)
