"""The /metrics content: a custom collector that renders the engine's current state afresh on
each collection, so a model that vanishes upstream vanishes here too. Every family it emits is
in `catalogue.METRICS`; per-model series come from the catalogue's extractors."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.engine import Engine, EngineState
from exporter.exposition.catalogue import MODEL_METRICS, SPECS, model_rows
from exporter.exposition.encoding import Encoded, Row
from exporter.model.figures import BOUNDS, ModelFigures
from exporter.model.intensity import BASES, GridIntensities, annual
from exporter.model.problems import REASONS
from exporter.model.snapshot import Snapshot


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

    def encoded(self) -> Encoded:
        return Encoded(
            (spec.family_name, spec.kind, spec.help, spec.labels, rows)
            for spec, rows in ((SPECS[name], rows) for name, rows in self._rows.items())
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

    def encoded(self) -> Encoded:
        """The current state, ready to be written in either format."""
        state = self.engine.state
        return render(state, self.engine.is_stale(state), self.engine).encoded()

    def exposition(self, openmetrics: bool) -> bytes:
        """The current state as a /metrics body, text format 0.0.4 or OpenMetrics 1.0."""
        return self.encoded().body(openmetrics)


def render(state: EngineState, stale: bool, engine: Engine) -> Families:
    """Every family for one engine state: per-model series (unless stale), the global ones,
    and the exporter's own."""
    out = Families()
    snapshot = None if stale else state.snapshot
    if snapshot is not None:
        for figures in snapshot.models:
            _model_series(out, figures, snapshot)
    _global_series(out, engine, snapshot)
    _self_series(out, state, stale, engine, snapshot)
    return out


def _global_series(out: Families, engine: Engine, snapshot: Snapshot | None) -> None:
    settings = engine.settings
    for preset in settings.presets:
        out.add("llm_carbon_preset_prompt_token_ratio", (preset,), settings.preset_share(preset))
        for phase, tokens in zip(("prompt", "generation"), settings.presets[preset], strict=True):
            out.add("llm_carbon_preset_tokens_per_request", (preset, phase), tokens)
    for name, wh in settings.references:
        out.add("llm_carbon_reference_energy_wh_per_request", (name,), wh)
    for name, envelope in settings.baselines.items():
        for bound in BOUNDS:
            for phase, table in (("prefill", envelope.prefill), ("decode", envelope.decode)):
                out.add(
                    "llm_carbon_commercial_envelope_joules_per_token",
                    (name, bound, phase),
                    table[bound],
                )
    grid = snapshot.grid if snapshot is not None and snapshot.grid else annual(settings.regions)
    in_use = {settings.node_regions.default} | {region for region, _ in grid.live}
    if snapshot is not None:
        for figures in snapshot.models:
            in_use.update(figures.regions)
    _grid_series(out, grid, in_use)
    out.add(
        "llm_carbon_methodology_info",
        (
            f"{settings.pue:g}",
            f"{settings.host_overhead:g}",
            f"{engine.source.window:g}s",
            f"{settings.min_tokens_per_second:g}",
            settings.node_regions.default,
            settings.default_preset,
            ",".join(
                sorted(
                    {settings.regions[r].location_source for r in in_use}
                    | {slot.source for slot in grid.live.values()}
                )
            ),
            engine.source.reads,
        ),
        1,
    )


def _grid_series(out: Families, grid: GridIntensities, regions: set[str]) -> None:
    """Each region's intensity in force by basis (with its source), the age of its live data
    where configured, and whether the live value in force is an estimate."""
    for name in sorted(regions):
        for basis in BASES:
            found = grid.values.get((name, basis))
            if found is None:
                continue
            out.add(
                "llm_carbon_region_grid_intensity_grams_per_kwh",
                (name, basis, found.source),
                found.grams_per_kwh,
            )
            value = found.live.value if found.live is not None else None
            if value is not None:
                out.add(
                    "llm_carbon_grid_intensity_estimated",
                    (name, basis, value.method),
                    1 if value.estimated else 0,
                )
    for (name, basis), age in sorted(grid.ages.items()):
        out.add("llm_carbon_grid_intensity_age_seconds", (name, basis), age)


def _self_series(
    out: Families, state: EngineState, stale: bool, engine: Engine, snapshot: Snapshot | None
) -> None:
    out.add("llm_carbon_exporter_build_info", (__version__,), 1)
    upstreams = engine.upstreams
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
    counts = {
        "llm_carbon_exporter_models": len(snapshot.models) if snapshot else 0,
        "llm_carbon_exporter_models_dropped": snapshot.models_dropped if snapshot else 0,
        "llm_carbon_exporter_pods_without_gpu_series": (
            snapshot.pods_without_gpus if snapshot else 0
        ),
        "llm_carbon_exporter_unmapped_nodes": snapshot.unmapped_nodes if snapshot else 0,
    }
    for name, count in counts.items():
        out.add(name, (), count)


def _model_series(out: Families, f: ModelFigures, snapshot: Snapshot) -> None:
    key = (f.namespace, f.model)
    for spec in MODEL_METRICS:
        for labels, value in model_rows(spec, f, snapshot):
            out.add(spec.name, (*key, *labels), value)
