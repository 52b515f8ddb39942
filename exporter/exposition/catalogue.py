"""The catalogue of every metric family the exporter exposes: name, type, labels, HELP, and,
for per-model families, where the figure comes from. Everything else derives from it: the
series on /metrics (the collector), the JSON report, the per-model series budget and
docs/metrics.md (`python -m exporter.exposition.metrics_doc --write`).

Adding a per-model metric: a formula in `model/methodology.py`, a field on `ModelFigures`
filled by a step of `model/figures.py`, one `_model(...)` entry here, and tests. See
CONTRIBUTING.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.model.figures import (
    ACCOUNTINGS,
    BOUNDS,
    INFO_LABELS,
    MIXES,
    PHASES,
    SCOPES,
    ModelFigures,
)
from exporter.model.intensity import BASES
from exporter.model.snapshot import Snapshot

PREFIX = "llm_carbon_"
MODEL_LABELS = ("namespace", "model")
# A per-model figure: None (absent), a number or flag (one series), or a mapping from a label
# value (or a tuple of them, in label order) to a number.
Figure = float | int | bool | None | Mapping[Any, float]
Extractor = Callable[[ModelFigures, Snapshot], Figure]
LabelRow = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed (counters with their _total)
    kind: str  # gauge | counter
    labels: tuple[str, ...]
    help: str
    group: str  # model | global | self
    # Per-model metrics: the figure, from a model's figures and the snapshot holding them.
    value: Extractor | None = None

    @property
    def family_name(self) -> str:
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _model(name: str, value: Extractor, help: str, *labels: str, kind: str = "gauge") -> MetricSpec:
    return MetricSpec(name, kind, (*MODEL_LABELS, *labels), help, "model", value)


METRICS: tuple[MetricSpec, ...] = (
    _model(
        "llm_carbon_model_info",
        lambda f, _: {tuple(getattr(f.info, n) for n in INFO_LABELS): 1.0},
        "Always 1. Labels describe the served model (pods of one model_name in one namespace)"
        " and which assumptions its figures rest on: GPU type, nodes, grid regions, size "
        "class, workload preset, and where capacity, idle floor, attribution, power and MFU "
        "basis come from.",
        *INFO_LABELS,
    ),
    _model(
        "llm_carbon_power_watts",
        lambda f, _: f.power_w,
        "Mean power over the query window. scope=gpu: GPU board power measured by DCGM "
        "(energy counter rate, else power gauge mean) summed over the model's GPUs. "
        "scope=facility: gpu x host_overhead x PUE, an estimate.",
        "scope",
    ),
    _model(
        "llm_carbon_gpus",
        lambda f, _: f.gpus,
        "Physical GPUs held by the model's pods (MIG instances and "
        "time-sliced copies of one GPU count once).",
    ),
    _model(
        "llm_carbon_tokens_per_second",
        lambda f, _: f.tokens_per_second,
        "Mean tokens per second over the query window, summed over pods and engines. "
        "phase=prompt counts prompt tokens as the inference server reports them (vLLM "
        "includes prefix-cache hits); phase=generation counts generated tokens.",
        "phase",
    ),
    _model(
        "llm_carbon_prompt_token_ratio",
        lambda f, _: f.prompt_token_ratio,
        "Observed prompt share of tokens, prompt / (prompt + generation). Only while active.",
    ),
    _model(
        "llm_carbon_energy_joules_per_token",
        lambda f, _: f.joules_per_token,
        "Energy per token (prompt + generation). accounting=amortized: power / tokens per "
        "second, idle power included. accounting=marginal: max(power - idle floor, 0) / "
        "tokens per second. scope as for llm_carbon_power_watts. Only while active.",
        "scope",
        "accounting",
    ),
    _model(
        "llm_carbon_idle_power_watts",
        lambda f, _: f.idle_power_w,
        "Idle floor of the model's GPUs: lowest window-mean power per GPU while inactive "
        "over the look-back, counting windows of at least min_power_watts_per_gpu on the "
        "current GPU products (idle_source=observed), else the GPU table's loaded-idle power "
        "x GPU count (idle_source=gpu_table).",
    ),
    _model(
        "llm_carbon_idle_power_ratio",
        lambda f, _: f.idle_power_ratio,
        "Share of GPU power the idle floor explains: min(idle floor / power, 1).",
    ),
    _model(
        "llm_carbon_utilization_ratio",
        lambda f, _: f.utilization,
        "Tokens per second / capacity; capacity is configured, else the model's peak "
        "window-mean throughput over the look-back (capacity_source on model_info).",
    ),
    _model(
        "llm_carbon_model_flops_utilization_ratio",
        lambda f, _: f.mfu,
        "MFU: tokens per second x 2 x active parameters / (GPUs x peak dense FLOP/s at the "
        "served precision). Only where model and GPU are in the tables.",
    ),
    _model(
        "llm_carbon_gpu_busy_ratio",
        lambda f, _: f.gpu_busy,
        "DCGM busy ratio averaged over the model's GPUs: PROF_GR_ENGINE_ACTIVE where "
        "present, else GPU_UTIL / 100.",
    ),
    _model(
        "llm_carbon_grid_intensity_grams_per_kwh",
        lambda f, _: f.grid_intensity,
        "Grid CO2 intensity of the model's electricity, power-weighted over its pods' grid "
        "regions, each at the value in force (llm_carbon_region_grid_intensity_grams_per_kwh). "
        "basis=location: the live hourly grid average where configured and no older than "
        "grid.live.max_age, else the annual one. basis=market: configured contract or "
        "residual-mix factors. basis=marginal: the live marginal operating emission rate. "
        "market and marginal only where every region of the model has a value.",
        "basis",
    ),
    _model(
        "llm_carbon_co2_grams_per_token",
        lambda f, _: f.co2_grams_per_token,
        "CO2 per token: sum over pods of power x its region's intensity in force / 3.6e6, "
        "divided by tokens per second. scope and basis as above. Only while active.",
        "scope",
        "basis",
    ),
    _model(
        "llm_carbon_co2_grams_per_hour",
        lambda f, _: f.co2_grams_per_hour,
        "CO2 emission rate: sum over pods of power x its region's intensity in force / 1000.",
        "scope",
        "basis",
    ),
    _model(
        "llm_carbon_energy_joules_total",
        lambda f, s: s.energy_joules_total.get(f.key, {}),
        "Energy this exporter process has observed the model use: window-mean power x "
        "time between cycles (each step capped at the window).",
        "scope",
        kind="counter",
    ),
    _model(
        "llm_carbon_co2_grams_total",
        lambda f, s: s.co2_grams_total.get(f.key, {}),
        "CO2 this exporter process has observed the model emit, integrated like "
        "llm_carbon_energy_joules_total at each cycle's intensity in force (a basis without a "
        "value in force, such as marginal while live data is stale, does not advance).",
        "scope",
        "basis",
        kind="counter",
    ),
    _model(
        "llm_carbon_commercial_joules_per_token",
        lambda f, _: f.commercial,
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
        lambda f, _: f.active,
        "1 when the model serves at least min_tokens_per_second tokens per second, else 0.",
    ),
    _model(
        "llm_carbon_underutilized",
        lambda f, _: f.underutilized,
        "1 when the model's GPUs draw power while the idle floor explains most of it, or "
        "utilization or MFU is below its configured floor, or the model is inactive (below "
        "min_tokens_per_second).",
    ),
    _model(
        "llm_carbon_last_seen_timestamp_seconds",
        lambda f, s: s.last_seen[f.key],
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
        "CO2 intensity in force for each grid region in use (or the default region, or with "
        "live data configured). source: the live provider (electricitymaps, watttime) while "
        "its value is no older than grid.live.max_age, else the annual dataset it falls back "
        "to (or config for configured factors).",
        "global",
    ),
    MetricSpec(
        "llm_carbon_grid_intensity_age_seconds",
        "gauge",
        ("region", "basis"),
        "For each region and basis with live data configured: seconds since the newest live "
        "value applies from, by the provider's own timestamp (since the exporter's first "
        "request while none has arrived). Past grid.live.max_age the annual value is in "
        "force (basis=location) or none (basis=marginal).",
        "global",
    ),
    MetricSpec(
        "llm_carbon_grid_intensity_estimated",
        "gauge",
        ("region", "basis", "method"),
        "For each live value in force: 1 when the provider gives it as an estimate, 0 when "
        "as measured. Electricity Maps: isEstimated, method = estimationMethod. WattTime: "
        'always 1, method="forecast" (the forecast\'s current point).',
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
MODEL_METRICS = tuple(spec for spec in METRICS if spec.group == "model")


def model_rows(spec: MetricSpec, figures: ModelFigures, snapshot: Snapshot) -> Iterator[LabelRow]:
    """The series of one per-model metric for one model: label values after namespace and
    model, and the value."""
    assert spec.value is not None, spec.name
    figure = spec.value(figures, snapshot)
    if figure is None:
        return
    if isinstance(figure, Mapping):
        for key, value in figure.items():
            yield (key if isinstance(key, tuple) else (key,)), float(value)
    else:
        yield (), float(figure)


# The values each per-model label takes; `baseline` is the number of baselines compared
# (the configured `comparison.always` plus the size-matched one).
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "scope": SCOPES,
    "accounting": ACCOUNTINGS,
    "phase": PHASES,
    "bound": BOUNDS,
    "mix": MIXES,
    "basis": BASES,  # location; market where configured; marginal where live
}


def series_budget(bases: tuple[str, ...], baselines: int) -> int:
    """Most series an active model can have, with grid `bases` in use and `baselines` compared."""
    if not set(bases) <= set(BASES):
        raise ValueError(f"bases must be among {BASES}, got {bases}")
    domains = {**{k: len(v) for k, v in LABEL_VALUES.items()}, "basis": len(bases)}
    domains["baseline"] = baselines
    total = 0
    for spec in MODEL_METRICS:
        extra = [label for label in spec.labels[len(MODEL_LABELS) :] if label not in INFO_LABELS]
        total += math.prod(domains[label] for label in extra)
    return total


def json_model(figures: ModelFigures, snapshot: Snapshot) -> dict[str, Any]:
    """One model as the JSON report writes it: every per-model metric under its name without
    the prefix; flags as booleans, absent scalars as null, labelled series as a mapping from
    their label values joined by "/", and model_info as its labels."""
    out: dict[str, Any] = {"namespace": figures.namespace, "model": figures.model}
    for spec in MODEL_METRICS:
        assert spec.value is not None
        key = spec.name.removeprefix(PREFIX)
        if spec.name == "llm_carbon_model_info":
            out[key] = figures.info.labels()
            continue
        figure = spec.value(figures, snapshot)
        if isinstance(figure, Mapping):
            out[key] = {"/".join(k) if isinstance(k, tuple) else k: v for k, v in figure.items()}
        else:
            out[key] = figure
    return out
