"""The cycle engine: counters, staleness, vanishing models, caps and error accounting, with
time under freezegun's control."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import pytest
from freezegun import freeze_time

from exporter.config import load
from exporter.engine import Engine
from exporter.model.observations import ENERGY_COUNTER, Observation, PodGpus, PodTokens
from exporter.model.problems import (
    CONNECT,
    HTTP_STATUS,
    INVALID_VALUE,
    TIMEOUT,
    Problem,
    UpstreamError,
)

NODE = "gpu-a.sdsc.optiputer.net"  # CAMX
CAMX = 428.464 * 0.45359237


def observation(
    now: float, models: Iterable[tuple[str, float, float]], problems: tuple = ()
) -> Observation:
    gpus, toks = [], []
    for model, watts, tps in models:
        pod = f"{model}-pod"
        gpus.append(PodGpus("llm", pod, NODE, "NVIDIA H100 80GB HBM3", 1, watts, ENERGY_COUNTER))
        toks.append(PodTokens("llm", pod, model, tps * 0.9, tps * 0.1))
    return Observation(now, tuple(gpus), tuple(toks), problems=problems)


class ScriptedSource:
    """A source that replays scripted observations or failures (our own interface)."""

    name = "prometheus"
    upstreams = ("prometheus",)
    gpu_upstream = "prometheus"
    reads = "queries"
    window = 300.0

    def __init__(self, frozen, script: list) -> None:
        self.frozen, self.script, self.calls = frozen, list(script), 0

    @property
    def requests_by_upstream(self) -> dict[str, int]:
        return {"prometheus": self.calls}

    def fetch(self) -> Observation:
        self.calls += 1
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return observation(self.frozen().timestamp(), *item)

    def close(self) -> None:
        pass


def make_engine(frozen, script: list, **overrides: object) -> Engine:
    config = load(overrides={"exporter.interval": 30, "exporter.stale_after": 3, **overrides})
    return Engine(config, ScriptedSource(lambda: frozen.time_to_freeze, script))


def totals(engine: Engine, model: str) -> tuple[float, float]:
    snapshot = engine.state.snapshot
    key = ("llm", model)
    return (
        snapshot.energy_joules_total[key]["gpu"],
        snapshot.co2_grams_total[key][("gpu", "location")],
    )


def test_counters_integrate_power_over_time_capped_at_the_window() -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = make_engine(frozen, [([("m", 1000, 100)],)] * 3)
        assert engine.run_cycle()
        assert totals(engine, "m") == (0.0, 0.0)  # the first sighting starts the counter
        frozen.tick(30)
        engine.run_cycle()
        energy, co2 = totals(engine, "m")
        assert energy == pytest.approx(1000 * 30)
        assert co2 == pytest.approx(1000 * 30 / 3.6e6 * CAMX)
        assert engine.state.snapshot.energy_joules_total[("llm", "m")]["facility"] == (
            pytest.approx(1000 * 30 * 1.2 * 1.4)
        )
        frozen.tick(3600)  # a long gap: only one window's worth is known
        engine.run_cycle()
        assert totals(engine, "m")[0] == pytest.approx(1000 * (30 + 300))


def test_stale_snapshot_is_withdrawn_and_comes_back() -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        down = UpstreamError(CONNECT, "cannot connect")
        engine = make_engine(
            frozen, [([("m", 500, 100)],), down, down, down, down, ([("m", 500, 100)],)]
        )
        engine.run_cycle()
        assert engine.ready.is_set() and not engine.is_stale()
        for _ in range(3):
            frozen.tick(30)
            assert not engine.run_cycle()
        # Last good cycle 90 s ago: exactly the limit, still current but upstream down.
        assert not engine.state.last_cycle_ok and not engine.is_stale()
        frozen.tick(30)
        engine.run_cycle()
        assert engine.is_stale()
        assert engine.state.errors_total[("prometheus", CONNECT)] == 4
        frozen.tick(30)
        assert engine.run_cycle() and not engine.is_stale()


def test_vanished_models_vanish_and_counters_never_decrease() -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = make_engine(
            frozen,
            [
                ([("a", 100, 50), ("b", 200, 50)],),
                ([("a", 100, 50), ("b", 200, 50)],),
                ([("a", 100, 50)],),
                ([("a", 100, 50), ("b", 200, 50)],),
                ([("a", 100, 50), ("b", 200, 50)],),
            ],
        )
        engine.run_cycle()
        frozen.tick(30)
        engine.run_cycle()
        before = totals(engine, "b")[0]
        frozen.tick(30)
        engine.run_cycle()
        assert [f.model for f in engine.state.snapshot.models] == ["a"]
        assert ("llm", "b") not in engine.state.snapshot.energy_joules_total
        frozen.tick(30)
        engine.run_cycle()
        # Back after a cycle away: its return only restarts the clock, like a first sighting;
        # the time it was gone is not credited.
        assert totals(engine, "b")[0] == pytest.approx(before)
        frozen.tick(30)
        engine.run_cycle()
        assert totals(engine, "b")[0] == pytest.approx(before + 200 * 30)


def test_model_cap_keeps_the_biggest_and_counts_the_rest(caplog) -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = make_engine(
            frozen,
            [([("a", 100, 50), ("b", 300, 50), ("c", 200, 50)],)],
            **{"exporter.max_models": 2},
        )
        engine.run_cycle()
        snapshot = engine.state.snapshot
        assert sorted(f.model for f in snapshot.models) == ["b", "c"]
        assert snapshot.models_dropped == 1
        assert "over exporter.max_models=2" in caplog.text


def test_problems_are_counted_every_time_and_logged_once(caplog) -> None:
    caplog.set_level(logging.WARNING)
    problem = (Problem("prometheus", INVALID_VALUE, "query power_gauge: nan for pod llm/x"),)
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = make_engine(frozen, [([("m", 1, 50)], problem)] * 2)
        engine.run_cycle()
        frozen.tick(30)
        engine.run_cycle()
    assert engine.state.errors_total[("prometheus", INVALID_VALUE)] == 2
    assert caplog.text.count("nan for pod llm/x") == 1


def test_the_loop_survives_unexpected_errors(caplog) -> None:
    stop = threading.Event()

    class Broken(ScriptedSource):
        def fetch(self) -> Observation:
            self.calls += 1
            if self.calls >= 2:
                stop.set()
            time.sleep(0.05)  # the failed cycle's time still counts in its duration
            raise RuntimeError("a bug")

    config = load(overrides={"exporter.interval": 1})
    engine = Engine(config, Broken(None, []))
    engine.run_forever(stop)
    assert engine.state.errors_total[("prometheus", "internal_error")] == 2
    assert engine.state.up == {"prometheus": False}  # a failed cycle is a failed cycle
    assert engine.state.cycle_duration_seconds >= 0.05
    assert "cycle failed unexpectedly" in caplog.text


def test_observed_idle_floor_of_a_pod_serving_two_models() -> None:
    """An idle 8-GPU pod at 800 W serving two models: each model is charged half the pod's
    power and half its GPUs, so its idle floor is 400 W and explains all of its power."""

    class SharedPod(ScriptedSource):
        def fetch(self) -> Observation:
            self.calls += 1
            now = self.frozen().timestamp()
            gpus = (PodGpus("llm", "p", NODE, "NVIDIA H100 80GB HBM3", 8, 800.0, ENERGY_COUNTER),)
            tokens = (PodTokens("llm", "p", "a", 0.0, 0.0), PodTokens("llm", "p", "b", 0.0, 0.0))
            return Observation(now, gpus, tokens)

    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = Engine(load(), SharedPod(lambda: frozen.time_to_freeze, []))
        engine.run_cycle()
        frozen.tick(30)
        engine.run_cycle()
    for f in engine.state.snapshot.models:
        assert f.info_value("idle_source") == "observed"
        assert f.power_w["gpu"] == pytest.approx(400)
        assert f.idle_power_w == pytest.approx(400) and f.idle_power_ratio == pytest.approx(1.0)


class HardwareScript(ScriptedSource):
    """Replays (GPU product, GPU count, watts, tok/s) for one model's pod, one per cycle."""

    def fetch(self) -> Observation:
        self.calls += 1
        product, count, watts, tps = self.script.pop(0)
        now = self.frozen().timestamp()
        gpus = (PodGpus("llm", "p", NODE, product, count, watts, ENERGY_COUNTER),)
        return Observation(now, gpus, (PodTokens("llm", "p", "m", tps * 0.9, tps * 0.1),))


