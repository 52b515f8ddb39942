"""What the live grid feed needs of a grid-intensity provider (`Provider`), and what the
providers share: their HTTP options, a checked JSON answer, timestamps, and `RetryLater` for
an answer that asks the caller to wait (429)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from exporter.model.intensity import LiveValue
from exporter.model.problems import HTTP_STATUS, INVALID_VALUE, MALFORMED, UpstreamError
from exporter.sources.http import HttpFetcher, HttpOptions, HttpResponse, cut

TIMEOUT_S = 10.0  # per request; a slow provider delays only its own next zone
MAX_RESPONSE_BYTES = 1024 * 1024


class Provider(Protocol):
    """One live grid-intensity API: the current value for one of its zones."""

    @property
    def name(self) -> str: ...  # the `upstream` and `source` label

    @property
    def basis(self) -> str: ...  # the basis it feeds: location or marginal

    @property
    def requests_made(self) -> int: ...  # HTTP requests so far (logins included)

    def fetch(self, zone: str) -> LiveValue: ...  # raises UpstreamError

    def close(self) -> None: ...


class RetryLater(UpstreamError):
    """A 429: counted as an HTTP status error; `retry_after` (seconds) is the server's
    Retry-After, where it sent a usable one."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(HTTP_STATUS, message)
        self.retry_after = retry_after


class HttpProvider:
    """What the providers share: a base URL, an HttpFetcher asking for JSON with their
    credentials (`auth`: token file or basic auth) and a 1 MiB cap, and a clock."""

    def __init__(
        self, url: str, timeout: float, clock: Callable[[], float] | None, **auth: Any
    ) -> None:
        self.url = url.rstrip("/")
        self.http = HttpFetcher(
            HttpOptions(
                timeout=timeout,
                max_response_bytes=MAX_RESPONSE_BYTES,
                setting="grid.live",
                accept="application/json",
                limits_configurable=False,
                **auth,
            )
        )
        self.clock = clock or (lambda: time.time())  # late-bound: freezegun can move it

    @property
    def requests_made(self) -> int:
        return self.http.requests_made

    def close(self) -> None:
        self.http.close()


def answer_json(
    http: HttpFetcher, response: HttpResponse, where: str, now: float
) -> dict[str, Any]:
    """The JSON object of a successful answer; else UpstreamError naming `where` and the
    provider's own error text (scrubbed of credentials), RetryLater for a 429."""
    payload = _decode(response.body)
    if response.status >= 300:
        error = http.scrub(_error_text(payload))  # scrubbed before it is cut
        detail = cut(error, 300) if error else http.excerpt(response.body)
        message = http.scrub(f"HTTP {response.status} from {where}: {detail}")
        if response.status == 429:
            raise RetryLater(message, retry_after_seconds(response.header("Retry-After"), now))
        raise UpstreamError(HTTP_STATUS, message)
    if not isinstance(payload, dict):
        raise UpstreamError(
            MALFORMED,
            http.scrub(f"{where} did not answer a JSON object: ") + http.excerpt(response.body),
        )
    return payload


def _decode(body: bytes | bytearray) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _error_text(payload: Any) -> str:
    """`error: message` of an error body (WattTime's documented example says `msg`)."""
    if not isinstance(payload, dict):
        return ""
    parts = [payload.get(key) for key in ("error", "message", "msg")]
    return ": ".join(str(p) for p in parts if isinstance(p, str) and p)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (delay-seconds or an HTTP date), None if it is
    missing or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(when.timestamp() - now, 0.0)


def timestamp(value: Any, field: str, where: str) -> float:
    """Unix time of an ISO-8601 timestamp with a time zone (`...Z` or `...+00:00`)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.timestamp()
    raise UpstreamError(
        MALFORMED, f"{where}: {field} {str(value)[:60]!r} is not a timestamp with a time zone"
    )


def intensity(value: Any, field: str, where: str) -> float:
    """A finite, non-negative number, or UpstreamError (null included: no value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UpstreamError(INVALID_VALUE, f"{where}: {field} is {str(value)[:40]!r}, not a number")
    if not math.isfinite(value) or value < 0:
        raise UpstreamError(INVALID_VALUE, f"{where}: {field} is {value!r}")
    return float(value)
