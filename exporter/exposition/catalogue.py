"""The catalogue of every metric family the exporter exposes: name, type, labels, HELP, and,
for per-model families, where the figure comes from. Everything else derives from it: the
series on /metrics (the collector), the JSON report, the per-model series budget and
docs/metrics.md (`python -m exporter.exposition.metrics_doc --write`).

Adding a per-model metric: a formula in `model/methodology.py`, a field on `ModelFigures`
filled by a step of `model/figures.py`, one `_model(...)` entry in `model_metrics.py`, and
tests. See CONTRIBUTING.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from exporter.exposition.model_metrics import (
    MODEL_LABELS as MODEL_LABELS,
)
from exporter.exposition.model_metrics import (
    MODEL_METRICS as MODEL_METRICS,
)
from exporter.exposition.model_metrics import (
    PREFIX,
    LabelRow,
    MetricSpec,
)
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
from exporter.model.problems import REASONS
from exporter.model.snapshot import Snapshot

METRICS: tuple[MetricSpec, ...] = (
    *MODEL_METRICS,
    MetricSpec(
        "llm_carbon_reference_energy_wh_per_request",
        "gauge",
        ("reference",),
        "Published energy per request (prompt) of a commercial LLM service, Wh, to read "
        "llm_carbon_energy_joules_per_request / 3600 beside; each counts something else "
        "(docs/methodology.md#reference-figures): only roughly comparable.",
        "global",
    ),
    MetricSpec(
        "llm_carbon_preset_prompt_token_ratio",
        "gauge",
        ("preset",),
        "Prompt share a workload preset assumes: input / (input + output) tokens per call.",
        "global",
    ),
    MetricSpec(
        "llm_carbon_preset_tokens_per_request",
        "gauge",
        ("preset", "phase"),
        "Tokens per call a workload preset assumes (phase=prompt: input, phase=generation: "
        "output), to read llm_carbon_tokens_per_request beside.",
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
            "upstream_reads",
        ),
        "Always 1. The assumptions behind every figure: PUE and host overhead of the "
        "facility scope, query window, activity threshold, default grid region and "
        "preset, grid datasets, and what the cycles read (upstream_reads): queries over the "
        "raw series, the exporter's recording rules, or the pages of a sidecar.",
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
        "Upstream problems by reason since start: a failed cycle counts once, a problem the "
        "cycle survives (a refused reading, a missing series) once per cycle while it lasts. "
        f"reason is one of {', '.join(REASONS)}.",
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
