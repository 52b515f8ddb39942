"""The direct source's memory: a window of samples per series read from the pages, and the
samples of this cycle that were refused (never entering a window)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from exporter.sources.page_parser import Row
from exporter.sources.plausibility import STEP_BACK, Refusal
from exporter.sources.rates import SeriesWindow

# A counter refused as a step back that grows by this factor by the next read, from an old
# value no more than this many reads' worth of its own rate, restarted (see `record`).
RESTART_GROWTH = 1.5
YOUNG_READS = 4
SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # (page, name, labels)
# Whether a sample may enter its series' window: (name, labels, value, the series' last
# accepted value or None) -> why not, or None.
Judge = Callable[[str, Mapping[str, str], float, float | None], Refusal | None]


def series_key(page: str, name: str, labels: Mapping[str, str]) -> SeriesKey:
    return (page, name, tuple(sorted(labels.items())))


class SeriesStore:
    def __init__(self, window: float, judge: Judge) -> None:
        self.window = window
        self.judge = judge
        self.windows: dict[SeriesKey, SeriesWindow] = {}
        self.refused: dict[SeriesKey, Refusal] = {}  # this cycle's refused samples
        # Counters refused as a step back: (time, value) of the refused sample, last cycle's
        # and this one's.
        self._stepped_back: dict[SeriesKey, tuple[float, float]] = {}
        self._stepping: dict[SeriesKey, tuple[float, float]] = {}

    def start_cycle(self) -> None:
        self.refused = {}
        self._stepped_back, self._stepping = self._stepping, {}

    def record(self, page: str, rows: Iterable[Row], now: float, seen: set[SeriesKey]) -> None:
        """Adds each row's sample to its series' window, unless the judge refuses it: a bad
        sample would spoil every rate and mean over the window it entered, so it is marked
        refused for this cycle instead.

        A counter refused as a step back (below its last value, above half of it) may have
        restarted after all: a young counter, started within a few reads of its own pace,
        can restart and pass half its old value within one read. When the next read shows
        the counter grown from the refused value by half of it or more (a valid sample), and
        the old counter was that young, the refused sample enters the window after all,
        where it reads as the reset. A glitch of an older counter (a step back, then on as
        before) stays refused."""
        for name, labels, value in rows:
            key = series_key(page, name, labels)
            seen.add(key)
            window = self.windows.get(key)
            stepped = self._stepped_back.get(key)
            if (
                window is not None
                and stepped is not None
                and self._restart_shown(window, stepped, name, labels, value)
            ):
                window.add(*stepped)
            refusal = self.judge(name, labels, value, window.last() if window else None)
            if refusal is not None:
                self.refused[key] = refusal
                if refusal == STEP_BACK:
                    self._stepping[key] = (now, value)
                continue
            if window is None:
                window = self.windows[key] = SeriesWindow(self.window)
            window.add(now, value)

    def _restart_shown(
        self,
        window: SeriesWindow,
        stepped: tuple[float, float],
        name: str,
        labels: Mapping[str, str],
        value: float,
    ) -> bool:
        """Whether `value`, read after the step back `stepped` (time, value), shows that the
        counter restarted there (see `record`)."""
        at, refused = stepped
        old, old_at, old_rate = window.last(), window.last_time(), window.counter_rate()
        if old is None or old_at is None or not old_rate or value < RESTART_GROWTH * refused:
            return False
        young = old <= YOUNG_READS * old_rate * (at - old_at)
        return young and self.judge(name, labels, value, refused) is None

    def forget(self, seen: set[SeriesKey], unread_pages: set[str]) -> None:
        """A series gone from a page that was read no longer counts; an unread page's series
        are kept, both for their history and to know what the page served."""
        for key in [k for k in self.windows if k not in seen and k[0] not in unread_pages]:
            del self.windows[key]
        # A step back on a page unread this cycle still waits for its next read.
        for key, stepped in self._stepped_back.items():
            if key[0] in unread_pages:
                self._stepping.setdefault(key, stepped)

    def labels_on(self, page: str) -> Iterator[dict[str, str]]:
        """The labels of every series kept for `page`."""
        for kept_page, _, labels in self.windows:
            if kept_page == page:
                yield dict(labels)
