"""MIG instances as shares of their GPU: an instance's profile names its compute slices
(`1g.10gb` is one, `3g.40gb` three, `7g.79gb` as a whole A100 is sometimes reported seven),
and a GPU has a fixed number of them (7 on A100, H100, H200, B200; 4 on A30). DCGM reports
power per GPU only, so an instance is charged its slices' share of the GPU's power.

Source: NVIDIA's MIG user guide (supported GPUs and profiles)."""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_SLICES = 7  # what a GPU not in the table is assumed to have (A100 and later)
# Fields a MIG instance row carries in dcgm-exporter's default configuration (power and energy
# only in its default "flex" mode, the memory and profiling fields always): any of them shows
# which pod holds the instance.
PRESENCE_FIELDS = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")

_SLICES = re.compile(r"^\s*(\d+)g\b", re.IGNORECASE)


def profile_slices(profile: str) -> int | None:
    """The compute slices a MIG profile names, or None if it names none."""
    match = _SLICES.match(profile)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def share_of_gpu(profiles: Iterable[str], gpu_slices: int | None) -> float | None:
    """The share of a GPU that instances of these profiles hold (at most 1); None when a
    profile names no slices, so the share is unknown."""
    slices = [profile_slices(p) for p in profiles]
    if not slices or any(s is None for s in slices):
        return None
    total = gpu_slices or DEFAULT_SLICES
    return min(sum(s for s in slices if s is not None) / total, 1.0)
