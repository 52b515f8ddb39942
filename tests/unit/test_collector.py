"""/metrics content: exactly the catalogued families, the series budget, escaping, staleness,
and docs/metrics.md generated from the same catalogue."""

from __future__ import annotations

import gzip
import json
import time
from typing import ClassVar

import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

from exporter.config import load
from exporter.engine import Engine
from exporter.exposition import report
from exporter.exposition.catalogue import METRICS, MODEL_LABELS, SPECS, series_budget
from exporter.exposition.collector import ExporterCollector, Families
from exporter.exposition.encoding import escape_label_value
from exporter.exposition.metrics_doc import DOC, main
from exporter.exposition.server import MetricsCache
from exporter.model.observations import (
    ENERGY_COUNTER,
    ModelHistory,
    Observation,
    PodGpus,
    PodTokens,
)
from tests.grid_feeds import StaticGrid, slot
from tests.harness import parse_samples, pick


class FixedSource:
    name = "prometheus"
    upstreams = ("prometheus",)
    gpu_upstream = "prometheus"
    reads = "queries"
    window = 300.0
    requests_by_upstream: ClassVar[dict[str, int]] = {"prometheus": 7}

    def __init__(self, observation_factory) -> None:
        self.factory = observation_factory

    def fetch(self) -> Observation:
        return self.factory()

    def close(self) -> None:
        pass


def full_observation(model: str = "zai-org/GLM-4.7-FP8", namespace: str = "llm") -> Observation:
    """Every optional input present, so every per-model family appears."""
    import time

    return Observation(
        time.time(),
        (
            PodGpus(
                namespace,
                "p-1",
                "gpu-a.sdsc.optiputer.net",
                "NVIDIA H100 80GB HBM3",
                4,
                1320,
                ENERGY_COUNTER,
                busy_ratio=0.7,
            ),
        ),
        (
            PodTokens(
                namespace,
                "p-1",
                model,
                3000,
                158,
                requests_per_second=2.5,
                prompt_computed_tps=1200,
            ),
        ),
        history={(namespace, model): ModelHistory(6000, 90)},
    )


def live_grid_now() -> StaticGrid:
    """Fresh live values for CAMX on both live bases (Electricity Maps says estimated)."""
    now = time.time()
    return StaticGrid(
        [
            slot("CAMX", 150.0, now - 60, estimated=True, method="TIME_SLICER_AVERAGE"),
            slot("CAMX", 400.0, now - 60, "marginal", estimated=True, method="forecast"),
        ]
    )


def engine_with(observation_factory, live: bool = True, **overrides) -> Engine:
    config = load(overrides={"grid.regions": {"CAMX": {"market": 120.0}}, **overrides})
    grid = live_grid_now() if live else None
    return Engine(config, FixedSource(observation_factory), grid=grid)


def after_two_cycles(observation_factory=full_observation) -> Engine:
    """An engine that has run two cycles 30 s apart (so counters have advanced), its clock
    left at the second."""
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = engine_with(observation_factory)
        engine.run_cycle()
        frozen.tick(30)
        engine.run_cycle()
    return engine


def render(engine: Engine) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(engine))
    return generate_latest(registry).decode()


def test_emits_exactly_the_catalogued_families_with_their_labels() -> None:
    engine = after_two_cycles()
    with freeze_time("2026-11-26 12:00:30"):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ExporterCollector(engine))
        families = {f.name: f for f in registry.collect()}
    assert {spec.family_name for spec in METRICS} == set(families)
    for spec in METRICS:
        family = families[spec.family_name]
        assert family.type == spec.kind, spec.name
        assert family.documentation == spec.help
        for sample in family.samples:
            assert set(sample.labels) == set(spec.labels), (spec.name, sample.labels)
            assert sample.name in (spec.name, spec.name + "_created")


def test_per_model_series_budget() -> None:
    """An active model with every input present has exactly the catalogue's budget."""

    def count(live: bool = False, **overrides) -> int:
        with freeze_time("2026-11-26 12:00:00"):
            grid = live_grid_now() if live else None
            config = load(overrides=overrides)
            engine = Engine(config, FixedSource(full_observation), grid=grid)
            engine.run_cycle()
            samples = parse_samples(render(engine))
        return len([s for s in samples if s[1].get("model") == "zai-org/GLM-4.7-FP8"])

    assert count() == series_budget(("location",), baselines=3) == 60
    market = {"grid.regions": {"CAMX": {"market": 120.0}}}
    # DESIGN.md: under 70 with both accounting bases
    assert count(**market) == series_budget(("location", "market"), baselines=3) == 69
    every = series_budget(("location", "market", "marginal"), baselines=3)
    assert count(live=True, **market) == every == 78  # a marginal feed adds 9


