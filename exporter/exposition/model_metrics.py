"""The per-model metric families: name, labels, HELP, and where each figure comes from (a
model's `ModelFigures` and the snapshot holding them). `catalogue` adds the global and self
families and derives everything else from the whole list."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.model.figures import INFO_LABELS, ModelFigures
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


MODEL_METRICS: tuple[MetricSpec, ...] = (
    _model(
        "llm_carbon_model_info",
        lambda f, _: {tuple(getattr(f.info, n) for n in INFO_LABELS): 1.0},
        "Always 1. Labels describe the served model (pods of one model_name in one namespace)"
        " and which assumptions its figures rest on: GPU type, nodes, grid regions, size "
        "class, workload preset, and where capacity, idle floor, attribution, power, MFU basis "
        "and embodied figures (embodied_basis: table, proxy or none) come from.",
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
        "current GPU products, x GPU count (idle_source=observed), else the GPU table's "
        "loaded-idle power x GPU count (idle_source=gpu_table).",
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
        "window-mean throughput over the look-back, never below the current one "
        "(capacity_source on model_info).",
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
        "present, else GPU_UTIL as a ratio (percent / 100, or as published for a _RATIO "
        "field).",
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
        "llm_carbon_requests_per_second",
        lambda f, _: f.per_request.requests_per_second,
        "Finished requests per second over the query window, from the inference server's "
        "counter (vLLM request_success_total, all finished_reasons), summed over pods and "
        "engines. Absent where the server does not count them.",
    ),
    _model(
        "llm_carbon_energy_joules_per_request",
        lambda f, _: f.per_request.joules_per_request,
        "Energy per finished request, computed like llm_carbon_energy_joules_per_token with "
        "requests per second as the denominator: power / requests per second (amortized) or "
        "above the idle floor (marginal). Only while active and where requests are counted.",
        "scope",
        "accounting",
    ),
    _model(
        "llm_carbon_co2_grams_per_request",
        lambda f, _: f.per_request.co2_grams_per_request,
        "CO2 per finished request: the model's CO2 per second (each pod on its own grid) / "
        "requests per second. Only while active and where requests are counted.",
        "scope",
        "basis",
    ),
    _model(
        "llm_carbon_tokens_per_request",
        lambda f, _: f.per_request.tokens_per_request,
        "Observed mean tokens per finished request: tokens per second of the phase / requests "
        "per second, to compare with the workload preset's tokens per call. Only while active "
        "and where requests are counted.",
        "phase",
    ),
    _model(
        "llm_carbon_energy_joules_per_computed_token",
        lambda f, _: f.per_request.facility_joules_per_computed_token,
        "Facility-scope energy per token the GPUs computed: facility power / (prompt tokens "
        "not served from the prefix cache + generated tokens) per second; compare with "
        'llm_carbon_energy_joules_per_token{scope="facility",accounting="amortized"}, which '
        "counts cache hits. Only while active and where vLLM counts prompt tokens by source.",
    ),
    _model(
        "llm_carbon_embodied_co2_grams_per_hour",
        lambda f, _: f.footprint.embodied_grams_per_hour,
        "Embodied emissions of the model's GPUs and their share of the server, amortized over "
        "embodied.lifetime_years: (GPU kg + server kg per GPU) x 1000 x GPUs held (MIG "
        "fractions) / lifetime hours. Drawn whether or not the model serves.",
    ),
    _model(
        "llm_carbon_embodied_co2_grams_total",
        lambda f, s: s.embodied_grams_total.get(f.key),
        "Embodied emissions this exporter process has charged the model, integrated like "
        "llm_carbon_energy_joules_total.",
        kind="counter",
    ),
    _model(
        "llm_carbon_sci_grams_per_token",
        lambda f, _: f.footprint.sci_grams_per_token,
        "Software Carbon Intensity per token (ISO/IEC 21031:2024): facility-scope, "
        "location-based CO2 per token + embodied g per hour / 3600 / tokens per second. Only "
        "while active.",
    ),
    _model(
        "llm_carbon_sci_grams_per_request",
        lambda f, _: f.footprint.sci_grams_per_request,
        "Software Carbon Intensity per finished request: as llm_carbon_sci_grams_per_token "
        "with requests per second as the denominator. Only while active and where requests "
        "are counted.",
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
)
