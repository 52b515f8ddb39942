"""Grid regions: built-in annual intensities, config overrides, and node-to-region mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from exporter.config import Region
from exporter.data import EGRID_SECTION, EMBER_SECTION, table

LB_PER_MWH_TO_G_PER_KWH = 0.45359237


@dataclass(frozen=True)
class GridRegion:
    """A grid region's CO2 intensity in g/kWh for each accounting basis it has."""

    name: str
    title: str
    location: float
    location_source: str
    market: float | None = None
    market_source: str = ""

    def intensity(self, basis: str) -> float | None:
        return self.location if basis == "location" else self.market

    def source(self, basis: str) -> str:
        return self.location_source if basis == "location" else self.market_source


@cache
def builtin_regions() -> Mapping[str, GridRegion]:
    """EPA eGRID2023 rev2 subregions (converted from lb/MWh) and Ember 2024 countries."""
    data = table("grid_regions.yaml")
    regions: dict[str, GridRegion] = {}
    for code, (title, lb_per_mwh) in data[EGRID_SECTION].items():
        grams = lb_per_mwh * LB_PER_MWH_TO_G_PER_KWH
        regions[code] = GridRegion(code, title, grams, "egrid2023rev2")
    for code, (title, grams) in data[EMBER_SECTION].items():
        regions[code] = GridRegion(code, title, float(grams), "ember2024")
    return regions


def resolve_regions(overrides: Mapping[str, Region]) -> dict[str, GridRegion]:
    """Built-in regions with config overrides applied (only the fields a user set).

    `overrides` maps a region name to a config `Region`."""
    regions = dict(builtin_regions())
    for name, region in overrides.items():
        base = regions.get(name)
        given = region.location is not None
        location = region.location if given else (base.location if base else None)
        if location is None:  # config validation guarantees new regions carry one
            raise ValueError(f"grid.regions.{name}.location is required")
        if given:
            location_source = region.source or "config"
        else:
            location_source = base.location_source if base else "config"
        regions[name] = GridRegion(
            name=name,
            title=region.name or (base.title if base else name),
            location=location,
            location_source=location_source,
            market=region.market if region.market is not None else (base.market if base else None),
            market_source=region.market_source or ("config" if region.market is not None else ""),
        )
    return regions


class NodeRegionMap:
    """Maps node names to grid regions by ordered regular expressions, with a default."""

    def __init__(self, rules: list[tuple[str, str]], default: str) -> None:
        self._rules = [(re.compile(pattern, re.IGNORECASE), region) for pattern, region in rules]
        self.default = default
        self._cache: dict[str, tuple[str, bool]] = {}

    def region_of(self, node: str) -> tuple[str, bool]:
        """(region, matched): matched is False when the default region was used."""
        hit = self._cache.get(node)
        if hit is None:
            hit = (self.default, False)
            for pattern, region in self._rules:
                if node and pattern.search(node):
                    hit = (region, True)
                    break
            if len(self._cache) < 100_000:
                self._cache[node] = hit
        return hit
