"""The live grid feed: each configured provider's zones fetched in a background thread, one
request per zone per `refresh`, never on the cycle, so a slow or dead API never delays one.
A failing zone backs off exponentially from `refresh` up to an hour (longer if a 429's
Retry-After asks for it); its last good value stays until the engine finds it older than
`max_age`. The engine reads the feed's state (`slots`), its request and error counts and
whether each provider answered; failures are logged once while they last."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from exporter.config import Config, LiveGrid
from exporter.data import builtin_zones
from exporter.model.intensity import LiveSlot, LiveValue
from exporter.model.problems import INTERNAL, UpstreamError
from exporter.sources.electricitymaps import ElectricityMaps
from exporter.sources.grid_providers import Provider, RetryLater
from exporter.sources.watttime import WattTime

log = logging.getLogger("exporter")

MAX_BACKOFF_S = 3600.0
MAX_RETRY_AFTER_S = 86400.0  # a Retry-After beyond a day is taken as a day


@dataclass
class _Zone:
    zone: str
    regions: tuple[str, ...]
    due: float
    value: LiveValue | None = None
    failures: int = 0  # consecutive
    error: UpstreamError | None = None  # the last attempt's, while it lasts


@dataclass
class ProviderFeed:
    """One provider's zones: each fetched when due, backed off while failing."""

    provider: Provider
    zones: Mapping[str, str]  # grid region -> provider zone
    refresh: float
    max_age: float
    clock: Callable[[], float] = field(default=lambda: time.time())

    def __post_init__(self) -> None:
        self.started = self.clock()
        by_zone: dict[str, list[str]] = {}
        for region, zone in self.zones.items():
            by_zone.setdefault(zone, []).append(region)
        self._zones = {
            zone: _Zone(zone, tuple(sorted(regions)), self.started)
            for zone, regions in sorted(by_zone.items())
        }
        self.errors: dict[str, int] = {}  # reason -> count
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.provider.name

    def run_due(self) -> float:
        """Fetch every zone that is due now; the seconds until the next one is."""
        for state in list(self._zones.values()):
            if state.due <= self.clock():
                self._fetch(state)
        return max(min(z.due for z in self._zones.values()) - self.clock(), 0.0)

    def _fetch(self, state: _Zone) -> None:
        started = self.clock()
        try:
            value = self.provider.fetch(state.zone)
        except UpstreamError as exc:
            self._failed(state, exc, started)
            return
        except Exception:  # a bug in a provider: say so, count it, back off like a failure
            log.exception("live grid provider %s failed unexpectedly on %s", self.name, state.zone)
            self._failed(state, UpstreamError(INTERNAL, "unexpected error (see log)"), started)
            return
        with self._lock:
            if state.error is not None:
                log.info(
                    "upstream %s zone %s recovered after %d failed request(s)",
                    self.name,
                    state.zone,
                    state.failures,
                )
            if state.value is None or value.at >= state.value.at:
                state.value = value
            else:  # a stale cache in between: the value held is newer
                log.info(
                    "upstream %s zone %s answered with a value from %ds before the one held; "
                    "keeping the newer",
                    self.name,
                    state.zone,
                    state.value.at - value.at,
                )
            state.failures, state.error = 0, None
            state.due = started + self.refresh

    def _failed(self, state: _Zone, exc: UpstreamError, started: float) -> None:
        delay = min(self.refresh * 2 ** min(state.failures, 20), max(MAX_BACKOFF_S, self.refresh))
        retry_after = exc.retry_after if isinstance(exc, RetryLater) else None
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        with self._lock:
            self.errors[exc.reason] = self.errors.get(exc.reason, 0) + 1
            before = state.error
            if before is None or (before.reason, str(before)) != (exc.reason, str(exc)):
                log.warning(
                    "upstream %s zone %s failed (reason=%s): %s; retrying in %gs, the last "
                    "good value stays in force for up to %gs",
                    self.name,
                    state.zone,
                    exc.reason,
                    exc,
                    delay,
                    self.max_age,
                )
            state.failures += 1
            state.error = exc
            state.due = started + delay

    def slots(self) -> list[LiveSlot]:
        with self._lock:
            return [
                LiveSlot(
                    region,
                    self.provider.basis,
                    self.name,
                    state.zone,
                    self.max_age,
                    state.value,
                    self.started,
                )
                for state in self._zones.values()
                for region in state.regions
            ]

    @property
    def up(self) -> bool:
        """Every zone's last request succeeded (none has been made: not yet up)."""
        with self._lock:
            return all(z.value is not None and z.error is None for z in self._zones.values())


class LiveGridFeed:
    """Every configured provider's feed, each refreshed by its own thread."""

    def __init__(self, feeds: list[ProviderFeed]) -> None:
        self.feeds = feeds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(feed.name for feed in self.feeds)

    @property
    def requests_by_upstream(self) -> dict[str, int]:
        return {feed.name: feed.provider.requests_made for feed in self.feeds}

    @property
    def errors_by_upstream(self) -> dict[tuple[str, str], int]:
        return {(f.name, reason): n for f in self.feeds for reason, n in dict(f.errors).items()}

    @property
    def up(self) -> dict[str, bool]:
        return {feed.name: feed.up for feed in self.feeds}

    def slots(self) -> tuple[LiveSlot, ...]:
        return tuple(slot for feed in self.feeds for slot in feed.slots())

    def describe(self) -> str:
        return "; ".join(
            f"{f.name} ({f.provider.basis} basis) for {', '.join(sorted(f.zones))}, every "
            f"{f.refresh:g}s, in force for {f.max_age:g}s"
            for f in self.feeds
        )

    def refresh_now(self) -> None:
        """Fetch every due zone in the calling thread (one-shot reports)."""
        for feed in self.feeds:
            feed.run_due()

    def start(self) -> LiveGridFeed:
        for feed in self.feeds:
            thread = threading.Thread(
                target=self._loop, args=(feed,), daemon=True, name=f"grid-{feed.name}"
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _loop(self, feed: ProviderFeed) -> None:
        while not self._stop.is_set():
            try:
                delay = feed.run_due()
            except Exception:  # a bug must not end the feed: say so, try again later
                log.exception("live grid feed %s failed unexpectedly", feed.name)
                delay = feed.refresh
            self._stop.wait(min(delay, 60.0))  # re-read the clock at least every minute

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for feed in self.feeds:
            feed.provider.close()


def provider(live: LiveGrid, clock: Callable[[], float] | None = None) -> Provider:
    """The provider a `grid.live` entry configures (validated: its credentials are set)."""
    if live.provider == "watttime":
        return WattTime(live.username or "", live.password_file or "", live.url, clock=clock)
    return ElectricityMaps(
        live.token_file or "", live.url, live.emission_factor_type or "direct", clock=clock
    )


def live_grid(config: Config, clock: Callable[[], float] | None = None) -> LiveGridFeed | None:
    """The feed `grid.live` configures, not started; None when live intensity is off."""
    feeds = []
    for _, live in config.grid.live_providers():
        zones = live.zones if live.zones is not None else builtin_zones(live.provider)
        if zones:
            feeds.append(
                ProviderFeed(
                    provider(live, clock),
                    zones,
                    live.refresh,
                    live.max_age,
                    clock or (lambda: time.time()),
                )
            )
    return LiveGridFeed(feeds) if feeds else None
