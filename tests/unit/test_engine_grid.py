"""The engine with a live grid feed: each cycle's figures and counters at the intensity in
force, the annual fallback after max_age, marginal only while live, the feed's upstreams in
the exporter's own health and counts, and a fallback logged once while it lasts."""

from __future__ import annotations

import logging

import pytest
from freezegun import freeze_time

from exporter.config import load
from exporter.engine import Engine
from exporter.model.problems import TIMEOUT
from tests.grid_feeds import MAX_AGE, StaticGrid, slot
from tests.unit.test_engine import CAMX, ScriptedSource

GLM = ("llm", "glm")
WATTS, TPS = 1000.0, 100.0


def engine_and_grid(frozen, cycles: int) -> tuple[Engine, StaticGrid]:
    grid = StaticGrid([])
    config = load(overrides={"exporter.interval": 30})
    source = ScriptedSource(lambda: frozen.time_to_freeze, [([("glm", WATTS, TPS)],)] * cycles)
    return Engine(config, source, grid=grid), grid


def figures(engine: Engine):
    [model] = engine.state.snapshot.models
    return model


def test_each_cycle_uses_the_value_in_force_and_the_counters_integrate_it() -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine, grid = engine_and_grid(frozen, 4)
        now = frozen.time_to_freeze.timestamp()
        grid.slots_now = [slot("CAMX", 100.0, now), slot("CAMX", 500.0, now, "marginal")]
        engine.run_cycle()
        glm = figures(engine)
        assert glm.grid_intensity == {"location": 100.0, "marginal": 500.0}
        assert glm.co2_grams_per_token[("gpu", "location")] == pytest.approx(
            WATTS * 100 / 3.6e6 / TPS
        )
        frozen.tick(30)
        grid.slots_now = [slot("CAMX", 300.0, now + 30), slot("CAMX", 500.0, now, "marginal")]
        engine.run_cycle()
        co2 = engine.state.snapshot.co2_grams_total[GLM]
        # The 30 s since the last cycle at this cycle's intensity.
        assert co2[("gpu", "location")] == pytest.approx(WATTS * 30 / 3.6e6 * 300)
        assert co2[("gpu", "marginal")] == pytest.approx(WATTS * 30 / 3.6e6 * 500)


def test_stale_live_data_falls_back_and_marginal_stops(caplog) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine, grid = engine_and_grid(frozen, 5)
        now = frozen.time_to_freeze.timestamp()
        grid.slots_now = [slot("CAMX", 100.0, now), slot("CAMX", 500.0, now, "marginal")]
        engine.run_cycle()
        frozen.tick(MAX_AGE)
        engine.run_cycle()  # exactly max_age old: still in force
        assert figures(engine).grid_intensity["location"] == 100.0
        marginal_before = engine.state.snapshot.co2_grams_total[GLM][("gpu", "marginal")]
        frozen.tick(30)
        engine.run_cycle()
        glm = figures(engine)
        assert glm.grid_intensity == {"location": pytest.approx(CAMX)}
        assert ("gpu", "location") in glm.co2_grams_per_token  # never a gap
        assert engine.state.snapshot.grid.values[("CAMX", "location")].source == "egrid2023rev2"
        # The marginal counter stays exported but does not advance without a marginal value.
        totals = engine.state.snapshot.co2_grams_total[GLM]
        assert totals[("gpu", "marginal")] == marginal_before
        frozen.tick(30)
        engine.run_cycle()
        fallbacks = [r.getMessage() for r in caplog.records if "in force" in r.getMessage()]
        assert fallbacks == [
            "grid region CAMX: live location intensity from electricitymaps (zone Z) older "
            "than 10800s; the annual value is in force",
            "grid region CAMX: live marginal intensity from watttime (zone CAISO_NORTH) older "
            "than 10800s; no value is in force",
        ]
        now = frozen.time_to_freeze.timestamp()
        grid.slots_now = [slot("CAMX", 120.0, now), slot("CAMX", 500.0, now, "marginal")]
        frozen.tick(30)
        engine.run_cycle()
        assert figures(engine).grid_intensity == {"location": 120.0, "marginal": 500.0}
    assert "grid region CAMX: live location intensity in force again" in caplog.text


def test_waiting_for_the_first_value_is_not_a_fallback_until_max_age(caplog) -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine, grid = engine_and_grid(frozen, 2)
        grid.slots_now = [slot("CAMX", None, frozen.time_to_freeze.timestamp())]
        engine.run_cycle()
        assert "in force" not in caplog.text
        frozen.tick(MAX_AGE + 1)
        engine.run_cycle()
    assert "none received yet; the annual value is in force" in caplog.text


def test_the_feeds_upstreams_in_the_exporters_health() -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine, grid = engine_and_grid(frozen, 1)
        grid.up["watttime"] = False
        grid.errors_by_upstream[("watttime", TIMEOUT)] = 4
        engine.run_cycle()
    state = engine.state
    assert engine.upstreams == ("prometheus", "electricitymaps", "watttime")
    assert state.up == {"prometheus": True, "electricitymaps": True, "watttime": False}
    assert state.errors_total[("watttime", TIMEOUT)] == 4
    assert state.requests_total == {"prometheus": 1, "electricitymaps": 3, "watttime": 5}
    engine.close()
    assert grid.closed
