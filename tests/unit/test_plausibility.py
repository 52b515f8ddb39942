"""Implausible readings never become figures: the checks one by one, then arbitrary floats
driven through each whole source, the engine and the exposition, which must never show a
non-finite value nor a GPU drawing more than it physically can."""

from __future__ import annotations

import json
import math
import time
from typing import ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import build, default_document, load, merge
from exporter.engine import Engine
from exporter.exposition import report
from exporter.exposition.collector import ExporterCollector
from exporter.model.observations import Observation
from exporter.model.problems import IMPLAUSIBLE, INVALID_VALUE
from exporter.sources.direct import DirectSource
from exporter.sources.plausibility import FP64_BLANK, INT64_BLANK, Plausibility
from exporter.sources.prometheus_api import Sample
from exporter.sources.prometheus_rows import gpu_rows
from exporter.sources.prometheus_tokens import token_rows
from exporter.sources.promql import PHASE, TOKEN_PHASES
from tests.harness import parse_samples

H100 = "NVIDIA H100 80GB HBM3"
CAP = 700 * 1.25  # an H100's rated 700 W with the default margin
PLAUSIBLE = Plausibility(load())


def test_dcgm_blanks_are_implausible() -> None:
    for blank in (FP64_BLANK, FP64_BLANK + 2, INT64_BLANK, 9223372036854775794.0):
        refusal = PLAUSIBLE.sample(blank)
        assert refusal is not None and refusal.reason == IMPLAUSIBLE


def test_non_finite_and_negative_are_invalid() -> None:
    for value in (math.nan, math.inf, -math.inf, -1.0):
        refusal = PLAUSIBLE.sample(value)
        assert refusal is not None and refusal.reason == INVALID_VALUE
    assert PLAUSIBLE.sample(0.7, ceiling=1.0) is None
    assert PLAUSIBLE.sample(1.7, ceiling=1.0).reason == INVALID_VALUE  # type: ignore[union-attr]


def test_gpu_power_is_bounded_by_the_gpu_table() -> None:
    assert PLAUSIBLE.gpu_power(4 * CAP, 4, H100) is None
    assert PLAUSIBLE.gpu_power(4 * CAP + 1, 4, H100).reason == IMPLAUSIBLE  # type: ignore[union-attr]
    # A GPU the table does not know gets the configured limit per GPU.
    assert PLAUSIBLE.gpu_power(1500, 1, "NVIDIA Future GPU") is None
    assert PLAUSIBLE.gpu_power(1501, 1, "NVIDIA Future GPU") is not None


def test_a_counter_step_back_is_a_glitch_a_drop_below_half_a_restart() -> None:
    assert PLAUSIBLE.counter_step(1e9, 1e9 - 1e6).reason == IMPLAUSIBLE  # type: ignore[union-attr]
    assert PLAUSIBLE.counter_step(1e9, 1000.0) is None  # restarted from zero
    assert PLAUSIBLE.counter_step(1e9, 1e9 + 5) is None


def test_token_rates_and_gpu_counts() -> None:
    assert PLAUSIBLE.token_rate(50_000) is None
    assert PLAUSIBLE.token_rate(173_568_000).reason == IMPLAUSIBLE  # type: ignore[union-attr]
    assert PLAUSIBLE.gpu_count(8) is None
    assert PLAUSIBLE.gpu_count(2.5).reason == INVALID_VALUE  # type: ignore[union-attr]
    assert PLAUSIBLE.gpu_count(0).reason == INVALID_VALUE  # type: ignore[union-attr]
    assert PLAUSIBLE.gpu_count(1e6).reason == IMPLAUSIBLE  # type: ignore[union-attr]


# ---- arbitrary floats through whole pipelines

ANY = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([FP64_BLANK, INT64_BLANK, 1e308, -0.0, 5e-324, 2.0**53]),
    st.floats(min_value=0, max_value=2000),
)


class OneObservation:
    name = "prometheus"
    upstreams = ("prometheus",)
    gpu_upstream = "prometheus"
    reads = "queries"
    window = 300.0
    requests_by_upstream: ClassVar[dict[str, int]] = {"prometheus": 1}

    def __init__(self) -> None:
        self.observation = Observation(time.time(), (), ())

    def fetch(self) -> Observation:
        return self.observation

    def close(self) -> None:
        pass


def assert_sound(engine: Engine) -> None:
    """Everything on /metrics and in the JSON report finite, and no model drawing more than
    its GPUs can."""
    text = ExporterCollector(engine).exposition(False).decode()
    samples = parse_samples(text)
    assert all(math.isfinite(value) for _, _, value in samples), text
    gpus = {(s[1]["namespace"], s[1]["model"]): s[2] for s in samples if s[0] == "llm_carbon_gpus"}
    for name, labels, value in samples:
        if name == "llm_carbon_power_watts" and labels["scope"] == "gpu":
            assert value <= gpus[(labels["namespace"], labels["model"])] * CAP * (1 + 1e-9)
    if engine.state.snapshot is not None:
        json.dumps(report.to_dict(engine.state.snapshot, engine.settings), allow_nan=False)


def gpu_sample(value: float, pod: str, **extra: str) -> Sample:
    labels = {
        "lce_namespace": "ns",
        "lce_pod": pod,
        "lce_node": "gpu-a.sdsc.optiputer.net",
        "lce_gpu_model": H100,
        **extra,
    }
    return Sample(labels, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(*[ANY] * 8), min_size=1, max_size=4))