def run_script(script: list[tuple[str, int, float, float]]):
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = Engine(load(), HardwareScript(lambda: frozen.time_to_freeze, script))
        for _ in range(len(script)):
            assert engine.run_cycle()
            frozen.tick(30)
    return engine.state.snapshot.models[0]


H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"


def test_a_model_moved_to_other_gpus_does_not_keep_their_idle_floor() -> None:
    # Idle on 8 H100s at 150 W each, then serving from one A100 at 140 W: the H100 floor
    # (150 W per GPU, above the A100's whole draw) must not read as the A100's; the GPU
    # table's 70 W does until the A100 has been seen idle.
    f = run_script([(H100, 8, 1200.0, 0.0)] * 3 + [(A100, 1, 140.0, 500.0)])
    assert f.info_value("idle_source") == "gpu_table"
    assert f.idle_power_w == pytest.approx(70.0)
    assert f.joules_per_token[("gpu", "marginal")] == pytest.approx(70.0 / 500.0)


def test_an_idle_window_at_zero_watts_is_not_an_idle_floor() -> None:
    # A stuck energy counter reads 0 W for one idle window: no GPU idles at 0 W, so the
    # floor stays the plausible one (100 W per GPU), not 0 for a whole look-back.
    f = run_script([(H100, 8, 800.0, 0.0), (H100, 8, 0.0, 0.0), (H100, 8, 2400.0, 1000.0)])
    assert f.info_value("idle_source") == "observed"
    assert f.idle_power_w == pytest.approx(800.0)


