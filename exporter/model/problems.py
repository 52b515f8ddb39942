"""Upstream trouble as data: the reasons it is counted by, a `Problem` a cycle survives, and
the `UpstreamError` that fails a cycle. Sources raise and report them; the engine counts them
(`llm_carbon_exporter_upstream_errors_total{upstream, reason}`) and logs each once while it
lasts; nothing downstream reads their message text to decide anything."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.text import one_line

# Reasons, the values of llm_carbon_exporter_upstream_errors_total{reason}.
CONNECT = "connect"
TIMEOUT = "timeout"
HTTP_STATUS = "http_status"
QUERY_ERROR = "query_error"
MALFORMED = "malformed_response"
TOO_LARGE = "response_too_large"
INVALID_VALUE = "invalid_value"
IMPLAUSIBLE = "implausible"  # a value no hardware produces: withheld (sources/plausibility.py)
NODE_MISMATCH = "node_mismatch"  # DCGM's node label disagrees with the Kubernetes node
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
    IMPLAUSIBLE,
    NODE_MISMATCH,
    MISSING_SERIES,
    AUTH_FILE,
    PARTIAL,
    INTERNAL,
)


def pod_ref(namespace: str, pod: str) -> str:
    """How a pod is named in problems and logs: `namespace/pod`."""
    return f"{namespace}/{pod}"


@dataclass(frozen=True)
class Problem:
    """Something wrong upstream that a cycle survives: counted under `reason`, logged once
    while it lasts. `pods` (as `namespace/pod`) are the serving pods whose figures it
    affects, where it affects particular ones."""

    upstream: str
    reason: str
    message: str
    pods: frozenset[str] = field(default_factory=frozenset)
    status: int = 0  # the HTTP status an upstream answered with, where that is the problem

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", one_line(self.message))

    @classmethod
    def of_pods(cls, upstream: str, reason: str, message: str, pods: Iterable[str]) -> Problem:
        return cls(upstream, reason, message, frozenset(pods))


class UpstreamError(Exception):
    """An upstream failure that fails the cycle (or one query or page, which the source then
    turns into a `Problem`), with a reason and a one-line message without secrets."""

    def __init__(
        self, reason: str, message: str, upstream: str | None = None, status: int = 0
    ) -> None:
        super().__init__(one_line(message))
        self.reason = reason
        self.upstream = upstream  # which upstream failed, where a source has several
        self.status = status  # the HTTP status it answered with, if that is the failure
        self.also: tuple[UpstreamError, ...] = ()  # other upstreams that failed in the same cycle

    def problem(self, upstream: str, context: str = "", pods: Iterable[str] = ()) -> Problem:
        """This failure as a problem the cycle survives: `context` before the message, and
        the pods it costs their figures."""
        text = f"{context}{self}" if context else str(self)
        return Problem(self.upstream or upstream, self.reason, text, frozenset(pods), self.status)
