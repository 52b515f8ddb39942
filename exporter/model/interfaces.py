"""What the engine needs of the parts that read upstreams: a source of observations and
the live grid feed. sources/ implements them; the engine and diagnose only see these."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from exporter.model.intensity import LiveSlot
from exporter.model.observations import Observation


class Source(Protocol):
    """What the engine needs of a source (Prometheus queries, direct pages)."""

    @property
    def name(self) -> str: ...

    @property
    def upstreams(self) -> tuple[str, ...]: ...  # values of the `upstream` label

    @property
    def gpu_upstream(self) -> str: ...  # the one of `upstreams` that GPU series come from

    @property
    def window(self) -> float: ...  # seconds over which power and token rates are means

    @property
    def reads(self) -> str: ...  # what cycles read: queries, recording_rules or pages

    @property
    def requests_by_upstream(self) -> Mapping[str, int]: ...  # HTTP requests so far

    def fetch(self) -> Observation: ...

    def close(self) -> None: ...


class GridFeed(Protocol):
    """What the engine needs of the live grid feed: its slots now (read, never waited for),
    and its upstreams' health, request and error counts (it counts its own, off the cycle)."""

    @property
    def upstreams(self) -> tuple[str, ...]: ...

    @property
    def requests_by_upstream(self) -> Mapping[str, int]: ...

    @property
    def errors_by_upstream(self) -> Mapping[tuple[str, str], int]: ...

    @property
    def up(self) -> Mapping[str, bool]: ...

    def slots(self) -> tuple[LiveSlot, ...]: ...

    def close(self) -> None: ...
