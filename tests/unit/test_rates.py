"""Windowed rates with counter resets, gauge means, and the in-process look-back."""

from __future__ import annotations

import random

import pytest

from exporter.model.lookback import LookbackTracker
from exporter.sources.rates import SeriesWindow


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
    # After a gap longer than the window, the sample kept from before it is not averaged in.
    assert window_of([(0, 230), (30, 230), (3630, 60)], window=300).mean() == 60


def test_a_counter_updated_less_often_than_read_is_timed_by_its_updates() -> None:
    # DCGM refreshes every 30 s, the sidecar reads every 15 s: 300 W = 9000 J per update.
    # Reading the plain rate, the first pair of samples (no update between them) says 0 W.
    def reads(count: int) -> list[tuple[float, float]]:
        return [(15 * i, 1e6 + 9000 * ((15 * i + 10) // 30)) for i in range(count)]

    assert window_of(reads(2)).counter_rate() == 0.0  # what the plain rate would have said
    assert window_of(reads(2)).updated_counter_rate() is None  # not known yet, not zero
    assert window_of(reads(4)).updated_counter_rate() is None  # one update seen
    for count in range(5, 30):
        assert window_of(reads(count)).updated_counter_rate() == pytest.approx(300), count
    # A reset (driver reload) between updates still counts the new value as the increase.
    reset = [(0, 500.0), (15, 500.0), (30, 9500.0), (45, 9500.0), (60, 9000.0), (75, 9000.0)]
    assert window_of(reset).updated_counter_rate() == pytest.approx(300)
    # A counter updated at every read: the plain rate, from the second sample on.
    assert window_of([(0, 0.0), (15, 4500.0)]).updated_counter_rate() == pytest.approx(300)
    # A counter that never moves has no rate (its readings are stuck), rather than 0.
    assert window_of([(0, 5.0), (15, 5.0), (30, 5.0)]).updated_counter_rate() is None


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


def test_a_short_lookback_is_not_stretched_by_hourly_buckets() -> None:
    tracker = LookbackTracker(lookback=600)
    key = ("ns", "m")
    tracker.observe(key, 0, 1000, True, 800, 4)
    tracker.observe(key, 30, 0, False, 400, 4)
    for t in range(60, 700, 30):
        tracker.observe(key, t, 10, True, 500, 4)
    tracker.prune(700)
    history = tracker.history(key)
    # Ten minutes on, the early peak and idle window are gone (not kept until the hour).
    assert history.peak_tokens_per_second == 10 and history.idle_floor_w_per_gpu is None


def test_lookback_history_equals_a_scan_of_the_buckets_kept() -> None:
    """Peak and idle floor are kept up to date as buckets fill and age out: after any mix of
    observations and prunes they equal the highest peak and lowest idle of what is left."""
    rng = random.Random(7)
    tracker = LookbackTracker(lookback=3600, bucket=300, min_idle_w_per_gpu=20)
    key = ("ns", "m")
    seen: list[tuple[float, float, bool, float]] = []  # (t, tok/s, active, W per GPU)
    for step in range(400):
        t = step * 45.0
        active = rng.random() < 0.6
        tps = rng.uniform(1, 500) if active else 0.0
        watts = rng.uniform(40, 700) * 4
        tracker.observe(key, t, tps, active, watts, 4)
        seen.append((t, tps, active, watts / 4))
        if step % 7:
            continue
        tracker.prune(t)
        kept = [s for s in seen if s[0] // 300 * 300 + 300 > t - 3600]  # buckets not aged out
        history = tracker.history(key)
        peaks = [tps for _, tps, _, _ in kept]
        idles = [w for _, _, on, w in kept if not on and w >= 20]
        assert history.peak_tokens_per_second == (max(peaks) or None)
        assert history.idle_floor_w_per_gpu == (min(idles) if idles else None)
