"""The Prometheus HTTP query API (Prometheus, Thanos, Mimir, VictoriaMetrics): instant
queries over an `HttpFetcher`, every answer checked and every failure an `UpstreamError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import msgspec

from exporter.config import PrometheusSettings
from exporter.model.problems import (
    HTTP_STATUS,
    MALFORMED,
    PARTIAL,
    QUERY_ERROR,
    UpstreamError,
)
from exporter.sources.http import HttpFetcher, HttpOptions
from exporter.text import redact


class Sample(NamedTuple):
    """One row of an instant vector (a tuple: a cycle builds tens of thousands)."""

    labels: Mapping[str, str]
    value: float


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
        try:
            kind = msgspec.json.decode(data, type=_ResultType).resultType
            if kind != "vector":
                raise UpstreamError(MALFORMED, f"expected a vector result, got {kind!r}")
            items = msgspec.json.decode(data, type=_Vector).result
        except (msgspec.DecodeError, RecursionError) as exc:
            raise UpstreamError(MALFORMED, f"result is not a vector: {_why(exc)}") from None
        samples = []
        for item in items:
            try:
                value = float(item.value[1])
            except ValueError:
                raise UpstreamError(
                    MALFORMED, f"a result item's value {item.value[1][:40]!r} is not a number"
                ) from None
            samples.append(Sample(item.metric, value))
        return samples

    def status_data(self, path: str) -> object | None:
        """The decoded `data` of a status endpoint (`/api/v1/status/buildinfo`), or None where
        this API has no such endpoint or answers it in another shape. A failure to reach the
        API at all raises UpstreamError, as a query's would."""
        try:
            data = self._get(path, {})
        except UpstreamError as exc:
            if exc.status in (400, 404, 405, 422, 501) or exc.reason == MALFORMED:
                return None
            raise
        try:
            decoded: object = msgspec.json.decode(data)
        except (msgspec.DecodeError, RecursionError):
            return None
        return decoded

    def _get(self, path: str, params: Mapping[str, str]) -> msgspec.Raw:
        """The `data` of a successful answer; every other answer raises UpstreamError."""
        status, body = self.http.get(self.url + path, params)
        url, scrub = redact(self.url), self.http.scrub
        try:
            payload: _Envelope | None = msgspec.json.decode(body, type=_Envelope)
        except (msgspec.DecodeError, RecursionError):
            payload = None
        if status >= 400 or (payload is not None and payload.status == "error"):
            if payload is not None and payload.status == "error":
                detail = f"{payload.errorType or 'error'}: {payload.error or ''}".strip()
                reason = QUERY_ERROR if status in (200, 400, 422) else HTTP_STATUS
            else:
                detail, reason = self.http.excerpt(body), HTTP_STATUS
            raise UpstreamError(
                reason, scrub(f"HTTP {status} from {url}{path}: {detail}"), status=status
            )
        if payload is None:
            start = self.http.excerpt(body)
            raise UpstreamError(MALFORMED, scrub(f"{url}{path} did not return JSON: ") + start)
        if payload.status != "success" or not payload.data:
            raise UpstreamError(MALFORMED, f"{url}{path}: unexpected response shape")
        # A querier's failed store (Thanos partial responses, VictoriaMetrics isPartial): the
        # result may lack series. PromQL's own annotations ("PromQL info: metric might not be
        # a counter ...", which older Prometheus and Thanos put under warnings) are not that.
        warnings = [str(w) for w in payload.warnings or [] if not str(w).startswith("PromQL ")]
        if warnings or payload.isPartial is True:
            detail = "; ".join(warnings) or "isPartial"
            raise UpstreamError(PARTIAL, scrub(f"{url}{path}: partial result: {detail}"))
        return payload.data


# The answer's shape, decoded straight into these (no intermediate dicts): less memory than a
# generic JSON parse, and a nested document that is not this shape is refused early.


class _Envelope(msgspec.Struct):
    status: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent
    errorType: str | None = None
    error: str | None = None
    warnings: list[object] | None = None
    isPartial: bool | None = None


class _ResultType(msgspec.Struct):
    resultType: str | None = None


class _Item(msgspec.Struct):
    metric: dict[str, str]
    value: tuple[float, str]  # [evaluation time, "value"]


class _Vector(msgspec.Struct):
    result: list[_Item]


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:160]
