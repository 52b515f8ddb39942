"""The /metrics content: a custom collector that renders the engine's current state afresh on
each collection, so a model that vanishes upstream vanishes here too.

`METRICS` is the catalogue of every family (name, type, labels, HELP). The README's metrics
table is generated from it, and tests check that the collector emits exactly these families.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.engine import Engine, EngineState, Snapshot
from exporter.exposition.encoding import Row, encode
from exporter.model.figures import BOUNDS, ModelFigures
from exporter.model.problems import REASONS

MODEL_LABELS = ("namespace", "model")
INFO_LABELS = (
    "gpu_type",
    "nodes",
    "regions",
    "size_class",
    "preset",
    "capacity_source",
    "idle_source",
    "attribution",
    "power_source",
    "mfu_basis",
)


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed (counters with their _total)
    kind: str  # gauge | counter
    labels: tuple[str, ...]
    help: str
    group: str  # model | global | self

    @property
    def family_name(self) -> str:
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _model(name: str, help: str, *labels: str, kind: str = "gauge") -> MetricSpec:
    return MetricSpec(name, kind, (*MODEL_LABELS, *labels), help, "model")


METRICS: tuple[MetricSpec, ...] = (
    _model(
        "llm_carbon_model_info",
        "Always 1. Labels describe the served model (pods of one model_name in one namespace)"
        " and which assumptions its figures rest on: GPU type, nodes, grid regions, size "
        "class, workload preset, and where capacity, idle floor, attribution, power and MFU "
        "basis come from.",
        *INFO_LABELS,
    ),
    _model(
        "llm_carbon_power_watts",
        "Mean power over the query window. scope=gpu: GPU board power measured by DCGM "
        "(energy counter rate, else power gauge mean) summed over the model's GPUs. "
        "scope=facility: gpu x host_overhead x PUE, an estimate.",
        "scope",
    ),
    _model(
        "llm_carbon_gpus",
        "Physical GPUs held by the model's pods (MIG instances and "
        "time-sliced copies of one GPU count once).",
    ),
    _model(
        "llm_carbon_tokens_per_second",
        "Mean tokens per second over the query window, summed over pods and engines. "
        "phase=prompt counts prompt tokens as the inference server reports them (vLLM "
        "includes prefix-cache hits); phase=generation counts generated tokens.",
        "phase",
    ),
    _model(
        "llm_carbon_prompt_token_ratio",
        "Observed prompt share of tokens, prompt / (prompt + generation). Only while active.",
    ),
    _model(
        "llm_carbon_energy_joules_per_token",
        "Energy per token (prompt + generation). accounting=amortized: power / tokens per "
        "second, idle power included. accounting=marginal: max(power - idle floor, 0) / "
        "tokens per second. scope as for llm_carbon_power_watts. Only while active.",
        "scope",
        "accounting",
    ),
    _model(
        "llm_carbon_idle_power_watts",
        "Idle floor of the model's GPUs: lowest window-mean power per GPU while inactive "
        "over the look-back, counting windows of at least min_power_watts_per_gpu on the "
        "current GPU products (idle_source=observed), else the GPU table's loaded-idle power "
        "x GPU count (idle_source=gpu_table).",
    ),
    _model(
        "llm_carbon_idle_power_ratio",
        "Share of GPU power the idle floor explains: min(idle floor / power, 1).",
    ),
    _model(
        "llm_carbon_utilization_ratio",
        "Tokens per second / capacity; capacity is configured, else the model's peak "
        "window-mean throughput over the look-back (capacity_source on model_info).",
    ),
    _model(
        "llm_carbon_model_flops_utilization_ratio",
        "MFU: tokens per second x 2 x active parameters / (GPUs x peak dense FLOP/s at the "
        "served precision). Only where model and GPU are in the tables.",
    ),
    _model(
        "llm_carbon_gpu_busy_ratio",
        "DCGM busy ratio averaged over the model's GPUs: PROF_GR_ENGINE_ACTIVE where "
        "present, else GPU_UTIL / 100.",
    ),
    _model(
        "llm_carbon_grid_intensity_grams_per_kwh",
        "Grid CO2 intensity of the model's electricity, power-weighted over its pods' grid "
        "regions. basis=location: annual grid average. basis=market: configured contract or "
        "residual-mix factors, only where every region of the model has one.",
        "basis",
    ),
    _model(
        "llm_carbon_co2_grams_per_token",
        "CO2 per token: sum over pods of power x its region's intensity / 3.6e6, divided by "
        "tokens per second. scope and basis as above. Only while active.",
        "scope",
        "basis",
    ),
    _model(
        "llm_carbon_co2_grams_per_hour",
        "CO2 emission rate: sum over pods of power x its region's intensity / 1000.",
        "scope",
        "basis",
    ),
    _model(
        "llm_carbon_energy_joules_total",
        "Energy this exporter process has observed the model use: window-mean power x "
        "time between cycles (each step capped at the window).",
        "scope",
        kind="counter",
    ),
    _model(
        "llm_carbon_co2_grams_total",
        "CO2 this exporter process has observed the model emit, integrated like "
        "llm_carbon_energy_joules_total.",
        "scope",
        "basis",
        kind="counter",
    ),
    _model(
        "llm_carbon_commercial_joules_per_token",
        "Commercial serving estimate (facility scope, compare with "
        'llm_carbon_energy_joules_per_token{scope="facility"}): s x prefill + (1 - s) x '
        "decode of the baseline's bound, with s the preset's prompt share (mix=preset) or "
        "the observed one (mix=observed, only while active).",
        "baseline",
        "bound",
        "mix",
    ),
    _model(
        "llm_carbon_active",
        "1 when the model serves at least min_tokens_per_second tokens per second, else 0.",
    ),
    _model(
        "llm_carbon_underutilized",
        "1 when the model's GPUs draw power while the idle floor explains most of it, or "
        "utilization or MFU is below its configured floor, or the model is inactive (below "
        "min_tokens_per_second).",
    ),
    _model(
        "llm_carbon_last_seen_timestamp_seconds",
        "Unix time of the cycle that last saw the model upstream.",
    ),
    MetricSpec(
        "llm_carbon_preset_prompt_token_ratio",
        "gauge",
        ("preset",),
        "Prompt share a workload preset assumes: input / (input + output) tokens per call.",
        "global",
    ),
    MetricSpec(
        "llm_carbon_commercial_envelope_joules_per_token",
        "gauge",
        ("baseline", "bound", "phase"),
        "Commercial baseline J per token by phase (prefill = prompt, decode = "
        "generation), facility scope, as configured.",
        "global",
    ),
    MetricSpec(
        "llm_carbon_region_grid_intensity_grams_per_kwh",
        "gauge",
        ("region", "basis", "source"),
        "Annual CO2 intensity of each grid region in use (or the default region), with "
        "the dataset it comes from.",
        "global",
    ),
    MetricSpec(
        "llm_carbon_methodology_info",
        "gauge",
        (
            "pue",
            "host_overhead",
            "window",
            "min_tokens_per_second",
            "default_region",
            "default_preset",
            "grid_datasets",
        ),
        "Always 1. The assumptions behind every figure: PUE and host overhead of the "
        "facility scope, query window, activity threshold, default grid region and "
        "preset, grid datasets.",
        "global",
    ),
    MetricSpec(
        "llm_carbon_exporter_build_info",
        "gauge",
        ("version",),
        "Always 1; the exporter's version.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_upstream_up",
        "gauge",
        ("upstream",),
        "1 when the last cycle read the upstream and the figures are current, else 0.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_last_success_timestamp_seconds",
        "gauge",
        (),
        "Unix time of the last cycle that read the upstream successfully.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_cycle_duration_seconds",
        "gauge",
        (),
        "Wall time of the last cycle (upstream queries and computation). Figures are "
        "computed once per interval, not per scrape.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_upstream_errors_total",
        "counter",
        ("upstream", "reason"),
        "Upstream problems by reason since start; a failed cycle counts once.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_upstream_requests_total",
        "counter",
        ("upstream",),
        "HTTP requests made to the upstream since start.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_models",
        "gauge",
        (),
        "Served models with current figures on this page.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_models_dropped",
        "gauge",
        (),
        "Models left out of the last cycle by exporter.max_models.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_pods_without_gpu_series",
        "gauge",
        (),
        "Serving pods with token series but no usable DCGM GPU series this cycle (none to join, "
        "or invalid power or GPU count): their models get no power figures.",
        "self",
    ),
    MetricSpec(
        "llm_carbon_exporter_unmapped_nodes",
        "gauge",
        (),
        "Nodes that matched no grid.nodes pattern and were given the default region.",
        "self",
    ),
)
SPECS = {spec.name: spec for spec in METRICS}


class Families:
    """Metric families under construction, one per catalogued metric, as rows of label values
    and a value: encoded directly for /metrics (`encode`), or as prometheus_client Metric
    objects for any other consumer of the collector."""

    def __init__(self) -> None:
        self._rows: dict[str, list[Row]] = {}

    def add(self, name: str, labels: tuple[str, ...] | list[str], value: float) -> None:
        rows = self._rows.get(name)
        if rows is None:
            rows = self._rows[name] = []
        rows.append((labels, value))

    def encode(self, openmetrics: bool) -> bytes:
        return encode(
            (
                (spec.family_name, spec.kind, spec.help, spec.labels, rows)
                for spec, rows in ((SPECS[name], rows) for name, rows in self._rows.items())
            ),
            openmetrics,
        )

    def __iter__(self) -> Iterator[Metric]:
        for name, rows in self._rows.items():
            spec = SPECS[name]
            cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = cls(spec.family_name, spec.help, labels=list(spec.labels))
            for labels, value in rows:
                family.add_metric(list(labels), value)
            yield family


class ExporterCollector(Collector):
    """Renders an `Engine`'s current state."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # never collect at registration: that would be work before the first cycle

    def collect(self) -> Iterator[Metric]:
        state = self.engine.state
        stale = self.engine.is_stale(state)
        yield from render(state, stale, self.engine)

    def exposition(self, openmetrics: bool) -> bytes:
        """The current state as a /metrics body, text format 0.0.4 or OpenMetrics 1.0."""
        state = self.engine.state
        return render(state, self.engine.is_stale(state), self.engine).encode(openmetrics)


