"""Windowed rates and means over samples the exporter keeps itself (direct-scrape mode): what
Prometheus's rate() and avg_over_time() do, for sources without a Prometheus."""

from __future__ import annotations

from collections import deque


class SeriesWindow:
    """Timestamped samples of one series within the last `window` seconds."""

    __slots__ = ("_samples", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> None:
        samples = self._samples
        if samples and t <= samples[-1][0]:
            return  # the clock did not move (or went back): keep the history monotonic
        samples.append((t, value))
        # Keep the window, but never fewer than two samples: with cycles sparser than the
        # window the rate spans the last two samples.
        while len(samples) > 2 and samples[0][0] < t - self.window:
            samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def last(self) -> float | None:
        """The latest accepted value."""
        return self._samples[-1][1] if self._samples else None

    def last_time(self) -> float | None:
        """When the latest accepted value was read."""
        return self._samples[-1][0] if self._samples else None

    def counter_rate(self) -> float | None:
        """Per-second increase of a counter over the window, from the second sample on. A
        decrease is a reset (process restart, driver reload): the counter restarted at 0,
        so the increase across it is the new value."""
        return _rate(list(self._samples))

    def updated_counter_rate(self) -> float | None:
        """The rate of a counter its source updates less often than it is read (DCGM
        refreshes its fields every 30 s by default, whatever the scrape interval). Once two
        reads in a row have shown the same value, the rate runs from the first read that
        shows an update to the last one, so time spent waiting for the next update is not
        read as zero increase, and it is None until two updates have been seen. While every
        read shows an update, it is the plain rate."""
        samples = list(self._samples)
        updates = [i for i in range(1, len(samples)) if samples[i][1] != samples[i - 1][1]]
        if len(updates) == len(samples) - 1:
            return _rate(samples)
        if len(updates) < 2:
            return None
        return _rate(samples[updates[0] : updates[-1] + 1])

    def mean(self) -> float | None:
        """Mean of the gauge samples in the window (as avg_over_time). The sample kept from
        before a gap longer than the window does not count: it says nothing about now."""
        samples = self._samples
        if not samples:
            return None
        start = samples[-1][0] - self.window
        recent = [value for t, value in samples if t >= start]
        return sum(recent) / len(recent)


def _rate(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 2:
        return None
    increase = 0.0
    previous = samples[0][1]
    for _, value in samples[1:]:
        increase += value - previous if value >= previous else value
        previous = value
    elapsed = samples[-1][0] - samples[0][0]
    return increase / elapsed if elapsed > 0 else None
