"""A live grid feed with fixed contents, for engine and collector tests (the engine's own
`GridFeed` interface; the real feed is tested against the provider stand-ins)."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.model.intensity import LiveSlot, LiveValue

MAX_AGE = 3 * 3600.0


def slot(
    region: str,
    grams: float | None,
    at: float,
    basis: str = "location",
    *,
    since: float | None = None,
    estimated: bool = False,
    method: str = "",
) -> LiveSlot:
    """A slot of the provider that feeds `basis`, holding `grams` g/kWh from time `at` (None:
    nothing received yet, asked since `since`, default `at`)."""
    source, zone = ("watttime", "CAISO_NORTH") if basis == "marginal" else ("electricitymaps", "Z")
    value = None if grams is None else LiveValue(grams, at, estimated, method)
    return LiveSlot(region, basis, source, zone, MAX_AGE, value, at if since is None else since)


@dataclass
class StaticGrid:
    slots_now: list[LiveSlot]
    up: dict[str, bool] = field(default_factory=lambda: {"electricitymaps": True, "watttime": True})
    errors_by_upstream: dict[tuple[str, str], int] = field(default_factory=dict)
    requests_by_upstream: dict[str, int] = field(
        default_factory=lambda: {"electricitymaps": 3, "watttime": 5}
    )
    closed: bool = False

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(self.up)

    def slots(self) -> tuple[LiveSlot, ...]:
        return tuple(self.slots_now)

    def close(self) -> None:
        self.closed = True
