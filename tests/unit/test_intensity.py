"""The grid intensity in force: live values while fresh, the annual ones after max_age (or
before the first value), marginal only while live; and the CO2 step on top of them (each pod
on its own zone, power-weighted)."""

from __future__ import annotations

import pytest

from exporter.config import load
from exporter.model import steps as fig
from exporter.model.intensity import BASES, annual, in_force
from exporter.model.settings import FigureSettings
from tests.figure_parts import CAMX, MROW, SDSC, UNL, served, share
from tests.grid_feeds import MAX_AGE, slot

SETTINGS = FigureSettings.from_config(load(overrides={"grid.regions": {"CAMX": {"market": 90}}}))
NOW = 1_800_000_000.0


def test_annual_values_alone() -> None:
    grid = annual(SETTINGS.regions)
    assert grid.intensity("CAMX", "location") == pytest.approx(CAMX)
    assert grid.values[("CAMX", "location")].source == "egrid2023rev2"
    assert grid.values[("CAMX", "market")].source == "config"
    assert grid.intensity("CAMX", "marginal") is None  # no annual marginal figure
    assert grid.intensity("MROW", "market") is None
    assert grid.ages == {} and grid.fallen_back() == frozenset()


def test_a_fresh_live_value_is_in_force_with_its_source() -> None:
    grid = in_force(
        SETTINGS.regions,
        [slot("CAMX", 151.0, NOW - 600), slot("CAMX", 410.0, NOW - 60, "marginal")],
        NOW,
    )
    assert grid.values[("CAMX", "location")].grams_per_kwh == 151.0
    assert grid.values[("CAMX", "location")].source == "electricitymaps"
    assert grid.values[("CAMX", "marginal")].source == "watttime"
    assert grid.intensity("CAMX", "market") == 90  # configured factors are never live
    assert grid.intensity("MROW", "location") == pytest.approx(MROW)  # no zone: annual
    assert grid.ages == {("CAMX", "location"): 600.0, ("CAMX", "marginal"): 60.0}


@pytest.mark.parametrize("age", [MAX_AGE + 1, MAX_AGE * 10])
def test_past_max_age_location_falls_back_and_marginal_goes(age: float) -> None:
    slots = [slot("CAMX", 151.0, NOW - age), slot("CAMX", 410.0, NOW - age, "marginal")]
    grid = in_force(SETTINGS.regions, slots, NOW)
    assert grid.values[("CAMX", "location")].source == "egrid2023rev2"
    assert grid.intensity("CAMX", "location") == pytest.approx(CAMX)
    assert grid.intensity("CAMX", "marginal") is None
    assert grid.ages[("CAMX", "location")] == age
    assert grid.fallen_back() == {("CAMX", "location"), ("CAMX", "marginal")}


def test_exactly_max_age_is_still_in_force() -> None:
    grid = in_force(SETTINGS.regions, [slot("CAMX", 151.0, NOW - MAX_AGE)], NOW)
    assert grid.intensity("CAMX", "location") == 151.0


def test_before_the_first_value_the_age_counts_from_the_first_request() -> None:
    grid = in_force(SETTINGS.regions, [slot("CAMX", None, NOW, since=NOW - 42)], NOW)
    assert grid.values[("CAMX", "location")].source == "egrid2023rev2"
    assert grid.ages[("CAMX", "location")] == 42
    # A provider's timestamp ahead of this clock is age 0, not negative.
    ahead = in_force(SETTINGS.regions, [slot("CAMX", 151.0, NOW + 30)], NOW)
    assert ahead.ages[("CAMX", "location")] == 0


def test_two_zones_are_power_weighted_pod_by_pod() -> None:
    pods = (share(watts=600), share("q", node=UNL, watts=400))
    regions = {SDSC: "CAMX", UNL: "MROW"}
    grid = in_force(
        SETTINGS.regions,
        [
            slot("CAMX", 120.0, NOW),
            slot("MROW", 600.0, NOW),
            slot("CAMX", 900.0, NOW, "marginal"),
        ],
        NOW,
    )
    co2 = fig.carbon(pods, regions, SETTINGS, fig.gpu_power(served(*pods)), 1000.0, grid)
    assert co2.intensity["location"] == pytest.approx((600 * 120 + 400 * 600) / 1000)
    assert co2.per_token[("gpu", "location")] == pytest.approx(
        (600 * 120 + 400 * 600) / 3.6e6 / 1000
    )
    # Marginal only where every pod's region has a value: MROW has none.
    assert "marginal" not in co2.intensity and "market" not in co2.intensity
    camx_only = fig.carbon(pods[:1], regions, SETTINGS, fig.gpu_power(served(pods[0])), 500, grid)
    assert camx_only.per_token[("gpu", "marginal")] == pytest.approx(600 * 900 / 3.6e6 / 500)
    assert camx_only.intensity == {"location": 120.0, "market": 90.0, "marginal": 900.0}


def test_bases_are_the_catalogued_ones() -> None:
    assert BASES == ("location", "market", "marginal")