def test_the_state_says_why_the_last_cycle_failed_until_one_succeeds() -> None:
    refused = UpstreamError(CONNECT, "cannot connect to http://prom:9090: Connection refused")
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = make_engine(frozen, [([("m", 1000, 100)],), refused, ([("m", 1000, 100)],)])
        engine.run_cycle()
        assert engine.state.failure == ()
        engine.run_cycle()
        (why,) = engine.state.failure
        assert (why.upstream, why.reason) == ("prometheus", CONNECT)
        assert "Connection refused" in why.message
        engine.run_cycle()
        assert engine.state.failure == ()


def test_a_failure_is_logged_when_it_starts_changes_and_every_so_often(caplog) -> None:
    """An outage of an hour is not 120 warnings: the same failure again goes to debug, with a
    reminder every REMIND_EVERY cycles; another failure, or a recovery, is news."""
    refused = UpstreamError(CONNECT, "cannot connect to http://prom:9090: Connection refused")
    slow = UpstreamError(TIMEOUT, "http://prom:9090 did not answer within 10s")
    # A 503 whose body names the request: the same failure each time, in other words.
    busy = [
        UpstreamError(HTTP_STATUS, f"HTTP 503: overloaded (request {n})", status=503)
        for n in range(3)
    ]
    cycles = [refused] * (Engine.REMIND_EVERY + 1) + [slow, ([("m", 1000, 100)],), refused]
    cycles += [([("m", 1000, 100)],), *busy]
    caplog.set_level(logging.DEBUG, logger="exporter")
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = make_engine(frozen, cycles)
        for _ in cycles:
            engine.run_cycle()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        "upstream prometheus failed (reason=connect, 1 in a row): cannot connect to "
        "http://prom:9090: Connection refused",
        f"upstream prometheus failed (reason=connect, {Engine.REMIND_EVERY} in a row): cannot "
        "connect to http://prom:9090: Connection refused",
        f"upstream prometheus failed (reason=timeout, {Engine.REMIND_EVERY + 2} in a row): "
        "http://prom:9090 did not answer within 10s",
        "upstream prometheus failed (reason=connect, 1 in a row): cannot connect to "
        "http://prom:9090: Connection refused",
        "upstream prometheus failed (reason=http_status, 1 in a row): HTTP 503: overloaded "
        "(request 0)",
    ]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "in a row" in r.message]
    assert len(debug) == Engine.REMIND_EVERY - 1 + 2
    assert "recovered after 22 failed cycle(s)" in caplog.text


def test_the_state_keeps_the_last_good_cycles_problems() -> None:
    bad = Problem("prometheus", INVALID_VALUE, "query busy: NaN for llm/p")
    refused = UpstreamError(CONNECT, "cannot connect")
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = make_engine(frozen, [([("m", 1000, 100)], (bad,)), refused, ([("m", 1000, 100)],)])
        engine.run_cycle()
        assert engine.state.problems == (bad,)
        engine.run_cycle()  # a failed cycle says nothing new about the last good one
        assert engine.state.problems == (bad,)
        engine.run_cycle()
        assert engine.state.problems == ()


def test_a_bug_in_a_cycle_is_the_failure_without_its_traceback(caplog) -> None:
    class Broken(ScriptedSource):
        def fetch(self) -> Observation:
            raise KeyError("lce_pod")

    config = load(overrides={"exporter.interval": 1})
    engine = Engine(config, Broken(time.time, []))
    stop = threading.Event()
    engine.listeners.append(stop.set)
    with caplog.at_level(logging.ERROR):
        engine.run_forever(stop)
    (why,) = engine.state.failure
    assert why.reason == "internal_error" and "lce_pod" not in why.message


def test_the_snapshot_counts_the_nodes_and_those_no_pattern_matched() -> None:
    config = load()
    engine = Engine(config, ScriptedSource(time.time, []))
    rows = [("a", NODE), ("b", "gpu-1.example.org"), ("c", "gpu-1.example.org")]
    snapshot = engine.compute(
        Observation(
            time.time(),
            tuple(
                PodGpus("llm", p, n, "NVIDIA H100 80GB HBM3", 1, 300, ENERGY_COUNTER)
                for p, n in rows
            ),
            tuple(PodTokens("llm", p, f"m-{p}", 90, 10) for p, _ in rows),
        )
    )
    assert (snapshot.nodes, snapshot.unmapped_nodes) == (2, 1)
