"""The named steps of a model's figures, each a small pure function: GPU power, grid
intensity and CO2, the idle floor, per-token energy, utilization (capacity, MFU, DCGM busy),
the underutilized flag, the commercial envelopes, and the info labels. `figures.compute`
runs them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.model import methodology as m
from exporter.model.catalog import GpuSpec, ModelSpec
from exporter.model.intensity import BASES, GridIntensities, annual
from exporter.model.join import PodShare, ServedModel
from exporter.model.observations import ModelHistory
from exporter.model.settings import FigureSettings

SCOPES = ("gpu", "facility")


# ---- GPU power


@dataclass(frozen=True)
class GpuPower:
    """The model's GPU power: `known` only when every serving pod has GPU series."""

    known: bool
    watts: float
    source: str  # energy_counter | power_gauge | mixed | missing | incomplete
    attributed_gpus: float  # GPUs x each pod's share: what the power is the power of


def gpu_power(served: ServedModel) -> GpuPower:
    pods = served.pods
    if not pods:
        source = "missing"
    elif served.pods_without_gpus:
        source = "incomplete"
    else:
        sources = {p.power_source for p in pods}
        source = sources.pop() if len(sources) == 1 else "mixed"
    return GpuPower(
        known=bool(pods) and not served.pods_without_gpus,
        watts=sum(p.power_w for p in pods),
        source=source,
        attributed_gpus=sum(p.gpu_equivalents for p in pods),
    )


def scaled(gpu_watts: float, factor: float) -> dict[str, float]:
    """A GPU-scope quantity in both scopes: facility = GPU x host overhead x PUE."""
    return {"gpu": gpu_watts, "facility": gpu_watts * factor}


# ---- grid intensity and CO2


@dataclass(frozen=True)
class Carbon:
    intensity: dict[str, float]  # basis -> power-weighted g/kWh
    per_hour: dict[tuple[str, str], float]  # (scope, basis) -> g/h
    per_token: dict[tuple[str, str], float]  # (scope, basis) -> g/token, while active


def carbon(
    pods: tuple[PodShare, ...],
    region_of: Mapping[str, str],
    settings: FigureSettings,
    power: GpuPower,
    active_tps: float | None,
    grid: GridIntensities | None = None,
) -> Carbon:
    """CO2 per basis, each pod on its own region's grid at the intensity in force (`grid`).
    A basis is left out unless every pod's region has a value for it (market factors are
    configured per region, marginal values come live or not at all), and all of them while
    the power is incomplete (a partial set of pods would give a partial, wrong intensity).
    `active_tps`: tokens per second while active, else None; `grid` by default annual."""
    out = Carbon({}, {}, {})
    if not power.known:
        return out
    grid = grid or annual(settings.regions)
    for basis in BASES:
        values = [grid.intensity(region_of[p.node], basis) for p in pods]
        if not values or None in values:
            continue
        per_pod = [(p.power_w, v) for p, v in zip(pods, values, strict=True) if v is not None]
        weighted = m.power_weighted_intensity(per_pod)
        if weighted is not None:
            out.intensity[basis] = weighted
        grams_per_second = m.co2_grams_per_second(per_pod)
        for scope, scale in (("gpu", 1.0), ("facility", settings.facility_factor)):
            rate = grams_per_second * scale
            out.per_hour[(scope, basis)] = grams_per_second * m.SECONDS_PER_HOUR * scale
            if active_tps is not None:
                value = m.co2_grams_per_token(rate, active_tps)
                if value is not None:
                    out.per_token[(scope, basis)] = value
    return out


# ---- idle floor and energy per token


def idle_floor(
    pods: tuple[PodShare, ...],
    gpu_specs: Mapping[str, GpuSpec | None],
    history: ModelHistory,
    attributed_gpus: float,
) -> tuple[float | None, str]:
    """(idle floor W, idle_source): observed per GPU when the look-back has one, else the GPU
    table's loaded-idle power for each pod's GPUs and share, else unknown."""
    if attributed_gpus and history.idle_floor_w_per_gpu is not None:
        return history.idle_floor_w_per_gpu * attributed_gpus, "observed"
    idle_of = {name: spec.idle_power_w if spec else None for name, spec in gpu_specs.items()}
    if pods and all(idle_of[p.gpu_model] for p in pods):
        return sum(p.gpu_equivalents * (idle_of[p.gpu_model] or 0.0) for p in pods), "gpu_table"
    return None, "unknown"


