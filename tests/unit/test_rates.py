"""Windowed rates with counter resets, gauge means, and the in-process look-back."""

from __future__ import annotations

import pytest

from exporter.lookback import LookbackTracker
from exporter.rates import SeriesWindow


def window_of(points: list[tuple[float, float]], window: float = 300) -> SeriesWindow:
    series = SeriesWindow(window)
    for t, v in points:
        series.add(t, v)
    return series


def test_rate_works_from_the_second_sample() -> None:
    assert window_of([(0, 100)]).counter_rate() is None
    assert window_of([(0, 100), (30, 400)]).counter_rate() == pytest.approx(10)


def test_reset_counts_the_new_value_as_the_increase() -> None:
    # 100 -> 400 (+300), restart, 50 (+50), 350 (+300): 650 over 90 s.
    series = window_of([(0, 100), (30, 400), (60, 50), (90, 350)])
    assert series.counter_rate() == pytest.approx(650 / 90)


def test_window_drops_old_samples_but_keeps_two() -> None:
    series = window_of([(0, 0), (100, 100), (200, 300), (400, 700)], window=150)
    assert len(series) == 2 and series.counter_rate() == pytest.approx(2.0)
    sparse = window_of([(0, 0), (1000, 500)], window=60)
    assert sparse.counter_rate() == pytest.approx(0.5)  # cycles sparser than the window


def test_time_going_backwards_is_ignored() -> None:
    series = window_of([(10, 100), (40, 400), (20, 999), (40, 5)])
    assert len(series) == 2 and series.counter_rate() == pytest.approx(10)


def test_gauge_mean() -> None:
    assert window_of([(0, 100), (30, 200), (60, 300)]).mean() == 200
    assert SeriesWindow(60).mean() is None


def test_lookback_peak_and_idle_floor() -> None:
    tracker = LookbackTracker(lookback=3600, bucket=300)
    key = ("ns", "m")
    tracker.observe(key, 0, 100, True, 800, 4)
    tracker.observe(key, 400, 0, False, 320, 4)  # idle: 80 W per GPU
    tracker.observe(key, 800, 0, False, 360, 4)
    tracker.observe(key, 1200, 250, True, 1000, 4)
    history = tracker.history(key)
    assert history.peak_tokens_per_second == 250 and history.idle_floor_w_per_gpu == 80
    tracker.observe(key, 5400, 10, True, 500, 4)
    tracker.prune(5400)  # the early buckets age out
    history = tracker.history(key)
    assert history.peak_tokens_per_second == 10 and history.idle_floor_w_per_gpu is None
    assert tracker.history(("ns", "other")).peak_tokens_per_second is None
    tracker.prune(10_000)  # a model unseen for the whole look-back is forgotten
    assert tracker.history(key).peak_tokens_per_second is None


def test_lookback_prune_keeps_the_buckets_inside_the_window() -> None:
    tracker = LookbackTracker(lookback=3600, bucket=300)
    key = ("ns", "m")
    tracker.observe(key, 100, 0, False, 200, 4)  # 50 W per GPU, ages out
    tracker.observe(key, 2000, 0, False, 400, 4)  # 100 W per GPU, bucket 1800-2100
    tracker.observe(key, 2050, 0, False, 480, 4)  # same bucket, higher: the lowest is kept
    tracker.observe(key, 5000, 40, True, 900, 4)
    assert tracker.history(key).idle_floor_w_per_gpu == 50
    tracker.prune(5400)  # horizon 1800: the first bucket goes, 1800-2100 stays
    history = tracker.history(key)
    assert history.idle_floor_w_per_gpu == 100 and history.peak_tokens_per_second == 40
