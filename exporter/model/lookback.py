"""Look-back history kept in process: per model, the peak window-mean throughput and the
lowest window-mean power per GPU while inactive, in buckets (hourly for a look-back of 12 h or
more) over the look-back period.
The engine feeds it after every cycle, whatever the source; the Prometheus source adds the
peak its TSDB remembers from before this process started."""

from __future__ import annotations

import math
from array import array

from exporter.model.observations import ModelHistory

BUCKET_SECONDS = 3600.0  # a week of look-back is 168 buckets per model


class _Buckets:
    """One model's hourly buckets, oldest first, as flat arrays of doubles: no per-bucket
    objects for memory or for the garbage collector to walk. `idle` is +inf in a bucket
    without an inactive window. `top` and `low` are the highest peak and the lowest idle
    over all buckets, kept as buckets change, so a cycle does not scan a week of them."""

    __slots__ = ("idle", "low", "peak", "start", "top")

    def __init__(self) -> None:
        self.start = array("d")
        self.peak = array("d")
        self.idle = array("d")
        self.top, self.low = 0.0, math.inf

    def __len__(self) -> int:
        return len(self.start)

    def drop_first(self, count: int) -> None:
        del self.start[:count], self.peak[:count], self.idle[:count]
        self.top, self.low = max(self.peak, default=0.0), min(self.idle, default=math.inf)


class LookbackTracker:
    """`min_idle_w_per_gpu`: inactive windows drawing less per GPU say nothing about the idle
    floor (a stuck or missing reading: no GPU idles at 0 W), and are not taken for it."""

    def __init__(
        self, lookback: float, bucket: float | None = None, min_idle_w_per_gpu: float = 0.0
    ) -> None:
        self.lookback = lookback
        # Hourly, or finer for a look-back under 12 h: pruning goes by whole buckets, so a
        # bucket stretches the look-back by up to its own length.
        self.bucket = bucket if bucket is not None else min(BUCKET_SECONDS, lookback / 12)
        self.min_idle_w_per_gpu = min_idle_w_per_gpu
        self._models: dict[tuple[str, str], _Buckets] = {}

    def observe(
        self,
        key: tuple[str, str],
        t: float,
        tokens_per_second: float,
        active: bool,
        power_w: float | None,
        gpus: float,
    ) -> None:
        """One cycle's window means for a model; `gpus` may be fractional (a shared pod's
        share of its GPUs), matching `power_w`."""
        buckets = self._models.get(key)
        if buckets is None:
            buckets = self._models[key] = _Buckets()
        start = t - t % self.bucket
        if not buckets.start or buckets.start[-1] != start:
            buckets.start.append(start)
            buckets.peak.append(0.0)
            buckets.idle.append(math.inf)
        if tokens_per_second > buckets.peak[-1]:
            buckets.peak[-1] = tokens_per_second
            buckets.top = max(buckets.top, tokens_per_second)
        if not active and power_w is not None and gpus > 0:
            per_gpu = power_w / gpus
            if per_gpu >= self.min_idle_w_per_gpu:
                buckets.idle[-1] = min(buckets.idle[-1], per_gpu)
                buckets.low = min(buckets.low, per_gpu)

    def forget(self, key: tuple[str, str]) -> None:
        """Drop a model's history (its GPUs changed: the old floor and peak do not apply)."""
        self._models.pop(key, None)

    def prune(self, t: float) -> None:
        """Forget buckets older than the look-back, and models with none left: once a cycle."""
        horizon = t - self.lookback
        for key in list(self._models):
            buckets = self._models[key]
            old = 0
            while old < len(buckets) and buckets.start[old] + self.bucket <= horizon:
                old += 1
            if old == len(buckets):
                del self._models[key]
            elif old:
                buckets.drop_first(old)

    def history(self, key: tuple[str, str]) -> ModelHistory:
        buckets = self._models.get(key)
        if not buckets:
            return ModelHistory()
        peak, idle = buckets.top, buckets.low
        return ModelHistory(
            peak_tokens_per_second=peak if peak > 0 else None,
            idle_floor_w_per_gpu=idle if idle != math.inf else None,
        )
