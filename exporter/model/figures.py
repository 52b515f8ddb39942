"""Per-model figures: the methodology applied to one served model, with the context labels
that explain the numbers. Pure: settings and observations in, an immutable record out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.config import Config, as_dict
from exporter.model import methodology as m
from exporter.model.catalog import Catalog
from exporter.model.grid import GridRegion, NodeRegionMap, resolve_regions
from exporter.model.join import ServedModel
from exporter.model.observations import ModelHistory

SCOPES = ("gpu", "facility")
BASES = ("location", "market")
BOUNDS = ("low", "mid", "high")
PHASES = ("prompt", "generation")


@dataclass(frozen=True)
class Envelope:
    """A commercial baseline: J/token per phase and bound, facility scope."""

    name: str
    prefill: Mapping[str, float]
    decode: Mapping[str, float]
    note: str = ""


@dataclass(frozen=True)
class FigureSettings:
    """The methodology's inputs, resolved once from the configuration."""

    min_tokens_per_second: float
    host_overhead: float
    pue: float
    regions: Mapping[str, GridRegion]
    node_regions: NodeRegionMap
    presets: Mapping[str, tuple[int, int]]
    default_preset: str
    model_presets: tuple[tuple[re.Pattern[str], str], ...]
    baselines: Mapping[str, Envelope]
    always_compare: tuple[str, ...]
    size_classes: tuple[tuple[str, float | None], ...]
    catalog: Catalog
    capacities: tuple[tuple[re.Pattern[str], float], ...]
    underutilized: Mapping[str, float | None]

    @classmethod
    def from_config(cls, config: Config) -> FigureSettings:
        regions = resolve_regions(config.grid.regions)
        return cls(
            min_tokens_per_second=config.exporter.min_tokens_per_second,
            host_overhead=config.facility.host_overhead,
            pue=config.facility.pue,
            regions=regions,
            node_regions=NodeRegionMap(
                [(rule.pattern, rule.region) for rule in config.grid.nodes],
                config.grid.default_region,
            ),
            presets={
                name: (p.input_tokens, p.output_tokens)
                for name, p in config.workload.presets.items()
            },
            default_preset=config.workload.default_preset,
            model_presets=tuple(
                (re.compile(rule.pattern), rule.preset) for rule in config.workload.models
            ),
            baselines={
                name: Envelope(name, as_dict(b.prefill), as_dict(b.decode), b.note)
                for name, b in config.baselines.items()
            },
            always_compare=tuple(config.comparison.always),
            size_classes=tuple(
                (c.name, c.below_total_params_b) for c in config.comparison.size_classes
            ),
            catalog=Catalog(
                [as_dict(e) for e in config.catalog.gpus],
                [as_dict(e) for e in config.catalog.models],
            ),
            capacities=tuple(
                (re.compile(c.pattern), c.tokens_per_second) for c in config.utilization.capacity
            ),
            underutilized=as_dict(config.underutilized),
        )

    @property
    def facility_factor(self) -> float:
        return m.facility_power(1.0, self.host_overhead, self.pue)

    def preset_for(self, model: str) -> str:
        for pattern, preset in self.model_presets:
            if pattern.search(model):
                return preset
        return self.default_preset

    def preset_share(self, preset: str) -> float:
        return m.preset_prompt_token_ratio(*self.presets[preset])

    def capacity_for(self, model: str) -> float | None:
        for pattern, tps in self.capacities:
            if pattern.search(model):
                return tps
        return None


@dataclass(frozen=True)
class ModelFigures:
    """Everything the exporter says about one served model in one cycle."""

    namespace: str
    model: str
    info: tuple[tuple[str, str], ...]
    gpus: int | None  # None while the model's GPU series are incomplete
    tokens_per_second: Mapping[str, float]  # phase
    active: bool
    power_w: Mapping[str, float] = field(default_factory=dict)  # scope; empty: power unknown
    prompt_token_ratio: float | None = None
    joules_per_token: Mapping[tuple[str, str], float] = field(default_factory=dict)
    idle_power_w: float | None = None
    idle_power_ratio: float | None = None
    utilization: float | None = None
    mfu: float | None = None
    gpu_busy: float | None = None
    grid_intensity: Mapping[str, float] = field(default_factory=dict)  # basis
    co2_grams_per_token: Mapping[tuple[str, str], float] = field(default_factory=dict)
    co2_grams_per_hour: Mapping[tuple[str, str], float] = field(default_factory=dict)
    commercial: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    underutilized: bool | None = None
    regions: tuple[str, ...] = ()  # grid regions of the model's pods

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.model)

    @property
    def total_tokens_per_second(self) -> float:
        return sum(self.tokens_per_second.values())

    def info_value(self, label: str) -> str:
        return dict(self.info)[label]


