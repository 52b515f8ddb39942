"""The fault matrix for the direct-scrape source (sidecar mode): an inference-server or
dcgm-exporter page goes wrong for one cycle. Each fault must be counted under its reason and
logged in one line, never put NaN, Inf or a wrong figure on the page, never make a counter
go down, and be gone within two intervals of the pages coming right."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest

from exporter.config import Config, build, default_document, merge
from exporter.engine import Engine
from exporter.exposition.collector import ExporterCollector
from exporter.model.figures import ModelFigures
from exporter.sources.direct import DirectSource
from tests.harness import StaticPages, parse_samples
from tests.sidecar import GPU, sidecar

pytestmark = pytest.mark.integration

START = "2026-11-26 12:00:00"
INTERVAL = 30.0
MODEL = "org/served-model"
PROMPT_TPS, GENERATION_TPS, WATTS, BUSY = 900.0, 100.0, 250.0, 0.4


@dataclass(frozen=True)
class Values:
    """What the pages say at one moment: counters as totals, gauges as readings; a string
    is written as is (NaN, +Inf, -1, …)."""

    prompt: float | str
    generation: float | str
    energy_mj: float | str
    power_w: float | str
    busy: float | str


def good(seconds: float) -> Values:
    return Values(
        PROMPT_TPS * seconds, GENERATION_TPS * seconds, WATTS * 1000 * seconds, WATTS, BUSY
    )


def vllm_page(v: Values) -> str:
    labels = f'model_name="{MODEL}",engine="0"'
    return (
        "# TYPE vllm:prompt_tokens_total counter\n"
        f"vllm:prompt_tokens_total{{{labels}}} {v.prompt}\n"
        "# TYPE vllm:generation_tokens_total counter\n"
        f"vllm:generation_tokens_total{{{labels}}} {v.generation}\n"
    )


def dcgm_page(v: Values) -> str:
    return (
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
        f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{GPU}}} {v.energy_mj}\n"
        "# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
        f"DCGM_FI_DEV_POWER_USAGE{{{GPU}}} {v.power_w}\n"
        "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge\n"
        f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{GPU}}} {v.busy}\n"
    )


def pages_at(seconds: float, values: Values | None = None) -> dict[str, str | tuple[int, str]]:
    v = values or good(seconds)
    return {"/vllm": vllm_page(v), "/dcgm": dcgm_page(v)}


@dataclass(frozen=True)
class Fault:
    pages: Callable[[float], dict[str, str | tuple[int, str]]]  # the pages while it lasts
    upstream: str
    reason: str
    cycle_ok: bool  # False: the whole cycle fails (the page cannot be read)
    # What the model's figures must show during the fault (None: the model is left out).
    during: Callable[[ModelFigures | None], bool] = field(default=lambda f: f is None)
    blind: bool = False  # the page answered with nothing usable: its upstream_up reads 0


def bad_sample(name: str, value: str) -> Callable[[float], dict]:
    return lambda s: pages_at(s, Values(**{**good(s).__dict__, name: value}))


def power_by_gauge(f: ModelFigures | None) -> bool:
    return (
        f is not None
        and f.info_value("power_source") == "power_gauge"
        and math.isclose(f.power_w["gpu"], WATTS, rel_tol=0.01)
    )


def busy_withheld(f: ModelFigures | None) -> bool:
    return f is not None and f.gpu_busy is None and f.power_w.get("gpu") is not None


HTML = "<!doctype html><html><body>Sign in to continue</body></html>"
FAULTS = {
    "vllm-html-with-200": Fault(
        lambda s: {**pages_at(s), "/vllm": HTML}, "vllm", "malformed_response", False
    ),
    "dcgm-html-with-200": Fault(
        lambda s: {**pages_at(s), "/dcgm": HTML}, "dcgm", "malformed_response", False
    ),
    "vllm-http-500": Fault(
        lambda s: {**pages_at(s), "/vllm": (500, "internal error")}, "vllm", "http_status", False
    ),
    "dcgm-http-503": Fault(
        lambda s: {**pages_at(s), "/dcgm": (503, "busy")}, "dcgm", "http_status", False
    ),
    "vllm-page-without-token-series": Fault(
        lambda s: {**pages_at(s), "/vllm": "# TYPE process_cpu_seconds_total counter\n"},
        "vllm",
        "missing_series",
        True,
        blind=True,
    ),
    "dcgm-page-without-gpu-series": Fault(
        lambda s: {**pages_at(s), "/dcgm": "# TYPE process_cpu_seconds_total counter\n"},
        "dcgm",
        "missing_series",
        True,
        lambda f: f is not None and f.power_w == {},
        blind=True,
    ),
    "dcgm-page-without-this-pods-gpus": Fault(
        lambda s: {**pages_at(s), "/dcgm": dcgm_page(good(s)).replace('pod="p"', 'pod="other"')},
        "dcgm",
        "missing_series",
        True,
        lambda f: f is not None and f.power_w == {},  # tokens stay, power is withheld
    ),
    "busy-above-one": Fault(
        bad_sample("busy", "1.7"), "dcgm", "invalid_value", True, busy_withheld
    ),
}
for _text, _name in {
    "NaN": "nan",
    "+Inf": "plus-inf",
    "-Inf": "minus-inf",
    "-1": "negative",
}.items():
    FAULTS[f"prompt-counter-{_name}"] = Fault(
        bad_sample("prompt", _text), "vllm", "invalid_value", True
    )
    FAULTS[f"energy-counter-{_name}"] = Fault(
        bad_sample("energy_mj", _text), "dcgm", "invalid_value", True, power_by_gauge
    )
    FAULTS[f"busy-{_name}"] = Fault(
        bad_sample("busy", _text), "dcgm", "invalid_value", True, busy_withheld
    )


def render(engine: Engine) -> list[tuple[str, dict[str, str], float]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(engine))
    return parse_samples(generate_latest(registry).decode())


def the_model(engine: Engine) -> ModelFigures | None:
    return next((f for f in engine.state.snapshot.models if f.model == MODEL), None)


def is_right(f: ModelFigures | None) -> bool:
    return (
        f is not None
        and math.isclose(f.power_w["gpu"], WATTS, rel_tol=0.01)
        and math.isclose(f.joules_per_token[("gpu", "amortized")], WATTS / 1000, rel_tol=0.01)
        and f.gpu_busy is not None
        and math.isclose(f.gpu_busy, BUSY, rel_tol=0.01)
    )


@pytest.mark.parametrize("name", FAULTS)
def test_a_page_fault_is_said_once_never_exported_and_recovered_from(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    fault = FAULTS[name]
    server = StaticPages({})
    config = sidecar(server, "/vllm", exporter={"interval": f"{INTERVAL:g}s"})
    totals: dict[tuple, float] = {}

    def step(engine: Engine, frozen, seconds: float, pages: dict) -> bool:
        server.pages = pages
        ok = engine.run_cycle()
        for sample_name, labels, value in render(engine):
            assert math.isfinite(value), (sample_name, labels, value)
            if sample_name.endswith("_total"):
                key = (sample_name, tuple(sorted(labels.items())))
                assert value >= totals.get(key, 0.0), f"{key} went down"
                totals[key] = value
        frozen.tick(INTERVAL)
        return ok

    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            seconds = 1000.0
            for _ in range(3):
                assert step(engine, frozen, seconds, pages_at(seconds))
                seconds += INTERVAL
            assert is_right(the_model(engine)), the_model(engine)
            before = dict(engine.state.errors_total)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                ok = step(engine, frozen, seconds, fault.pages(seconds))
            seconds += INTERVAL
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

            assert ok == fault.cycle_ok
            key = (fault.upstream, fault.reason)
            assert engine.state.errors_total.get(key, 0) > before.get(key, 0), (
                f"{key} not counted: {engine.state.errors_total}"
            )
            assert len(warnings) == 1 and "\n" not in warnings[0], warnings
            if fault.cycle_ok:  # a failed cycle keeps the last good figures until stale
                assert fault.during(the_model(engine)), the_model(engine)
            up = dict(engine.state.up)
            assert up[fault.upstream] is (fault.cycle_ok and not fault.blind), up

            recovered_after = None
            for cycle in (1, 2):
                assert step(engine, frozen, seconds, pages_at(seconds))
                seconds += INTERVAL
                if is_right(the_model(engine)) and all(engine.state.up.values()):
                    recovered_after = cycle
                    break
            assert recovered_after is not None, (the_model(engine), engine.state.up)
    finally:
        server.close()


def test_token_series_without_a_model_label_say_what_to_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # TGI's histogram sums carry no model label: without upstream.default_model no model can
    # be named, and the sidecar must say so rather than show an empty page.
    server = StaticPages({})
    config = sidecar(
        server,
        "/tgi",
        upstream={
            "metrics": {
                "prompt_tokens": "tgi_request_input_length_sum",
                "generation_tokens": "tgi_request_generated_tokens_sum",
            }
        },
    )
    try:
        with freeze_time(START) as frozen, caplog.at_level(logging.WARNING):
            engine = Engine(config, DirectSource(config))
            for seconds in (1000.0, 1030.0):
                server.pages = {
                    "/tgi": (
                        "# TYPE tgi_request_input_length histogram\n"
                        f"tgi_request_input_length_sum {900 * seconds}\n"
                        f"tgi_request_input_length_count {seconds}\n"
                        "# TYPE tgi_request_generated_tokens histogram\n"
                        f"tgi_request_generated_tokens_sum {100 * seconds}\n"
                        f"tgi_request_generated_tokens_count {seconds}\n"
                    ),
                    "/dcgm": dcgm_page(good(seconds)),
                }
                assert engine.run_cycle()
                frozen.tick(INTERVAL)
    finally:
        server.close()
    assert engine.state.snapshot.models == ()
    # Counted every cycle, under the server's own name (not vllm's).
    assert engine.state.errors_total[("tgi", "missing_series")] == 2
    assert engine.state.up == {"tgi": False, "dcgm": True}
    said = [r.getMessage() for r in caplog.records if "default_model" in r.getMessage()]
    assert len(said) == 1, said  # logged once while it lasts
    assert said[0].startswith("upstream tgi: ")
    assert "upstream.token_labels.model" in said[0]  # the other way to name the model


def two_pods(server: StaticPages, b_model: str) -> tuple[Config, Callable[..., dict]]:
    """Pods ns/a and ns/b on nodes n1 and n2 (one dcgm-exporter page each), one exporter
    reading all four pages; pod a serves MODEL, pod b serves `b_model`."""
    pods = [
        {"namespace": "ns", "pod": name, "vllm_urls": [f"{server.base}/vllm-{name}"]}
        for name in ("a", "b")
    ]
    dcgm_urls = [f"{server.base}/dcgm-n1", f"{server.base}/dcgm-n2"]
    document = {"source": "direct", "direct": {"dcgm_urls": dcgm_urls, "pods": pods}}
    config = build(merge(default_document(), document))

    def pages(seconds: float, **broken: tuple[int, str]) -> dict:
        v = good(seconds)
        out: dict[str, str | tuple[int, str]] = {}
        for pod, node, model in (("a", "n1", MODEL), ("b", "n2", b_model)):
            out[f"/vllm-{pod}"] = vllm_page(v).replace(MODEL, model)
            out[f"/dcgm-{node}"] = (
                dcgm_page(v)
                .replace('pod="p"', f'pod="{pod}"')
                .replace("n.ucsd.edu", node)
                .replace('UUID="GPU-9"', f'UUID="GPU-{node}"')
            )
        return {**out, **{f"/{k.replace('_', '-')}": page for k, page in broken.items()}}

    return config, pages


@pytest.mark.parametrize(
    ("broken", "b_model", "expect_b"),
    [
        # Pod b's server fails: its model is left out, pod a's figures stand.
        ("vllm_b", "org/other-model", "absent"),
        # Pod b serves a replica of pod a's model: the model is left out rather than shown
        # with half its tokens.
        ("vllm_b", MODEL, "absent"),
        # Node n2's dcgm-exporter fails: pod b's model keeps its tokens, its power is withheld.
        ("dcgm_n2", "org/other-model", "no power"),
    ],
)
def test_one_unreadable_page_among_several_is_its_pods_problem(
    broken: str, b_model: str, expect_b: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = StaticPages({})
    config, pages = two_pods(server, b_model)
    upstream = broken.split("_")[0]
    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            seconds = 1000.0
            for _ in range(3):
                server.pages = pages(seconds)
                assert engine.run_cycle(), engine.state.errors_total
                frozen.tick(INTERVAL)
                seconds += INTERVAL
            caplog.clear()
            server.pages = pages(seconds, **{broken: (500, "internal error")})
            with caplog.at_level(logging.WARNING):
                assert engine.run_cycle()  # the cycle stands
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            models = {f.model: f for f in engine.state.snapshot.models}
            assert len(warnings) == 1 and "HTTP 500" in warnings[0], warnings
            assert ("models " if upstream == "vllm" else "power of pods ns/b ") in warnings[0]
            assert engine.state.errors_total[(upstream, "http_status")] == 1
            assert engine.state.up == {"vllm": True, "dcgm": True}
            if b_model == MODEL:
                assert MODEL not in models
            else:
                assert is_right(models[MODEL]), models[MODEL]
                b = models.get(b_model)
                assert b is None if expect_b == "absent" else (b is not None and b.power_w == {})
            frozen.tick(INTERVAL)
            seconds += INTERVAL
            server.pages = pages(seconds)
            assert engine.run_cycle()
            models = {f.model: f for f in engine.state.snapshot.models}
    finally:
        server.close()
    # Back at once: the history of the unread page was kept.
    replicas = 2 if b_model == MODEL else 1
    assert models[MODEL].power_w["gpu"] == pytest.approx(WATTS * replicas)
    assert models[b_model].power_w["gpu"] == pytest.approx(WATTS * replicas)
    assert models[MODEL].total_tokens_per_second == pytest.approx(1000 * replicas)


def test_both_upstreams_unreadable_both_read_down(caplog: pytest.LogCaptureFixture) -> None:
    server = StaticPages({})
    config = sidecar(server, "/vllm", exporter={"interval": f"{INTERVAL:g}s"})
    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            for seconds in (1000.0, 1030.0):
                server.pages = pages_at(seconds)
                assert engine.run_cycle()
                frozen.tick(INTERVAL)
            server.pages = {"/vllm": (503, "loading"), "/dcgm": (500, "driver error")}
            with caplog.at_level(logging.WARNING):
                assert not engine.run_cycle()
    finally:
        server.close()
    assert engine.state.up == {"vllm": False, "dcgm": False}
    assert engine.state.errors_total[("vllm", "http_status")] == 1
    assert engine.state.errors_total[("dcgm", "http_status")] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and {w.split()[1] for w in warnings} == {"vllm", "dcgm"}, warnings