def test_live_values_in_force_with_their_source_age_and_estimate() -> None:
    engine = after_two_cycles()
    with freeze_time("2026-11-26 12:00:30"):
        samples = parse_samples(render(engine))
    region = "llm_carbon_region_grid_intensity_grams_per_kwh"
    assert pick(samples, region, region="CAMX", basis="location") == [
        ({"region": "CAMX", "basis": "location", "source": "electricitymaps"}, 150.0)
    ]
    assert pick(samples, region, region="CAMX", basis="marginal")[0][0]["source"] == "watttime"
    assert pick(samples, region, region="CAMX", basis="market")[0][0]["source"] == "config"
    ages = {lab["basis"]: v for lab, v in pick(samples, "llm_carbon_grid_intensity_age_seconds")}
    assert ages == {"location": 90.0, "marginal": 90.0}  # made at 11:59:00, read at 12:00:30
    estimated = pick(samples, "llm_carbon_grid_intensity_estimated", basis="location")
    assert estimated == [
        ({"region": "CAMX", "basis": "location", "method": "TIME_SLICER_AVERAGE"}, 1.0)
    ]
    glm = {"model": "zai-org/GLM-4.7-FP8", "scope": "gpu"}
    per_hour = {lab["basis"]: v for lab, v in pick(samples, "llm_carbon_co2_grams_per_hour", **glm)}
    assert per_hour == pytest.approx(
        {"location": 1320 * 0.150, "market": 1320 * 0.120, "marginal": 1320 * 0.400}
    )
    # The live providers are upstreams like the source's: up, requests, errors by reason.
    for upstream, requests in (("electricitymaps", 3), ("watttime", 5)):
        assert pick(samples, "llm_carbon_exporter_upstream_up", upstream=upstream)[0][1] == 1
        assert (
            pick(samples, "llm_carbon_exporter_upstream_requests_total", upstream=upstream)[0][1]
            == requests
        )
        assert pick(
            samples,
            "llm_carbon_exporter_upstream_errors_total",
            upstream=upstream,
            reason="timeout",
        )
    datasets = pick(samples, "llm_carbon_methodology_info")[0][0]["grid_datasets"]
    assert datasets == "egrid2023rev2,electricitymaps,watttime"


def test_label_values_are_escaped() -> None:
    model = 'we"ird\\name\nwith ünïcode'
    with freeze_time("2026-11-26 12:00:00"):
        engine = engine_with(lambda: full_observation(model=model))
        engine.run_cycle()
        samples = parse_samples(render(engine))
    assert pick(samples, "llm_carbon_model_info", model=model)
    assert pick(samples, "llm_carbon_energy_joules_per_token", model=model)


def test_stale_state_drops_model_series_and_reports_down() -> None:
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = engine_with(full_observation)
        engine.run_cycle()
        assert pick(parse_samples(render(engine)), "llm_carbon_model_info")
        frozen.tick(91)
        samples = parse_samples(render(engine))
    assert not [s for s in samples if "model" in s[1]]
    assert pick(samples, "llm_carbon_exporter_upstream_up")[0][1] == 0
    assert pick(samples, "llm_carbon_exporter_models")[0][1] == 0
    # Configuration-derived series stay: they are true whatever the upstream does.
    assert pick(samples, "llm_carbon_preset_prompt_token_ratio", preset="agentic")
    assert pick(samples, "llm_carbon_exporter_upstream_errors_total", reason="connect")


def test_before_the_first_cycle_nothing_is_invented() -> None:
    engine = engine_with(full_observation)
    samples = parse_samples(render(engine))
    assert not [s for s in samples if "model" in s[1]]
    assert pick(samples, "llm_carbon_exporter_upstream_up")[0][1] == 0
    assert not pick(samples, "llm_carbon_exporter_last_success_timestamp_seconds")


def test_no_nan_or_inf_is_ever_exported() -> None:
    with freeze_time("2026-11-26 12:00:00"):
        engine = engine_with(full_observation)
        engine.run_cycle()
        text = render(engine)
    for _, _, value in parse_samples(text):
        assert value == value and abs(value) != float("inf")


