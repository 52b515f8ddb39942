"""What an upstream reading must be before it counts: the one validation layer every reading
passes, in both sources, before it enters a window or a figure.

A reading that fails is withheld (never exported, never integrated into a counter), counted
under `upstream_errors_total{reason}` and logged once while it lasts:

- `invalid_value`: NaN, infinite, negative, or above a field's own ceiling (a ratio above 1);
- `implausible`: a value no GPU or server can produce: DCGM's "blank" sentinels (published
  for fields it cannot read), GPU power above the GPU's rated maximum (with a margin), a
  counter that steps back without restarting, an impossible token rate or GPU count.

The limits are configurable (`plausibility.*`); GPU maxima come from the GPU table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.config import Config, as_dict
from exporter.model.catalog import Catalog
from exporter.model.problems import IMPLAUSIBLE, INVALID_VALUE

# DCGM's blank values (NVIDIA DCGM, dcgmlib/dcgm_structs.h, DCGM_BLANK_VALUES): a field it
# cannot read is published as the blank value or one just above it (NOT_FOUND,
# NOT_SUPPORTED, NOT_PERMISSIONED are blank + 1, 2, 3). As float64 the INT64 ones all read
# 9.223372036854776e18.
FP64_BLANK = 140737488355328.0  # 2**47
INT64_BLANK = 9223372036854775792.0
INT32_BLANK = 2147483632.0


@dataclass(frozen=True)
class Refusal:
    """Why a reading was withheld: the upstream errors reason and words that stay the same
    while the fault lasts (a log line is written once per distinct message)."""

    reason: str
    why: str


# A counter sample below the last one but above half of it.
STEP_BACK = Refusal(IMPLAUSIBLE, "went backwards without restarting (a step back, not a reset)")


def blank(value: float) -> bool:
    """Whether `value` is one of DCGM's blank sentinels (or above the smallest of them that
    no real reading of a power, ratio or counter reaches)."""
    return value >= FP64_BLANK


class Plausibility:
    def __init__(self, config: Config) -> None:
        limits = config.plausibility
        self.margin = limits.max_power_margin
        self.unknown_gpu_w = limits.max_power_watts_per_gpu
        self.max_tokens_per_second = limits.max_tokens_per_second
        self.max_gpus = limits.max_gpus_per_pod
        self.catalog = Catalog(
            [as_dict(e) for e in config.catalog.gpus], [as_dict(e) for e in config.catalog.models]
        )

    def gpu_power_cap(self, gpu_model: str) -> float:
        """Most W one GPU of this product can draw as a window mean: its rated maximum times
        the margin, or the limit for GPUs not in the table."""
        spec = self.catalog.gpu(gpu_model)
        if spec is not None and spec.max_power_w:
            return spec.max_power_w * self.margin
        return self.unknown_gpu_w

    def sample(self, value: float, ceiling: float = math.inf) -> Refusal | None:
        """One raw sample (direct mode): finite, not negative, not a DCGM blank, within its
        field's ceiling."""
        if not math.isfinite(value) or value < 0:
            return Refusal(INVALID_VALUE, _nonfinite(value))
        if blank(value):
            return Refusal(IMPLAUSIBLE, "DCGM's blank value (the field has no reading)")
        if value > ceiling:
            return Refusal(INVALID_VALUE, f"above its ceiling of {ceiling:g}")
        return None

    def counter_step(self, previous: float, value: float) -> Refusal | None:
        """A counter sample after `previous`: going back to less than half is a restart
        (counted from 0 again); a smaller step back is a glitch, withheld (unless the next
        read shows a young counter that restarted: see `SeriesStore.record`)."""
        if value < previous and value >= previous / 2:
            return STEP_BACK
        return None

    def gpu_power(self, watts: float, gpus: float, gpu_model: str) -> Refusal | None:
        """A window-mean power of `gpus` GPUs of one product."""
        if not math.isfinite(watts) or watts < 0:
            return Refusal(INVALID_VALUE, _nonfinite(watts))
        cap = self.gpu_power_cap(gpu_model) * max(gpus, 1)
        if watts > cap:
            return Refusal(
                IMPLAUSIBLE,
                f"above what {_count(gpus)} {gpu_model or 'GPU'} can draw ({cap:g} W; "
                "plausibility.max_power_margin)",
            )
        return None

    def token_rate(self, tokens_per_second: float) -> Refusal | None:
        if not math.isfinite(tokens_per_second) or tokens_per_second < 0:
            return Refusal(INVALID_VALUE, _nonfinite(tokens_per_second))
        if tokens_per_second > self.max_tokens_per_second:
            return Refusal(
                IMPLAUSIBLE,
                f"above {self.max_tokens_per_second:g} tokens per second "
                "(plausibility.max_tokens_per_second)",
            )
        return None

    def gpu_count(self, gpus: float) -> Refusal | None:
        if not math.isfinite(gpus) or gpus < 1 or gpus != int(gpus):
            return Refusal(INVALID_VALUE, f"not a whole number of GPUs ({gpus!r})")
        if gpus > self.max_gpus:
            return Refusal(
                IMPLAUSIBLE,
                f"more than {self.max_gpus} GPUs in one pod (plausibility.max_gpus_per_pod)",
            )
        return None


def _nonfinite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "negative"


def _count(gpus: float) -> str:
    return f"{gpus:g}"
