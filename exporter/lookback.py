"""Look-back history kept in process, for sources without a Prometheus: per model, the peak
window-mean throughput and the lowest window-mean power per GPU while inactive, in time
buckets over the look-back period. The Prometheus source asks its TSDB instead."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from exporter.observations import ModelHistory


@dataclass
class _Bucket:
    start: float
    peak_tps: float
    idle_w_per_gpu: float | None


class LookbackTracker:
    def __init__(self, lookback: float, bucket: float = 300.0) -> None:
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
        gpus: int,
    ) -> None:
        buckets = self._models.setdefault(key, deque())
        start = t - t % self.bucket
        if not buckets or buckets[-1].start != start:
            buckets.append(_Bucket(start, 0.0, None))
        current = buckets[-1]
        current.peak_tps = max(current.peak_tps, tokens_per_second)
        if not active and power_w is not None and gpus > 0:
            per_gpu = power_w / gpus
            if current.idle_w_per_gpu is None or per_gpu < current.idle_w_per_gpu:
                current.idle_w_per_gpu = per_gpu
        while buckets and buckets[0].start < t - self.lookback:
            buckets.popleft()
        self._prune(t)

    def _prune(self, t: float) -> None:
        for key in [k for k, b in self._models.items() if not b or b[-1].start < t - self.lookback]:
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