def test_metrics_cache_renders_once_per_state() -> None:
    with freeze_time("2026-11-26 12:00:00"):
        engine = engine_with(full_observation)
        cache = MetricsCache(engine)
        engine.listeners.append(cache.prerender)
        engine.run_cycle()  # pre-renders both formats Prometheus asks for
        first, content_type = cache.gzipped("")
        assert content_type.startswith("text/plain")
        assert cache.gzipped("")[0] is first  # served from memory, not rendered again
        _, om_type = cache.gzipped("application/openmetrics-text; version=1.0.0")
        assert om_type.startswith("application/openmetrics-text")
        assert cache.body("application/openmetrics-text")[0].endswith(b"# EOF\n")
        plain = cache.body("")[0]
        assert gzip.decompress(first) == plain
        assert cache.body("")[0] is plain  # decompressed once, shared by plain scrapers
        engine.run_cycle()
        assert cache.body("")[0] is not plain
        assert cache.gzipped("")[0] is not first
        assert b"llm_carbon_energy_joules_per_token" in cache.body("")[0]


def test_prerender_renders_the_state_once_for_every_format_it_writes() -> None:
    """The sample lines are the same in text and OpenMetrics: the pre-render builds them once
    and writes both pages from them; a scrape that finds its body ready renders nothing."""
    with freeze_time("2026-11-26 12:00:00"):
        engine = engine_with(full_observation)
        cache = MetricsCache(engine)
        engine.listeners.append(cache.prerender)
        renders = []
        encoded = cache.collector.encoded
        cache.collector.encoded = lambda: renders.append(1) or encoded()  # type: ignore[method-assign]
        engine.run_cycle()
        assert len(renders) == 1
        text = cache.body("")[0]
        om = cache.body("application/openmetrics-text; version=1.0.0")[0]
        assert len(renders) == 1
        engine.run_cycle()
        assert len(renders) == 2
    counters = [
        line for line in text.splitlines() if line.startswith(b"# TYPE") and b"counter" in line
    ]
    assert counters and all(line.split()[2].endswith(b"_total") for line in counters)
    assert om.endswith(b"# EOF\n") and not text.endswith(b"# EOF\n")
    samples = [line for line in text.splitlines() if not line.startswith(b"#")]
    assert samples == [line for line in om.splitlines() if not line.startswith(b"#")]


def test_a_render_of_an_older_state_is_never_kept_under_a_newer_key() -> None:
    """The pre-render takes the state's key once; if the state goes stale meanwhile and a
    scrape caches the stale page, the pre-render's render (not stale) must not replace it."""
    with freeze_time("2026-11-26 12:00:00") as frozen:
        engine = engine_with(full_observation)
        cache = MetricsCache(engine)
        engine.run_cycle()
        before = cache._state_key()
        fresh = cache.collector.encoded()  # what the pre-render rendered, not stale
        frozen.tick(engine.config.exporter.interval * (engine.config.exporter.stale_after + 1))
        stale = cache.body("")[0]  # a scrape: the stale page, cached under (version, True)
        assert b"llm_carbon_energy_joules_per_token" not in stale
        zipped, _ = cache._gzipped("", asked=False, shared=(before, lambda: fresh))
        assert gzip.decompress(zipped) == stale and cache._key == (before[0], True)
        openmetrics = cache.body("application/openmetrics-text; version=1.0.0")[0]
        assert b"llm_carbon_energy_joules_per_token" not in openmetrics


PROMETHEUS3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


def test_metrics_cache_prerenders_what_scrapers_ask_for() -> None:
    """Prometheus 3 asks for a content type of its own: once asked, it is rendered after each
    cycle; a type nobody asks for stops being rendered after KEEP_CYCLES cycles."""
    with freeze_time("2026-11-26 12:00:00"):
        engine = engine_with(full_observation)
        cache = MetricsCache(engine)
        engine.listeners.append(cache.prerender)
        engine.run_cycle()
        _, p3_type = cache.gzipped(PROMETHEUS3_ACCEPT)
        text_type = cache.gzipped("")[1]
        assert "escaping=allow-utf-8" in p3_type
        engine.run_cycle()
        assert (p3_type, True) in cache._bodies  # rendered by the cycle, before any scrape
        for _ in range(MetricsCache.KEEP_CYCLES + 1):
            cache.gzipped(PROMETHEUS3_ACCEPT)
            engine.run_cycle()
        assert (p3_type, True) in cache._bodies
        assert (text_type, True) not in cache._bodies  # not asked for: no longer rendered


