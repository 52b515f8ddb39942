"""The grid intensity in force for each region and basis, at one moment: a provider's live
value while it is fresh, else the region's annual value. Pure: the live feed's state and the
annual regions in, an immutable record out.

Bases: `location` (annual dataset, or Electricity Maps' hourly value), `market` (configured
factors only) and `marginal` (WattTime's marginal operating emission rate only: there is no
annual marginal figure to fall back to, so a stale marginal value leaves the basis out)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.model.grid import GridRegion

BASES = ("location", "market", "marginal")
Slot = tuple[str, str]  # (region, basis)


@dataclass(frozen=True)
class LiveValue:
    """One value from a provider, as it answered."""

    grams_per_kwh: float
    at: float  # Unix time the value applies from, by the provider's own timestamp
    estimated: bool  # the provider says it is an estimate, not a measurement
    method: str = ""  # how it was estimated, as the provider names it ("" if not said)


@dataclass(frozen=True)
class LiveSlot:
    """A region's live feed for one basis, as the feed holds it now."""

    region: str
    basis: str
    source: str  # the provider's name
    zone: str  # the provider's name for the region's grid
    max_age: float  # seconds after `value.at` that the value stays in force
    value: LiveValue | None  # the newest good value, None before the first
    since: float  # Unix time the feed started asking

    def age(self, now: float) -> float:
        """Seconds since the newest value applies from (since the first request while there
        is none), never negative."""
        start = self.value.at if self.value is not None else self.since
        return max(now - start, 0.0)

    def fresh(self, now: float) -> bool:
        return self.value is not None and self.age(now) <= self.max_age


@dataclass(frozen=True)
class InForce:
    """The intensity a region's figures use on one basis, and where it comes from."""

    grams_per_kwh: float
    source: str  # the provider's name, or the annual dataset's
    live: LiveSlot | None = None  # the live slot it comes from, if live


@dataclass(frozen=True)
class GridIntensities:
    """Every region's intensity in force by basis, and every live slot's age."""

    values: Mapping[Slot, InForce]
    live: Mapping[Slot, LiveSlot]  # every configured live slot, fresh or not
    ages: Mapping[Slot, float]  # seconds, per configured live slot

    def intensity(self, region: str, basis: str) -> float | None:
        found = self.values.get((region, basis))
        return found.grams_per_kwh if found is not None else None

    def fallen_back(self) -> frozenset[Slot]:
        """Live slots past their max_age: a value too old, or none received within max_age
        of the first request (waiting for the first value is not falling back, until then)."""
        return frozenset(key for key, age in self.ages.items() if age > self.live[key].max_age)


def annual(regions: Mapping[str, GridRegion]) -> GridIntensities:
    """The annual values alone: every region's location value, and its market factor where
    configured."""
    return in_force(regions, (), 0.0)


def in_force(
    regions: Mapping[str, GridRegion], slots: Iterable[LiveSlot], now: float
) -> GridIntensities:
    """Each region's intensity per basis at `now`: a live slot's value while no older than
    its max_age, else the annual value (location, market) or none (marginal)."""
    values: dict[Slot, InForce] = {}
    for name, region in regions.items():
        for basis in ("location", "market"):
            value = region.intensity(basis)
            if value is not None:
                values[(name, basis)] = InForce(value, region.source(basis))
    live = {(slot.region, slot.basis): slot for slot in slots}
    for key, slot in live.items():
        if slot.value is not None and slot.fresh(now):
            values[key] = InForce(slot.value.grams_per_kwh, slot.source, slot)
    ages = {key: slot.age(now) for key, slot in live.items()}
    return GridIntensities(values, live, ages)
