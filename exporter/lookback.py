"""Look-back history kept in process: per model, the peak window-mean throughput and the
lowest window-mean power per GPU while inactive, in hourly buckets over the look-back period.
The engine feeds it after every cycle, whatever the source; the Prometheus source adds the
peak its TSDB remembers from before this process started."""

from __future__ import annotations

from collections import deque

from exporter.observations import ModelHistory

BUCKET_SECONDS = 3600.0  # a week of look-back is 168 buckets per model


class _Bucket:
    __slots__ = ("idle_w_per_gpu", "peak_tps", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.peak_tps = 0.0
        self.idle_w_per_gpu: float | None = None


class LookbackTracker:
    def __init__(self, lookback: float, bucket: float = BUCKET_SECONDS) -> None:
        self.lookback = lookback
        self.bucket = bucket
        self._models: dict[tuple[str, str], deque[_Bucket]] = {}

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
        buckets = self._models.setdefault(key, deque())
        start = t - t % self.bucket
        if not buckets or buckets[-1].start != start:
            buckets.append(_Bucket(start))
        current = buckets[-1]
        current.peak_tps = max(current.peak_tps, tokens_per_second)
        if not active and power_w is not None and gpus > 0:
            per_gpu = power_w / gpus
            if current.idle_w_per_gpu is None or per_gpu < current.idle_w_per_gpu:
                current.idle_w_per_gpu = per_gpu

    def prune(self, t: float) -> None:
        """Forget buckets older than the look-back, and models with none left: once a cycle."""
        horizon = t - self.lookback
        for key in list(self._models):
            buckets = self._models[key]
            while buckets and buckets[0].start + self.bucket <= horizon:
                buckets.popleft()
            if not buckets:
                del self._models[key]

    def history(self, key: tuple[str, str]) -> ModelHistory:
        buckets = self._models.get(key)
        if not buckets:
            return ModelHistory()
        idle = [b.idle_w_per_gpu for b in buckets if b.idle_w_per_gpu is not None]
        peak = max(b.peak_tps for b in buckets)
        return ModelHistory(
            peak_tokens_per_second=peak if peak > 0 else None,
            idle_floor_w_per_gpu=min(idle) if idle else None,
        )