def test_model_labels_come_first_on_every_model_metric() -> None:
    for spec in METRICS:
        if spec.group == "model":
            assert spec.labels[:2] == MODEL_LABELS
        assert spec.name.startswith("llm_carbon_")
        assert (spec.kind == "counter") == spec.name.endswith("_total")
    assert len(SPECS) == len(METRICS)


def test_metrics_doc_is_generated_from_the_catalogue() -> None:
    assert main(["--check"]) == 0, "run python -m exporter.exposition.metrics_doc --write"
    text = DOC.read_text()
    for spec in METRICS:
        assert f"| `{spec.name}` |" in text


@pytest.mark.parametrize("name", [spec.name for spec in METRICS])
def test_every_metric_has_meaningful_help(name: str) -> None:
    assert len(SPECS[name].help) > 30


ACCEPT_HEADERS = [
    "",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    PROMETHEUS3_ACCEPT,
    "application/openmetrics-text",
]


@pytest.mark.parametrize("accept", ACCEPT_HEADERS)
def test_page_is_byte_for_byte_what_prometheus_client_writes(accept: str) -> None:
    """The exporter's own encoder against prometheus_client's, on a state whose model name and
    namespace carry a quote, a backslash, a newline and non-ASCII text."""
    weird = 'team "a"\\b\nÄ-模型'
    with freeze_time("2026-11-26 12:00:00"):
        engine = engine_with(lambda: full_observation(model=weird, namespace="ns-ü"))
        engine.run_cycle()
        cache = MetricsCache(engine)
        encoder, content_type = choose_encoder(accept)
        ours = cache._render(encoder, content_type)
        theirs = encoder(cache.registry)
    assert ours == theirs
    assert f'model="{escape_label_value(weird)}"'.encode() in ours
    assert b"_total{" in ours  # a counter with its series


@pytest.mark.parametrize("openmetrics", [False, True])
def test_encoder_matches_on_every_kind_of_family(openmetrics: bool) -> None:
    families = Families()
    families.add("llm_carbon_exporter_models", (), 3)
    families.add("llm_carbon_exporter_upstream_requests_total", ("prometheus",), 12)
    families.add("llm_carbon_exporter_upstream_errors_total", ("prometheus", "timeout"), 0.5)
    families.add("llm_carbon_exporter_cycle_duration_seconds", (), 1234567.0)
    families.add("llm_carbon_exporter_build_info", ('v"1\\\n',), 1)
    registry = CollectorRegistry(auto_describe=False)

    class Fixed(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return iter(families)

    registry.register(Fixed())
    library = openmetrics_latest if openmetrics else generate_latest
    assert families.encoded().body(openmetrics) == library(registry)


def test_dots_escaping_is_left_to_prometheus_client() -> None:
    """escaping=dots renames legal names too (llm__carbon__...): the exporter's encoder does
    not do that, so those scrapes get prometheus_client's page."""
    with freeze_time("2026-11-26 12:00:00"):
        engine = engine_with(full_observation)
        engine.run_cycle()
        cache = MetricsCache(engine)
        body = gzip.decompress(
            cache.gzipped("application/openmetrics-text;version=1.0.0;escaping=dots")[0]
        )
    assert b"llm__carbon__energy__joules__total{" in body
    assert b"\nllm_carbon_" not in body and body.endswith(b"# EOF\n")  # no sample unrenamed


def test_json_report_carries_every_per_model_metric() -> None:
    """The JSON report is derived from the catalogue: one key per per-model metric."""
    engine = after_two_cycles()
    document = report.to_dict(engine.state.snapshot, engine.settings)
    (model,) = document["models"]
    names = {spec.name.removeprefix("llm_carbon_") for spec in METRICS if spec.group == "model"}
    assert names <= set(model)
    assert model["model_info"]["attribution"] == "exclusive"
    assert model["active"] is True and model["underutilized"] is False
    assert model["power_watts"]["gpu"] == 1320
    assert model["energy_joules_per_token"]["gpu/amortized"] == pytest.approx(1320 / 3158)
    assert model["energy_joules_total"]["gpu"] == pytest.approx(1320 * 30)
    json.dumps(document, allow_nan=False)  # strict JSON: no NaN or Infinity