def render(state: EngineState, stale: bool, engine: Engine) -> Families:
    out = Families()
    settings = engine.settings
    snapshot = None if stale else state.snapshot
    if snapshot is not None:
        for figures in snapshot.models:
            _model_series(out, figures, snapshot)

    for preset in settings.presets:
        out.add("llm_carbon_preset_prompt_token_ratio", (preset,), settings.preset_share(preset))
    for name, envelope in settings.baselines.items():
        for bound in BOUNDS:
            out.add(
                "llm_carbon_commercial_envelope_joules_per_token",
                (name, bound, "prefill"),
                envelope.prefill[bound],
            )
            out.add(
                "llm_carbon_commercial_envelope_joules_per_token",
                (name, bound, "decode"),
                envelope.decode[bound],
            )
    in_use = {settings.node_regions.default}
    if snapshot is not None:
        for figures in snapshot.models:
            in_use.update(figures.regions)
    for name in sorted(in_use):
        region = settings.regions[name]
        for basis in ("location", "market"):
            value = region.intensity(basis)
            if value is not None:
                out.add(
                    "llm_carbon_region_grid_intensity_grams_per_kwh",
                    (name, basis, region.source(basis)),
                    value,
                )
    out.add(
        "llm_carbon_methodology_info",
        (
            f"{settings.pue:g}",
            f"{settings.host_overhead:g}",
            f"{engine.source.window:g}s",
            f"{settings.min_tokens_per_second:g}",
            settings.node_regions.default,
            settings.default_preset,
            ",".join(sorted({settings.regions[r].location_source for r in in_use})),
        ),
        1,
    )

    out.add("llm_carbon_exporter_build_info", (__version__,), 1)
    upstreams = engine.source.upstreams
    for upstream in upstreams:
        up = state.up.get(upstream, False) and not stale
        out.add("llm_carbon_exporter_upstream_up", (upstream,), 1 if up else 0)
    if state.last_success_at is not None:
        out.add("llm_carbon_exporter_last_success_timestamp_seconds", (), state.last_success_at)
    if state.cycle_duration_seconds is not None:
        out.add("llm_carbon_exporter_cycle_duration_seconds", (), state.cycle_duration_seconds)
    errors = {(u, reason): 0 for u in upstreams for reason in REASONS}
    errors.update(state.errors_total)
    for (source, reason), count in sorted(errors.items()):
        out.add("llm_carbon_exporter_upstream_errors_total", (source, reason), count)
    for upstream in upstreams:
        out.add(
            "llm_carbon_exporter_upstream_requests_total",
            (upstream,),
            state.requests_total.get(upstream, 0),
        )
    out.add("llm_carbon_exporter_models", (), len(snapshot.models) if snapshot else 0)
    out.add("llm_carbon_exporter_models_dropped", (), snapshot.models_dropped if snapshot else 0)
    out.add(
        "llm_carbon_exporter_pods_without_gpu_series",
        (),
        snapshot.pods_without_gpus if snapshot else 0,
    )
    out.add("llm_carbon_exporter_unmapped_nodes", (), snapshot.unmapped_nodes if snapshot else 0)
    return out


