"""The built-in tables (YAML beside this module): GPUs, models, grid regions. Each is read
once per process; what the figures make of them is in `exporter.model`."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

# Sections of grid_regions.yaml: EPA eGRID2023 rev2 subregions in lb/MWh, Ember 2024
# countries in g/kWh.
EGRID_SECTION = "egrid2023rev2_lb_per_mwh"
EMBER_SECTION = "ember2024_g_per_kwh"


@cache
def table(filename: str) -> Any:
    """The parsed contents of a built-in table (shared: do not modify)."""
    text = resources.files(__name__).joinpath(filename).read_text("utf-8")
    return yaml.safe_load(text)


def grid_region_codes() -> frozenset[str]:
    """The codes of every built-in grid region."""
    regions = table("grid_regions.yaml")
    return frozenset(regions[EGRID_SECTION]) | frozenset(regions[EMBER_SECTION])


def builtin_zones(provider: str) -> dict[str, str]:
    """The built-in map from grid region to a live provider's zone ({} where there is none)."""
    return dict(table("grid_zones.yaml").get(provider) or {})
