"""The direct source's memory: a window of samples per series read from the pages, and the
samples of this cycle that were refused (never entering a window)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping

from exporter.sources.page_parser import Row
from exporter.sources.rates import SeriesWindow
from exporter.sources.validation import describe_invalid, is_valid_value

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # (page, name, labels)


def series_key(page: str, name: str, labels: Mapping[str, str]) -> SeriesKey:
    return (page, name, tuple(sorted(labels.items())))


class SeriesStore:
    """`bounds`: ceilings of gauges that have one (a ratio, a percentage), by name."""

    def __init__(self, window: float, bounds: Mapping[str, float]) -> None:
        self.window = window
        self.bounds = dict(bounds)
        self.windows: dict[SeriesKey, SeriesWindow] = {}
        self.invalid: dict[SeriesKey, float] = {}  # this cycle's refused samples

    def start_cycle(self) -> None:
        self.invalid = {}

    def record(self, page: str, rows: Iterable[Row], now: float, seen: set[SeriesKey]) -> None:
        """Adds each row's sample to its series' window. A NaN, infinite or negative sample,
        or one above its field's ceiling, never enters a window (it would spoil every rate
        and mean over it for a whole window): its series is marked invalid for this cycle."""
        for name, labels, value in rows:
            key = series_key(page, name, labels)
            seen.add(key)
            if not is_valid_value(value) or value > self.bounds.get(name, math.inf):
                self.invalid[key] = value
                continue
            window = self.windows.get(key)
            if window is None:
                window = self.windows[key] = SeriesWindow(self.window)
            window.add(now, value)

    def forget(self, seen: set[SeriesKey], unread_pages: set[str]) -> None:
        """A series gone from a page that was read no longer counts; an unread page's series
        are kept, both for their history and to know what the page served."""
        for key in [k for k in self.windows if k not in seen and k[0] not in unread_pages]:
            del self.windows[key]

    def labels_on(self, page: str) -> Iterator[dict[str, str]]:
        """The labels of every series kept for `page`."""
        for kept_page, _, labels in self.windows:
            if kept_page == page:
                yield dict(labels)

    def describe(self, name: str, value: float) -> str:
        """What is wrong with a refused sample of series `name`, in words that stay the same
        while the fault lasts."""
        bound = self.bounds.get(name)
        if is_valid_value(value) and bound is not None:
            return f"above its ceiling of {bound:g}"
        return describe_invalid(value)
