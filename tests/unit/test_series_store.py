"""The direct source's windows of samples: what a counter that steps back reads as, a glitch
or a restart, and what the rate over the window then says."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from exporter.config import load
from exporter.sources.plausibility import FP64_BLANK, STEP_BACK, Plausibility, Refusal
from exporter.sources.series_store import SeriesStore, series_key

PLAUSIBLE = Plausibility(load())
PAGE = "http://127.0.0.1:8000/metrics"
NAME = "vllm:generation_tokens_total"
LABELS = {"model_name": "m"}
KEY = series_key(PAGE, NAME, LABELS)


def counter_judge(
    name: str, labels: Mapping[str, str], value: float, previous: float | None
) -> Refusal | None:
    refusal = PLAUSIBLE.sample(value)
    if refusal is None and previous is not None:
        refusal = PLAUSIBLE.counter_step(previous, value)
    return refusal


def read(values: list[tuple[float, float]]) -> tuple[SeriesStore, list[Refusal | None]]:
    """Reads (time, value) samples of one counter one cycle each; the refusals per cycle."""
    store = SeriesStore(600, counter_judge)
    refusals = []
    for t, value in values:
        store.start_cycle()
        store.record(PAGE, [(NAME, LABELS, value)], t, set())
        refusals.append(store.refused.get(KEY))
    return store, refusals


def test_a_young_counter_that_restarts_past_half_its_old_value_is_read_as_a_restart() -> None:
    # 150 tok/s until 60 s (9,000 tokens); the server restarts at 75 s and serves 300 tok/s:
    # 4,500 at 90 s is a step back above half the old value, 13,500 at 120 s shows a counter
    # growing from 4,500 by more than half of it in one read, as only a young one does.
    store, refusals = read([(0, 0), (30, 4500), (60, 9000), (90, 4500), (120, 13500)])
    assert refusals == [None, None, None, STEP_BACK, None]
    # 9,000 before the restart, 13,500 after it (the 2,250 the old process counted after
    # its last read are lost, as rate() loses them), over 120 s.
    assert store.windows[KEY].counter_rate() == pytest.approx((9000 + 13500) / 120)


def test_a_small_step_back_then_on_as_before_stays_a_glitch() -> None:
    # An energy counter of 1e14 mJ stepping back by 1 kJ, then 300 W on from the old value.
    base = 1.26e14
    store, refusals = read([(0, base), (30, base - 1e6), (60, base + 60 * 300_000)])
    assert refusals == [None, STEP_BACK, None]
    assert store.windows[KEY].counter_rate() == pytest.approx(300_000)


def test_a_step_back_read_again_unchanged_stays_refused() -> None:
    # dcgm-exporter repeats a value until DCGM's next update: the same glitch read twice.
    base = 1.26e14
    store, refusals = read([(0, base), (30, base - 1e6), (45, base - 1e6), (75, base + 2.25e7)])
    assert refusals == [None, STEP_BACK, STEP_BACK, None]
    assert store.windows[KEY].counter_rate() == pytest.approx(300_000)


def test_a_restarted_counter_that_stays_between_half_and_its_old_value_is_refused_meanwhile() -> (
    None
):
    # After a burst the restarted server falls quiet: not yet growing like a young counter,
    # not yet past its old value. Withheld while it lasts, never read as a rate.
    _, refusals = read([(0, 0), (30, 9000), (60, 6000), (90, 6100), (120, 6200)])
    assert refusals == [None, None, STEP_BACK, STEP_BACK, STEP_BACK]


def test_an_old_counter_that_dips_far_and_comes_back_stays_a_glitch() -> None:
    # Ten million tokens at 500 tok/s: a read at 60 % of it, then on as before. Taken for a
    # restart, the window would read 167,000 tok/s.
    base = 10_000_000
    store, refusals = read([(0, base), (30, base + 15_000), (60, 6_000_000), (90, base + 45_000)])
    assert refusals == [None, None, STEP_BACK, None]
    assert store.windows[KEY].counter_rate() == pytest.approx(500)


def test_a_url_alternating_between_two_old_servers_never_adds_a_whole_counter() -> None:
    # A Service in front of two replicas: each read hits one or the other.
    a, b = 8_000_000, 5_000_000
    values = [(30 * i, (a if i % 2 == 0 else b) + 500 * 30 * i) for i in range(8)]
    store, refusals = read(values)
    assert refusals == [None, STEP_BACK] * 4
    assert store.windows[KEY].counter_rate() == pytest.approx(500)


def test_a_bad_read_after_a_step_back_never_makes_it_a_restart() -> None:
    # A young counter steps back, and the next read is DCGM's blank: refused, and the step
    # back stays out of the window; the read after shows the counter on as before.
    store, refusals = read([(0, 0), (30, 4500), (60, 9000), (90, 6000), (120, FP64_BLANK)])
    assert refusals[3:] == [STEP_BACK, refusals[4]] and refusals[4] is not None
    assert store.windows[KEY].counter_rate() == pytest.approx(150)


def test_a_step_back_waits_through_a_cycle_its_page_was_not_read() -> None:
    # The young counter of the restart case, with the read after the step back failing.
    store = SeriesStore(600, counter_judge)
    for t, value in [(0, 0), (30, 4500), (60, 9000), (90, 4500), (120, None), (150, 13500)]:
        store.start_cycle()
        if value is None:
            store.forget(set(), {PAGE})  # the page could not be read this cycle
            continue
        store.record(PAGE, [(NAME, LABELS, value)], t, set())
        store.forget({KEY}, set())
    assert KEY not in store.refused
    assert store.windows[KEY].counter_rate() == pytest.approx((9000 + 13500) / 150)
