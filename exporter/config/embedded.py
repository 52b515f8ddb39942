"""The embedded defaults that describe a site (the National Research Platform's): the grid
mapping of nodes and the facility factors. Elsewhere they are wrong without saying so, so the
landing page and `diagnose` say when they are still in force."""

from __future__ import annotations

from functools import cache

from exporter.config.loading import build, default_document
from exporter.config.schema import Config

# The keys whose embedded values describe the NRP, in the order they are reported.
SITE_KEYS = ("grid.default_region", "grid.nodes", "facility.pue", "facility.host_overhead")


@cache
def embedded() -> Config:
    """The embedded defaults, as a configuration."""
    return build(default_document())


def _site(config: Config) -> dict[str, object]:
    return {
        "grid.default_region": config.grid.default_region,
        "grid.nodes": config.grid.nodes,
        "facility.pue": config.facility.pue,
        "facility.host_overhead": config.facility.host_overhead,
    }


def site_defaults_in_force(config: Config) -> tuple[str, ...]:
    """The keys of `SITE_KEYS` whose values are still the embedded NRP ones."""
    mine, theirs = _site(config), _site(embedded())
    return tuple(key for key in SITE_KEYS if mine[key] == theirs[key])
