"""The Prometheus HTTP query API (Prometheus, Thanos, Mimir, VictoriaMetrics): instant
queries over an `HttpFetcher`, every answer checked and every failure an `UpstreamError`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.config import PrometheusSettings
from exporter.model.problems import (
    HTTP_STATUS,
    MALFORMED,
    PARTIAL,
    QUERY_ERROR,
    UpstreamError,
)
from exporter.sources.http import HttpFetcher, HttpOptions, snippet
from exporter.text import redact


@dataclass(frozen=True)
class Sample:
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

    def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
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
        data: dict[str, Any] = payload["data"]
        return data


def _decode(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
