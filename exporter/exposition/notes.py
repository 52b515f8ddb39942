"""Why a figure looks as it does: the notes printed under the per-model table (the landing
page and `report`) where a figure surprises without the methodology: a marginal J/token of 0,
an underutilized flag, a utilization of 1."""

from __future__ import annotations

from exporter.model import methodology as m
from exporter.model.figures import ModelFigures
from exporter.model.settings import FigureSettings

IDLE_SOURCES = {"gpu_table": "GPU table", "observed": "observed while idle"}


def _marginal(f: ModelFigures) -> str | None:
    power = f.power_w.get("gpu")
    if f.joules_per_token.get(("gpu", "marginal")) != 0.0 or power is None:
        return None
    idle = f.idle_power_w or 0.0
    source = IDLE_SOURCES.get(f.info_value("idle_source"), "unknown source")
    return (
        f"J/tok marg. 0: its idle floor, {idle:.0f} W ({source}), is at or above its {power:.0f} W"
    )


def _underutilized(f: ModelFigures, settings: FigureSettings) -> str | None:
    limits = settings.underutilized
    words = {
        m.IDLE_RATIO_RULE: lambda: (
            f"its idle floor is {_idle_share(f)} "
            f"(> idle_power_ratio_above {limits['idle_power_ratio_above'] or 0:.0%})"
        ),
        m.INACTIVE_RULE: lambda: (
            f"{f.power_w.get('gpu', 0):.0f} W drawn at under "
            f"{settings.min_tokens_per_second:g} tok/s (inactive)"
        ),
        m.UTILIZATION_RULE: lambda: (
            f"utilization {f.utilization or 0:.2f} "
            f"(< utilization_below {limits['utilization_below'] or 0:g})"
        ),
        m.MFU_RULE: lambda: f"MFU {f.mfu or 0:.2%} (< mfu_below {limits['mfu_below'] or 0:.0%})",
    }
    said = [words[rule]() for rule in f.underutilized_by or () if rule in words]
    return f"underutilized: {', '.join(said)}" if said else None


def _idle_share(f: ModelFigures) -> str:
    """The idle floor's share of the power, or "at or above" where the ratio is capped at 1
    (the GPU table's floor can exceed a lightly loaded GPU's power)."""
    ratio = f.idle_power_ratio or 0.0
    return "at or above its power" if ratio >= 1 else f"{ratio:.0%} of its power"


def _utilization(f: ModelFigures) -> str | None:
    if f.info_value("capacity_source") != "observed_peak" or (f.utilization or 0) < 0.995:
        return None
    return (
        f"utilization {f.utilization:.2f}: capacity is its own highest throughput seen so far, "
        "reached now, not what its GPUs could do (MFU says that; utilization.capacity sets it)"
    )


def why(f: ModelFigures, settings: FigureSettings) -> list[str]:
    """The notes that explain `f`'s surprising figures; empty when nothing surprises."""
    notes = [_marginal(f), _underutilized(f, settings), _utilization(f)]
    return [note for note in notes if note]