def joules_per_token(
    power: GpuPower, idle_w: float | None, tps: float, factor: float
) -> dict[tuple[str, str], float]:
    """(scope, accounting) -> J/token: amortized P / T, and marginal above the idle floor
    where one is known. The caller asks only while the model is active."""
    out: dict[tuple[str, str], float] = {}
    if not power.known:
        return out
    for scope, watts in scaled(power.watts, factor).items():
        amortized = m.joules_per_token(watts, tps)
        if amortized is not None:
            out[(scope, "amortized")] = amortized
        if idle_w is not None:
            idle = idle_w if scope == "gpu" else idle_w * factor
            marginal = m.marginal_joules_per_token(watts, idle, tps)
            if marginal is not None:
                out[(scope, "marginal")] = marginal
    return out


# ---- utilization


def utilization(
    model: str, tps: float, settings: FigureSettings, history: ModelHistory
) -> tuple[float | None, str]:
    """(tokens per second / capacity, capacity_source): configured capacity first, else the
    model's observed peak over the look-back (never below the current throughput)."""
    capacity = settings.capacity_for(model)
    source = "configured" if capacity else "unknown"
    if capacity is None and history.peak_tokens_per_second:
        capacity, source = max(history.peak_tokens_per_second, tps), "observed_peak"
    return (m.utilization_ratio(tps, capacity) if capacity else None), source


def model_flops_utilization(
    pods: tuple[PodShare, ...],
    spec: ModelSpec | None,
    gpu_specs: Mapping[str, GpuSpec | None],
    tps: float,
) -> tuple[float | None, str]:
    """(MFU, mfu_basis): at FP8 where the checkpoint and every GPU have it, else BF16; None
    where the model or a GPU is not in the tables."""
    if spec is None:
        return None, "unknown_model"
    known = [gpu_specs[p.gpu_model] for p in pods]
    if not pods or any(g is None for g in known):
        return None, "unknown_gpu"
    gpus = [g for g in known if g is not None]
    basis = "fp8" if spec.precision == "fp8" and all(g.fp8_tflops for g in gpus) else "bf16"
    peak = sum(  # one precision for all pods: the label names it
        p.gpu_equivalents * g.peak_flops(basis) for p, g in zip(pods, gpus, strict=True)
    )
    return m.model_flops_utilization(tps, spec.active_params_b * 1e9, 1, peak), basis


def gpu_busy(pods: tuple[PodShare, ...]) -> float | None:
    """DCGM busy ratio averaged over the model's GPUs, where every pod has one."""
    weights = [(p.busy_ratio, p.gpus) for p in pods if p.busy_ratio is not None]
    if not weights or len(weights) != len(pods) or not sum(p.gpus for p in pods):
        return None
    return sum(b * n for b, n in weights) / sum(n for _, n in weights)


def underutilized(
    power: GpuPower,
    active: bool,
    settings: FigureSettings,
    utilization_ratio: float | None,
    mfu: float | None,
    idle_ratio: float | None,
) -> tuple[str, ...] | None:
    """The configured underutilization rules that flag the model (empty: none does); None
    while the power is unknown."""
    if not power.known:
        return None
    rules = settings.underutilized
    return m.underutilized_because(
        power_w=power.watts,
        gpus=power.attributed_gpus,
        min_power_w_per_gpu=rules["min_power_watts_per_gpu"] or 0.0,
        active=active,
        utilization=utilization_ratio,
        utilization_below=rules["utilization_below"],
        mfu=mfu,
        mfu_below=rules["mfu_below"],
        idle_ratio=idle_ratio,
        idle_ratio_above=rules["idle_power_ratio_above"],
    )


# ---- commercial envelopes


def commercial(
    settings: FigureSettings, size: str, preset: str, prompt_ratio: float | None
) -> dict[tuple[str, str, str], float]:
    """(baseline, bound, mix) -> commercial J/token: the baselines always compared plus the
    size-matched one, at the preset's prompt share and, while active, the observed one."""
    out: dict[tuple[str, str, str], float] = {}
    for c in settings.compared(size, preset):
        out[c.preset_key] = c.at_preset
        if prompt_ratio is not None:
            out[c.observed_key] = m.commercial_joules_per_token(prompt_ratio, c.prefill, c.decode)
    return out


# ---- info labels


def attribution(pods: tuple[PodShare, ...]) -> str:
    """shared_pod: a pod serves several models (power split by token share); shared_gpu: a
    GPU other models' pods hold too (charged in full, an upper bound); mig_share: MIG
    instances, charged their share of the GPU's power by instance size; else exclusive."""
    if any(p.share < 1 for p in pods):
        return "shared_pod"
    if any(p.shared_gpus for p in pods):
        return "shared_gpu"
    if any(p.mig_gpus for p in pods):
        return "mig_share"
    return "exclusive"


def gpu_type(pods: tuple[PodShare, ...], gpu_specs: Mapping[str, GpuSpec | None]) -> str:
    names = set()
    for p in pods:
        spec = gpu_specs[p.gpu_model]
        names.add((spec.name if spec else p.gpu_model) or "unknown")
    return ",".join(sorted(names)) or "unknown"
