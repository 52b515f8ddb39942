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

    def counter_rate(self) -> float | None:
        """Per-second increase of a counter over the window, from the second sample on. A
        decrease is a reset (process restart, driver reload): the counter restarted at 0,
        so the increase across it is the new value."""
        samples = self._samples
        if len(samples) < 2:
            return None
        increase = 0.0
        previous = samples[0][1]
        for _, value in list(samples)[1:]:
            increase += value - previous if value >= previous else value
            previous = value
        elapsed = samples[-1][0] - samples[0][0]
        return increase / elapsed if elapsed > 0 else None

    def mean(self) -> float | None:
        """Mean of the gauge samples in the window (as avg_over_time)."""
        samples = self._samples
        if not samples:
            return None
        return sum(value for _, value in samples) / len(samples)