def _model_series(out: Families, f: ModelFigures, snapshot: Snapshot) -> None:
    key = (f.namespace, f.model)
    out.add("llm_carbon_model_info", (*key, *(value for _, value in f.info)), 1)
    for scope, watts in f.power_w.items():
        out.add("llm_carbon_power_watts", (*key, scope), watts)
    if f.gpus is not None:
        out.add("llm_carbon_gpus", key, f.gpus)
    for phase, tps in f.tokens_per_second.items():
        out.add("llm_carbon_tokens_per_second", (*key, phase), tps)
    optional = (
        ("llm_carbon_prompt_token_ratio", f.prompt_token_ratio),
        ("llm_carbon_idle_power_watts", f.idle_power_w),
        ("llm_carbon_idle_power_ratio", f.idle_power_ratio),
        ("llm_carbon_utilization_ratio", f.utilization),
        ("llm_carbon_model_flops_utilization_ratio", f.mfu),
        ("llm_carbon_gpu_busy_ratio", f.gpu_busy),
    )
    for name, value in optional:
        if value is not None:
            out.add(name, key, value)
    for (scope, accounting), value in f.joules_per_token.items():
        out.add("llm_carbon_energy_joules_per_token", (*key, scope, accounting), value)
    for basis, value in f.grid_intensity.items():
        out.add("llm_carbon_grid_intensity_grams_per_kwh", (*key, basis), value)
    for (scope, basis), value in f.co2_grams_per_token.items():
        out.add("llm_carbon_co2_grams_per_token", (*key, scope, basis), value)
    for (scope, basis), value in f.co2_grams_per_hour.items():
        out.add("llm_carbon_co2_grams_per_hour", (*key, scope, basis), value)
    for scope, joules in snapshot.energy_joules_total.get(key, {}).items():
        out.add("llm_carbon_energy_joules_total", (*key, scope), joules)
    for (scope, basis), grams in snapshot.co2_grams_total.get(key, {}).items():
        out.add("llm_carbon_co2_grams_total", (*key, scope, basis), grams)
    for (baseline, bound, mix), value in f.commercial.items():
        out.add("llm_carbon_commercial_joules_per_token", (*key, baseline, bound, mix), value)
    out.add("llm_carbon_active", key, 1 if f.active else 0)
    if f.underutilized is not None:
        out.add("llm_carbon_underutilized", key, 1 if f.underutilized else 0)
    out.add("llm_carbon_last_seen_timestamp_seconds", key, snapshot.last_seen[key])
