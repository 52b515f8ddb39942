"""The units of the DCGM fields the exporter reads, told by their names. DCGM's legacy
fields count energy in millijoules (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, field 156) and
utilization in percent (DCGM_FI_DEV_GPU_UTIL); DCGM 4.7 adds base-unit fields beside them
whose names carry the unit (DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL, field 1611, in joules;
ratios named ..._RATIO), which dcgm-exporter 4.9 exports. A configured name is read in the
unit its name states, so pointing upstream.metrics at a base-unit field never reads 1000x
or 100x off."""

from __future__ import annotations

BASE_UNIT_ENERGY = "DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL"  # DCGM 4.7's energy field, in J


def energy_per_joule(name: str) -> int:
    """Units of the energy counter `name` per joule: 1 for a name whose unit is joules
    (ending in _JOULES or _JOULES_TOTAL, as Prometheus names carry their unit), else 1000
    (DCGM's legacy millijoules, and any name in millijoules)."""
    return 1 if name.upper().removesuffix("_TOTAL").endswith("_JOULES") else 1000


def utilization_per_ratio(name: str) -> int:
    """Units of the utilization gauge `name` per ratio of 1: 1 for a name ending in
    _RATIO, else 100 (DCGM's legacy percent)."""
    return 1 if name.upper().endswith("_RATIO") else 100


def divided(expr: str, divisor: int) -> str:
    """PromQL `expr` divided by `divisor`, left as it is when that is 1."""
    return expr if divisor == 1 else f"{expr} / {divisor}"
