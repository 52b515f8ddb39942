"""Per-model figures: the methodology applied to one served model, with the context labels
that explain the numbers. Pure: settings and observations in, an immutable record out.

`compute` runs named steps, each a small pure function: `steps` (GPU power, grid intensity
and CO2, the idle floor, per-token energy, utilization, the underutilized flag, the
commercial envelopes, the info labels) and `requests` (per finished request, per kind of
token, embodied emissions, SCI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from exporter.model import methodology as m
from exporter.model import requests as r
from exporter.model import steps as s
from exporter.model.catalog import GpuSpec, ModelSpec
from exporter.model.intensity import GridIntensities
from exporter.model.join import PodShare, ServedModel
from exporter.model.observations import ModelHistory
from exporter.model.settings import BOUNDS as BOUNDS
from exporter.model.settings import FigureSettings, Layout
from exporter.model.steps import SCOPES as SCOPES

PHASES = ("prompt", "generation")
ACCOUNTINGS = ("amortized", "marginal")
MIXES = ("preset", "observed")


@dataclass(frozen=True)
class ModelInfo:
    """The labels of llm_carbon_model_info: what the model's figures rest on."""

    gpu_type: str
    nodes: str
    regions: str
    size_class: str
    preset: str
    capacity_source: str
    idle_source: str
    attribution: str
    power_source: str
    mfu_basis: str
    embodied_basis: str

    def labels(self) -> dict[str, str]:
        return asdict(self)


INFO_LABELS = tuple(f.name for f in fields(ModelInfo))


@dataclass(frozen=True)
class ModelFigures:
    """Everything the exporter says about one served model in one cycle."""

    namespace: str
    model: str
    info: ModelInfo
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
    # The underutilization rules that flag the model (methodology.*_RULE); None while its
    # power is unknown.
    underutilized_by: tuple[str, ...] | None = None
    regions: tuple[str, ...] = ()  # grid regions of the model's pods
    per_request: r.PerRequest = field(default_factory=r.PerRequest)
    footprint: r.Footprint = field(default_factory=r.Footprint)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.model)

    @property
    def underutilized(self) -> bool | None:
        return None if self.underutilized_by is None else bool(self.underutilized_by)

    @property
    def total_tokens_per_second(self) -> float:
        return sum(self.tokens_per_second.values())

    def info_value(self, label: str) -> str:
        value: str = getattr(self.info, label)
        return value


# ---- the whole


MAX_KEPT = 20_000  # served models whose context is kept; the memo starts afresh past this


@dataclass(frozen=True)
class _Context:
    """What the steps share, fixed by the model's name and where its pods run: its preset,
    table entries, size class, regions and the info labels that follow from them. The same
    every cycle until the model moves, so kept per served model with the layout it was
    worked out for (`of`): one entry per model, like the engine's other per-model tables."""

    preset: str
    spec: ModelSpec | None
    size: str
    gpu_specs: Mapping[str, GpuSpec | None]
    region_of: Mapping[str, str]
    gpu_type: str
    nodes: str
    regions: tuple[str, ...]

    @classmethod
    def of(cls, served: ServedModel, settings: FigureSettings) -> _Context:
        layout: Layout = tuple((p.node, p.gpu_model) for p in served.pods)
        memo = settings.contexts
        kept = memo.get(served.key)
        if kept is not None and kept[0] == layout:
            context: _Context = kept[1]
            return context
        if len(memo) >= MAX_KEPT:
            memo.clear()
        fresh = cls.work_out(served, settings)
        memo[served.key] = (layout, fresh)
        return fresh

    @classmethod
    def work_out(cls, served: ServedModel, settings: FigureSettings) -> _Context:
        pods = served.pods
        spec = settings.catalog.model(served.model)
        gpu_specs = {p.gpu_model: settings.catalog.gpu(p.gpu_model) for p in pods}
        region_of = {p.node: settings.node_regions.region_of(p.node)[0] for p in pods}
        return cls(
            preset=settings.preset_for(served.model),
            spec=spec,
            size=m.size_class(spec.total_params_b, settings.size_classes) if spec else "unknown",
            gpu_specs=gpu_specs,
            region_of=region_of,
            gpu_type=s.gpu_type(pods, gpu_specs),
            nodes=",".join(sorted({p.node or "unknown" for p in pods})) or "none",
            regions=tuple(sorted(set(region_of.values()))),
        )


def _info(pods: tuple[PodShare, ...], c: _Context, sources: Mapping[str, str]) -> ModelInfo:
    """The info labels: the model's hardware, places and classes, and where each of its
    figures' inputs comes from (`sources`)."""
    return ModelInfo(
        gpu_type=c.gpu_type,
        nodes=c.nodes,
        regions=",".join(c.regions or ["unknown"]),
        size_class=c.size,
        preset=c.preset,
        attribution=s.attribution(pods),
        **sources,
    )


def compute(
    served: ServedModel,
    settings: FigureSettings,
    history: ModelHistory | None = None,
    grid: GridIntensities | None = None,
) -> ModelFigures:
    """Apply the methodology to one served model at the grid intensities in force."""
    history = history or ModelHistory()
    pods, tps, factor = served.pods, served.tokens_per_second, settings.facility_factor
    active = m.is_active(tps, settings.min_tokens_per_second)
    prompt_ratio = (
        m.prompt_token_ratio(served.prompt_tps, served.generation_tps) if active else None
    )
    c = _Context.of(served, settings)
    power = s.gpu_power(served)
    co2 = s.carbon(pods, c.region_of, settings, power, tps if active else None, grid)
    idle_w, idle_source = s.idle_floor(pods, c.gpu_specs, history, power.attributed_gpus)
    idle_ratio = (
        m.idle_power_ratio(idle_w, power.watts) if (idle_w is not None and power.known) else None
    )
    util, capacity_source = s.utilization(served.model, tps, settings, history)
    mfu, mfu_basis = s.model_flops_utilization(pods, c.spec, c.gpu_specs, tps)
    embodied_per_hour, embodied_basis = r.embodied(pods, settings.embodied)
    sci_token, sci_request = r.sci(co2.per_hour, embodied_per_hour, served, active)
    sources = {
        "capacity_source": capacity_source,
        "idle_source": idle_source if power.known else "unknown",
        "power_source": power.source,
        "mfu_basis": mfu_basis,
        "embodied_basis": embodied_basis,
    }
    return ModelFigures(
        namespace=served.namespace,
        model=served.model,
        info=_info(pods, c, sources),
        gpus=sum(p.gpus for p in pods) if power.known else None,
        tokens_per_second={"prompt": served.prompt_tps, "generation": served.generation_tps},
        active=active,
        power_w=s.scaled(power.watts, factor) if power.known else {},
        prompt_token_ratio=prompt_ratio,
        joules_per_token=s.joules_per_token(power, idle_w, tps, factor) if active else {},
        idle_power_w=idle_w if power.known else None,
        idle_power_ratio=idle_ratio,
        utilization=util,
        mfu=mfu,
        gpu_busy=s.gpu_busy(pods),
        grid_intensity=co2.intensity,
        co2_grams_per_token=co2.per_token,
        co2_grams_per_hour=co2.per_hour,
        commercial=s.commercial(settings, c.size, c.preset, prompt_ratio),
        underutilized_by=s.underutilized(power, active, settings, util, mfu, idle_ratio),
        regions=c.regions,
        per_request=r.per_request(served, power, idle_w, co2.per_hour, factor, active),
        footprint=r.Footprint(embodied_per_hour, sci_token, sci_request),
    )
