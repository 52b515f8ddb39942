"""The live grid feed's cache and schedule, with time under freezegun's control: one request
per zone per refresh, exponential back-off per zone up to an hour, Retry-After, the last good
value kept, failures counted and logged once while they last, and a background thread that a
slow provider never makes the engine wait for. The provider is scripted through the feed's
own `Provider` interface; the real providers are tested against the stand-ins."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
from freezegun import freeze_time

from exporter.model.intensity import LiveValue
from exporter.model.problems import CONNECT, HTTP_STATUS, TIMEOUT, UpstreamError
from exporter.sources.grid_live import MAX_BACKOFF_S, LiveGridFeed, ProviderFeed
from exporter.sources.grid_providers import RetryLater, retry_after_seconds

START = "2026-11-26 12:00:00"


class Scripted:
    """A provider answering from a script per zone: a number (g/kWh, dated now), a
    `LiveValue` or an exception; the last entry repeats."""

    name = "electricitymaps"
    basis = "location"

    def __init__(self, **script: list) -> None:
        self.script = script
        self.calls: list[tuple[str, float]] = []
        self.gate: threading.Event | None = None  # set: fetches wait for it

    @property
    def requests_made(self) -> int:
        return len(self.calls)

    def fetch(self, zone: str) -> LiveValue:
        self.calls.append((zone, time.time()))
        if self.gate is not None:
            self.gate.wait(5)
        steps = self.script[zone]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, LiveValue):
            return step
        return LiveValue(float(step), time.time(), False)

    def close(self) -> None:
        pass


def feed(provider: Scripted, refresh: float = 900.0, **zones: str) -> ProviderFeed:
    return ProviderFeed(provider, zones or {"CAMX": "A"}, refresh, 3 * 3600.0)


@pytest.fixture
def frozen() -> Iterator:
    with freeze_time(START) as frozen_time:
        yield frozen_time


def gaps(provider: Scripted) -> list[float]:
    at = times(provider)
    return [b - a for a, b in pairwise(at)]


def times(provider: Scripted, zone: str = "A") -> list[float]:
    first = provider.calls[0][1]
    return [at - first for z, at in provider.calls if z == zone]


def run_for(f: ProviderFeed, frozen, seconds: float, step: float = 1.0) -> None:
    for _ in range(int(seconds / step)):
        f.run_due()
        frozen.tick(step)


def test_one_request_per_zone_per_refresh_however_often_it_is_asked(frozen) -> None:
    provider = Scripted(A=[100], B=[200])
    f = feed(provider, 60.0, CAMX="A", NEWE="B", SPNO="A")  # two regions share zone A
    for _ in range(300):  # asked every second for five minutes
        f.run_due()
        frozen.tick(1)
    assert times(provider, "A") == [0, 60, 120, 180, 240]
    assert times(provider, "B") == [0, 60, 120, 180, 240]
    assert {(s.region, s.zone, s.value.grams_per_kwh) for s in f.slots() if s.value} == {
        ("CAMX", "A", 100.0),
        ("SPNO", "A", 100.0),
        ("NEWE", "B", 200.0),
    }
    assert f.up and f.errors == {}


def test_run_due_says_when_the_next_zone_is_due(frozen) -> None:
    f = feed(Scripted(A=[100]), 60.0)
    assert f.run_due() == 60
    frozen.tick(45)
    assert f.run_due() == 15


def test_back_off_doubles_from_refresh_up_to_an_hour(frozen) -> None:
    provider = Scripted(A=[UpstreamError(CONNECT, "refused")])
    f = feed(provider, 300.0)
    run_for(f, frozen, 6 * 3600, step=10)
    assert gaps(provider)[:5] == [300, 600, 1200, 2400, MAX_BACKOFF_S]
    assert set(gaps(provider)[4:]) == {MAX_BACKOFF_S}
    assert f.errors == {CONNECT: len(provider.calls)}
    assert not f.up


def test_a_refresh_longer_than_an_hour_is_never_shortened_by_back_off(frozen) -> None:
    provider = Scripted(A=[UpstreamError(TIMEOUT, "slow")])
    f = feed(provider, 7200.0)
    run_for(f, frozen, 5 * 7200, step=60)
    assert set(gaps(provider)) == {7200}


def test_success_after_errors_resets_the_schedule_and_keeps_the_last_value(frozen) -> None:
    error = UpstreamError(HTTP_STATUS, "HTTP 503 from api")
    provider = Scripted(A=[100, error, error, 120])
    f = feed(provider, 60.0)
    f.run_due()
    frozen.tick(60)
    f.run_due()  # fails: the value of 12:00:00 stays
    [held] = f.slots()
    assert held.value is not None and held.value.grams_per_kwh == 100
    assert not f.up
    run_for(f, frozen, 600)
    assert times(provider) == [0, 60, 120, 240, 300, 360, 420, 480, 540, 600]
    [fresh] = f.slots()
    assert fresh.value is not None and fresh.value.grams_per_kwh == 120 and f.up


def test_an_answer_older_than_the_value_held_does_not_replace_it(frozen) -> None:
    # A cache in front of the API answers with the hour before the one already held.
    now = time.time()
    provider = Scripted(A=[LiveValue(100, now, False), LiveValue(300, now - 3600, False), 120])
    f = feed(provider, 60.0)
    held = []
    for _ in range(3):
        f.run_due()
        [slot] = f.slots()
        held.append(slot.value.grams_per_kwh if slot.value else None)
        frozen.tick(60)
    assert held == [100, 100, 120] and f.up


@pytest.mark.parametrize(("retry_after", "wait"), [("90", 90), ("7", 60), (None, 60)])
def test_a_429_honours_retry_after(frozen, retry_after: str | None, wait: float) -> None:
    limited = RetryLater("HTTP 429", retry_after_seconds(retry_after, time.time()))
    provider = Scripted(A=[limited, 100])
    f = feed(provider, 60.0)
    run_for(f, frozen, 200)
    assert times(provider)[:2] == [0, wait]  # never sooner than the back-off either


def test_retry_after_as_a_date_and_as_nonsense() -> None:
    now = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:14:20 GMT"  # 1_700_000_060
    assert retry_after_seconds(date, now) == 60
    assert retry_after_seconds(date, now + 120) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds("", now) is None


def test_an_absurd_retry_after_is_taken_as_a_day(frozen) -> None:
    provider = Scripted(A=[RetryLater("HTTP 429", 10**9), 100])
    f = feed(provider, 60.0)
    f.run_due()
    [state] = f._zones.values()
    assert state.due - time.time() == 86400


def test_a_failure_is_logged_once_while_it_lasts(frozen, caplog) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    refused = UpstreamError(CONNECT, "cannot connect to https://api.example: refused")
    provider = Scripted(A=[100, refused, refused, refused, 100])
    f = feed(provider, 10.0)
    run_for(f, frozen, 200)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "zone A failed (reason=connect)" in warnings[0].getMessage()
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert recovered == ["upstream electricitymaps zone A recovered after 3 failed request(s)"]
    assert f.errors == {CONNECT: 3}


def test_a_slow_provider_never_makes_a_reader_wait() -> None:
    provider = Scripted(A=[100])
    provider.gate = threading.Event()
    grid = LiveGridFeed([feed(provider, 1.0)]).start()
    try:
        deadline = time.monotonic() + 5
        while not provider.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert provider.calls, "the feed's thread did not start fetching"
        started = time.monotonic()
        slots, up, requests = grid.slots(), grid.up, grid.requests_by_upstream  # mid-fetch
        assert time.monotonic() - started < 0.1
        assert slots[0].value is None and up == {"electricitymaps": False}
        assert requests == {"electricitymaps": 1}
        provider.gate.set()
        while grid.slots()[0].value is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert grid.slots()[0].value is not None and grid.up == {"electricitymaps": True}
    finally:
        provider.gate.set()
        grid.close()
    assert not any(t.is_alive() for t in grid._threads)


def test_a_bug_in_a_provider_is_counted_and_backed_off_like_a_failure(frozen, caplog) -> None:
    provider = Scripted(A=[ZeroDivisionError("bug"), 100])
    f = feed(provider, 60.0)
    run_for(f, frozen, 61)
    assert f.errors == {"internal_error": 1}
    assert times(provider) == [0, 60] and f.up
    assert "failed unexpectedly" in caplog.text and "ZeroDivisionError" in caplog.text