def compute(
    served: ServedModel, settings: FigureSettings, history: ModelHistory | None = None
) -> ModelFigures:
    """Apply the methodology to one served model."""
    history = history or ModelHistory()
    tps = served.tokens_per_second
    active = m.is_active(tps, settings.min_tokens_per_second)
    prompt_ratio = (
        m.prompt_token_ratio(served.prompt_tps, served.generation_tps) if active else None
    )
    preset = settings.preset_for(served.model)
    spec = settings.catalog.model(served.model)
    size = m.size_class(spec.total_params_b, settings.size_classes) if spec else "unknown"

    # ---- GPUs, power and where it is drawn
    gpus = sum(p.gpus for p in served.pods)
    power_known = bool(served.pods) and not served.pods_without_gpus
    power_gpu = sum(p.power_w for p in served.pods)
    sources = {p.power_source for p in served.pods}
    if not served.pods:
        power_source = "missing"
    elif served.pods_without_gpus:
        power_source = "incomplete"
    else:
        power_source = sources.pop() if len(sources) == 1 else "mixed"

    region_of = {p.node: settings.node_regions.region_of(p.node)[0] for p in served.pods}
    region_names = sorted(set(region_of.values())) or ["unknown"]
    gpu_specs = {p.gpu_model: settings.catalog.gpu(p.gpu_model) for p in served.pods}
    gpu_type = (
        ",".join(
            sorted(
                {
                    (gpu_specs[p.gpu_model].name if gpu_specs[p.gpu_model] else p.gpu_model)
                    or "unknown"
                    for p in served.pods
                }
            )
        )
        or "unknown"
    )

    factor = settings.facility_factor
    power: dict[str, float] = {}
    intensity: dict[str, float] = {}
    co2_token: dict[tuple[str, str], float] = {}
    co2_hour: dict[tuple[str, str], float] = {}
    jpt: dict[tuple[str, str], float] = {}
    if power_known:
        power = {"gpu": power_gpu, "facility": power_gpu * factor}
    for basis in BASES:
        if not power_known:
            break  # a partial set of pods would give a partial, wrong intensity
        values = [settings.regions[region_of[p.node]].intensity(basis) for p in served.pods]
        if not values or any(v is None for v in values):
            continue  # market basis only where every region of the model has one
        per_pod = [(p.power_w, v) for p, v in zip(served.pods, values, strict=True)]
        weighted = m.power_weighted_intensity(per_pod)
        if weighted is not None:
            intensity[basis] = weighted
        grams_per_second = m.co2_grams_per_second(per_pod)
        for scope in SCOPES:
            scale = 1.0 if scope == "gpu" else factor
            co2_hour[(scope, basis)] = grams_per_second * m.SECONDS_PER_HOUR * scale
            if active:
                value = m.co2_grams_per_token(grams_per_second * scale, tps)
                if value is not None:
                    co2_token[(scope, basis)] = value

    # ---- idle floor: observed per GPU when history allows, else the GPU table
    idle_w: float | None = None
    idle_source = "unknown"
    attributed_gpus = sum(p.gpus * p.share for p in served.pods)
    if attributed_gpus and history.idle_floor_w_per_gpu is not None:
        idle_w, idle_source = history.idle_floor_w_per_gpu * attributed_gpus, "observed"
    elif served.pods and all(
        gpu_specs[p.gpu_model] and gpu_specs[p.gpu_model].idle_power_w for p in served.pods
    ):
        idle_w = sum(p.gpus * p.share * gpu_specs[p.gpu_model].idle_power_w for p in served.pods)
        idle_source = "gpu_table"
    idle_ratio = (
        m.idle_power_ratio(idle_w, power_gpu) if (idle_w is not None and power_known) else None
    )

    if power_known and active:
        for scope in SCOPES:
            scale = 1.0 if scope == "gpu" else factor
            amortized = m.joules_per_token(power_gpu * scale, tps)
            if amortized is not None:
                jpt[(scope, "amortized")] = amortized
            if idle_w is not None:
                marginal = m.marginal_joules_per_token(power_gpu * scale, idle_w * scale, tps)
                if marginal is not None:
                    jpt[(scope, "marginal")] = marginal

    # ---- utilization: capacity, MFU, DCGM busy
    capacity = settings.capacity_for(served.model)
    capacity_source = "configured" if capacity else "unknown"
    if capacity is None and history.peak_tokens_per_second:
        capacity, capacity_source = max(history.peak_tokens_per_second, tps), "observed_peak"
    utilization = m.utilization_ratio(tps, capacity) if capacity else None

    mfu: float | None = None
    if spec is None:
        mfu_basis = "unknown_model"
    elif not served.pods or any(gpu_specs[p.gpu_model] is None for p in served.pods):
        mfu_basis = "unknown_gpu"
    else:
        fp8 = spec.precision == "fp8" and all(
            gpu_specs[p.gpu_model].fp8_tflops for p in served.pods
        )
        mfu_basis = "fp8" if fp8 else "bf16"
        peak = sum(  # one precision for all pods: the label names it
            p.gpus * p.share * gpu_specs[p.gpu_model].peak_flops(mfu_basis) for p in served.pods
        )
        mfu = m.model_flops_utilization(tps, spec.active_params_b * 1e9, 1, peak)

    busy_weights = [(p.busy_ratio, p.gpus) for p in served.pods if p.busy_ratio is not None]
    gpu_busy = None
    if busy_weights and len(busy_weights) == len(served.pods) and gpus:
        gpu_busy = sum(b * n for b, n in busy_weights) / sum(n for _, n in busy_weights)

    rules = settings.underutilized
    underutilized = None
    if power_known:
        underutilized = m.is_underutilized(
            power_w=power_gpu,
            gpus=attributed_gpus,
            min_power_w_per_gpu=rules["min_power_watts_per_gpu"] or 0.0,
            active=active,
            utilization=utilization,
            utilization_below=rules["utilization_below"],
            mfu=mfu,
            mfu_below=rules["mfu_below"],
            idle_ratio=idle_ratio,
            idle_ratio_above=rules["idle_power_ratio_above"],
        )

    # ---- commercial envelopes: preset mix always, observed mix when active
    compared = list(
        dict.fromkeys([*settings.always_compare, *([size] if size in settings.baselines else [])])
    )
    mixes = {"preset": settings.preset_share(preset)}
    if prompt_ratio is not None:
        mixes["observed"] = prompt_ratio
    commercial = {
        (name, bound, mix): m.commercial_joules_per_token(
            share, settings.baselines[name].prefill[bound], settings.baselines[name].decode[bound]
        )
        for name in compared
        for bound in BOUNDS
        for mix, share in mixes.items()
    }

    if any(p.share < 1 for p in served.pods):
        attribution = "shared_pod"
    elif any(p.shared_gpus for p in served.pods):
        attribution = "shared_gpu"
    else:
        attribution = "exclusive"

    info = (
        ("gpu_type", gpu_type),
        ("nodes", ",".join(sorted({p.node or "unknown" for p in served.pods})) or "none"),
        ("regions", ",".join(region_names)),
        ("size_class", size),
        ("preset", preset),
        ("capacity_source", capacity_source),
        ("idle_source", idle_source if power_known else "unknown"),
        ("attribution", attribution),
        ("power_source", power_source),
        ("mfu_basis", mfu_basis),
    )
    return ModelFigures(
        namespace=served.namespace,
        model=served.model,
        info=info,
        gpus=gpus if power_known else None,
        tokens_per_second={"prompt": served.prompt_tps, "generation": served.generation_tps},
        active=active,
        power_w=power,
        prompt_token_ratio=prompt_ratio,
        joules_per_token=jpt,
        idle_power_w=idle_w if power_known else None,
        idle_power_ratio=idle_ratio,
        utilization=utilization,
        mfu=mfu,
        gpu_busy=gpu_busy,
        grid_intensity=intensity,
        co2_grams_per_token=co2_token,
        co2_grams_per_hour=co2_hour,
        commercial=commercial,
        underutilized=underutilized,
        regions=tuple(sorted(set(region_of.values()))),
    )