def test_prometheus_rows_never_yield_an_impossible_figure(rows: list[tuple[float, ...]]) -> None:
    results: dict[str, list[Sample]] = {
        k: [] for k in ("power_energy", "power_gauge", "gpu_count", "busy", "shared_gpus", "mig")
    }
    results["tokens"] = []
    for i, (energy, gauge, count, busy, *rates) in enumerate(rows):
        pod = f"p{i}"
        results["power_energy"].append(gpu_sample(energy, pod))
        results["power_gauge"].append(gpu_sample(gauge, pod))
        results["gpu_count"].append(gpu_sample(count, pod))
        results["busy"].append(gpu_sample(busy, pod))
        token = {"lce_namespace": "ns", "lce_pod": pod, "lce_model": f"m/{i % 2}"}
        for phase, rate in zip(TOKEN_PHASES, rates, strict=True):
            results["tokens"].append(Sample({**token, PHASE: phase}, rate))
    problems: list = []
    source = OneObservation()
    tokens, _, _ = token_rows(results, PLAUSIBLE, problems)
    gpus = gpu_rows(results, PLAUSIBLE, problems)
    source.observation = Observation(
        time.time(), tuple(gpus), tuple(tokens), problems=tuple(problems)
    )
    engine = Engine(load(), source)
    assert engine.run_cycle()
    engine.run_cycle()  # the counters advance too
    assert_sound(engine)


class InMemoryPages:
    """The direct source's fetcher, answering from a dict (our own interface)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}

    def get(self, url: str, params: object = None) -> tuple[int, bytes]:
        return 200, self.pages[url].encode()

    def scrub(self, text: str) -> str:
        return text

    def close(self) -> None:
        pass


def dcgm_page(
    power: float, energy: float, util: float, util_name: str = "DCGM_FI_DEV_GPU_UTIL"
) -> str:
    labels = (
        f'gpu="0",UUID="GPU-1",modelName="{H100}",Hostname="n.sdsc.optiputer.net",'
        'pod="p",namespace="ns"'
    )
    return (
        "# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
        f"DCGM_FI_DEV_POWER_USAGE{{{labels}}} {power!r}\n"
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
        f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{labels}}} {energy!r}\n"
        f"# TYPE {util_name} gauge\n"
        f"{util_name}{{{labels}}} {util!r}\n"
    )


def vllm_page(prompt: float, generation: float) -> str:
    return (
        "# TYPE vllm:prompt_tokens_total counter\n"
        f'vllm:prompt_tokens_total{{model_name="m/x"}} {prompt!r}\n'
        "# TYPE vllm:generation_tokens_total counter\n"
        f'vllm:generation_tokens_total{{model_name="m/x"}} {generation!r}\n'
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ANY, ANY, ANY, ANY, ANY), min_size=2, max_size=5))
def test_direct_pages_never_yield_an_impossible_figure(cycles: list[tuple[float, ...]]) -> None:
    fetcher = InMemoryPages()
    document = {
        "source": "direct",
        "direct": {
            "dcgm_urls": ["http://dcgm/metrics"],
            "pods": [{"namespace": "ns", "pod": "p", "vllm_urls": ["http://vllm/metrics"]}],
        },
    }
    config = build(merge(default_document(), document))
    clock = [1_000_000.0]
    source = DirectSource(config, fetcher=fetcher, clock=lambda: clock[0])  # type: ignore[arg-type]
    engine = Engine(config, source, clock=lambda: clock[0])
    for power, energy, util, prompt, generation in cycles:
        fetcher.pages = {
            "http://dcgm/metrics": dcgm_page(power, energy, util),
            "http://vllm/metrics": vllm_page(prompt, generation),
        }
        engine.run_cycle()
        assert_sound(engine)
        clock[0] += 30.0


def test_a_ratio_utilization_field_is_read_and_bounded_as_a_ratio() -> None:
    """A utilization field named ..._RATIO (DCGM 4.7's base units) is a ratio: 0.5 is half
    busy, and 50 (a percent under a ratio's name) is refused, not read as 50 times busy."""
    fetcher = InMemoryPages()
    document = {
        "source": "direct",
        "upstream": {"metrics": {"gpu_util": "DCGM_FI_DEV_GPU_UTIL_RATIO"}},
        "direct": {
            "dcgm_urls": ["http://dcgm/metrics"],
            "pods": [{"namespace": "ns", "pod": "p", "vllm_urls": ["http://vllm/metrics"]}],
        },
    }
    config = build(merge(default_document(), document))

    def busy(util: float) -> float | None:
        clock = [1_000_000.0]
        source = DirectSource(config, fetcher=fetcher, clock=lambda: clock[0])  # type: ignore[arg-type]  # a stand-in fetcher
        engine = Engine(config, source, clock=lambda: clock[0])
        for i in range(2):
            fetcher.pages = {
                "http://dcgm/metrics": dcgm_page(
                    300.0, 1e9 + i * 9e6, util, util_name="DCGM_FI_DEV_GPU_UTIL_RATIO"
                ),
                "http://vllm/metrics": vllm_page(1000.0 + i * 3000, 100.0 + i * 300),
            }
            engine.run_cycle()
            clock[0] += 30.0
        snapshot = engine.state.snapshot
        assert snapshot is not None
        return snapshot.models[0].gpu_busy

    assert busy(0.5) == 0.5
    assert busy(50.0) is None
