"""Grid regions and node mapping: eGRID2023 rev2 values, the NRP sites as corrected with EPA's
ZIP table, and configured overrides."""

from __future__ import annotations

import pytest

from exporter.config import load
from exporter.model.grid import NodeRegionMap, builtin_regions, resolve_regions


def test_egrid_values_match_the_published_rates() -> None:
    regions = builtin_regions()
    # eGRID publishes lb/MWh: g/kWh = lb/MWh x 0.45359237 (1 lb = 453.59237 g).
    assert round(regions["CAMX"].location, 1) == 194.3
    assert round(regions["US"].location, 1) == 348.0
    assert round(regions["MROW"].location, 1) == 417.4
    assert round(regions["NYCW"].location, 1) == 392.1
    assert round(regions["SRVC"].location, 1) == 269.2
    assert round(regions["SPNO"].location, 1) == 391.0
    assert round(regions["ERCT"].location, 1) == 332.9
    assert round(regions["HIOA"].location, 1) == 675.6
    assert regions["CAMX"].location_source == "egrid2023rev2"
    assert regions["KR"].location == 415.65 and regions["KR"].location_source == "ember2024"
    assert len([r for r in regions.values() if r.location_source == "egrid2023rev2"]) == 28
    assert all(r.market is None for r in regions.values())  # market basis: configured only


@pytest.mark.parametrize(
    ("node", "region"),
    [
        ("node-1-2.sdsc.optiputer.net", "CAMX"),
        ("k8s-a6000-01.csus.edu", "CAMX"),
        ("nautilus02.hsrn.nyu.edu", "NYCW"),  # not NYUP: NYU is in NYC/Westchester
        ("gpu-1.clemson.edu", "SRVC"),  # not SRSO: Duke Energy Carolinas
        ("gpu-1.ksu.edu", "SPNO"),  # not SPSO: Evergy
        ("gpu-1.tacc.utexas.edu", "ERCT"),  # ERCO is a balancing authority, not a subregion
        ("hcc-prp-c1234.unl.edu", "MROW"),
        ("gpu.its.hawaii.edu", "HIOA"),
        ("node.kreonet.net", "KR"),
        ("csumb.nrp.example", "CAMX"),
        ("SDSC-GPU-01", "CAMX"),
    ],
)
def test_nrp_sites_map_to_their_subregions(node: str, region: str) -> None:
    config = load()
    mapping = NodeRegionMap(
        [(r.pattern, r.region) for r in config.grid.nodes], config.grid.default_region
    )
    assert mapping.region_of(node) == (region, True)


def test_unknown_nodes_get_the_default_and_say_so() -> None:
    mapping = NodeRegionMap([(r"\.unl\.", "MROW")], "US")
    assert mapping.region_of("gpu-7.example.org") == ("US", False)
    assert mapping.region_of("") == ("US", False)


def test_overrides_set_market_and_add_regions() -> None:
    config = load(
        overrides={
            "grid.regions": {
                "CAMX": {"market": 150.0, "market_source": "PPA 2025"},
                "SITE": {"location": 100.0, "source": "utility 2024"},
            },
        }
    )
    regions = resolve_regions(config.grid.regions)
    assert regions["CAMX"].location == builtin_regions()["CAMX"].location
    assert regions["CAMX"].market == 150.0 and regions["CAMX"].source("market") == "PPA 2025"
    assert regions["SITE"].location == 100.0 and regions["SITE"].source("location") == (
        "utility 2024"
    )
    assert regions["SITE"].market is None
