"""Per-model figures: joining pods to models and applying the methodology with its context."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config import load
from exporter.model.figures import ModelFigures, compute
from exporter.model.join import join
from exporter.model.observations import (
    ENERGY_COUNTER,
    POWER_GAUGE,
    ModelHistory,
    Observation,
    PodGpus,
    PodTokens,
    SharedGpu,
)
from exporter.model.settings import FigureSettings

SDSC, UNL = "gpu-a.sdsc.optiputer.net", "hcc-nrp-b.unl.edu"
H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def gpus(
    pod: str,
    node: str,
    n: int,
    watts: float,
    product: str = H100,
    ns: str = "llm",
    source: str = ENERGY_COUNTER,
    **kw: object,
) -> PodGpus:
    return PodGpus(ns, pod, node, product, n, watts, source, **kw)  # type: ignore[arg-type]


def tokens(pod: str, model: str, prompt: float, generation: float, ns: str = "llm") -> PodTokens:
    return PodTokens(ns, pod, model, prompt, generation)


def figures_for(
    gpu_rows: list[PodGpus], token_rows: list[PodTokens], settings=None, history: dict | None = None
) -> dict[str, ModelFigures]:
    settings = settings or FigureSettings.from_config(load())
    observation = Observation(0.0, tuple(gpu_rows), tuple(token_rows))
    return {s.model: compute(s, settings, (history or {}).get(s.key)) for s in join(observation)}


def test_nrp_glm_and_kimi() -> None:
    out = figures_for(
        [gpus("glm", SDSC, 4, 1320), gpus("kimi", SDSC, 8, 928, product=H200)],
        [
            tokens("glm", "zai-org/GLM-4.7-FP8", 3000, 158),
            tokens("kimi", "moonshotai/Kimi-K2.5", 150, 8),
        ],
    )
    glm, kimi = out["zai-org/GLM-4.7-FP8"], out["moonshotai/Kimi-K2.5"]
    assert round(glm.joules_per_token[("gpu", "amortized")], 2) == 0.42
    assert round(kimi.joules_per_token[("gpu", "amortized")], 2) == 5.87
    # Kimi: its GPUs' loaded-idle floor explains all of its draw; GLM: about a quarter.
    assert kimi.underutilized is True and kimi.idle_power_ratio == 1.0
    assert kimi.underutilized_by == ("idle_power_ratio_above", "mfu_below")
    assert kimi.joules_per_token[("gpu", "marginal")] == 0.0
    assert glm.underutilized_by == ()
    assert glm.underutilized is False and glm.idle_power_ratio == pytest.approx(340 / 1320)
    assert glm.info_value("size_class") == "large-open"
    assert kimi.info_value("size_class") == "frontier"
    assert glm.info_value("idle_source") == "gpu_table"
    assert glm.mfu == pytest.approx(3158 * 2 * 32e9 / (4 * 1979e12))
    assert glm.info_value("mfu_basis") == "fp8"


def test_replicas_in_two_regions_are_power_weighted() -> None:
    out = figures_for(
        [gpus("q-1", SDSC, 4, 700), gpus("q-2", UNL, 4, 535)],
        [
            tokens("q-1", "Qwen/Qwen3.5-397B-A17B", 1330, 70),
            tokens("q-2", "Qwen/Qwen3.5-397B-A17B", 944, 48),
        ],
    )
    f = out["Qwen/Qwen3.5-397B-A17B"]
    camx, mrow = 428.464 * 0.45359237, 920.130 * 0.45359237
    assert f.gpus == 8 and f.power_w["gpu"] == 1235
    assert f.info_value("regions") == "CAMX,MROW"
    assert f.grid_intensity["location"] == pytest.approx((700 * camx + 535 * mrow) / 1235, rel=1e-4)
    assert f.co2_grams_per_token[("gpu", "location")] == pytest.approx(
        (700 * camx + 535 * mrow) / 3.6e6 / 2392, rel=1e-4
    )
    factor = 1.2 * 1.4
    assert f.power_w["facility"] == pytest.approx(1235 * factor)
    assert f.co2_grams_per_token[("facility", "location")] == pytest.approx(
        f.co2_grams_per_token[("gpu", "location")] * factor
    )
    assert f.co2_grams_per_hour[("gpu", "location")] == pytest.approx(
        (700 * camx + 535 * mrow) / 1000, rel=1e-4
    )


def test_inactive_model_has_no_per_token_figures() -> None:
    f = figures_for([gpus("idle", SDSC, 1, 78)], [tokens("idle", "some/model", 2, 1)])["some/model"]
    assert not f.active
    assert f.joules_per_token == {} and f.co2_grams_per_token == {}
    assert f.prompt_token_ratio is None
    assert {mix for _, _, mix in f.commercial} == {"preset"}
    assert f.power_w["gpu"] == 78 and f.co2_grams_per_hour
    assert f.underutilized is True  # drawing power, serving (next to) nothing
    assert f.info_value("size_class") == "unknown"
    assert f.info_value("mfu_basis") == "unknown_model" and f.mfu is None


def test_missing_or_incomplete_power_gives_no_power_figures() -> None:
    out = figures_for(
        [gpus("a-1", SDSC, 1, 300)],
        [
            tokens("a-1", "m/a", 100, 10),
            tokens("a-2", "m/a", 100, 10),
            tokens("b-1", "m/b", 100, 10),
        ],
    )
    for model, source in (("m/a", "incomplete"), ("m/b", "missing")):
        f = out[model]
        assert f.info_value("power_source") == source
        assert f.power_w == {} and f.joules_per_token == {} and f.co2_grams_per_token == {}
        assert f.gpus is None and f.grid_intensity == {}  # no partial figures either
        assert f.underutilized is None
        assert f.tokens_per_second["prompt"] == (200 if model == "m/a" else 100)


def test_power_source_mixed_and_gauge() -> None:
    out = figures_for(
        [gpus("x-1", SDSC, 1, 300), gpus("x-2", UNL, 1, 300, source=POWER_GAUGE)],
        [tokens("x-1", "m/x", 100, 10), tokens("x-2", "m/x", 100, 10)],
    )
    assert out["m/x"].info_value("power_source") == "mixed"


def test_a_pod_serving_two_models_splits_power_by_tokens() -> None:
    out = figures_for(
        [gpus("p", SDSC, 2, 400)], [tokens("p", "m/a", 300, 0), tokens("p", "m/b", 100, 0)]
    )
    assert out["m/a"].power_w["gpu"] == pytest.approx(300)
    assert out["m/b"].power_w["gpu"] == pytest.approx(100)
    assert out["m/a"].info_value("attribution") == "shared_pod"


def test_a_gpu_shared_with_another_pod_is_charged_in_full_and_flagged() -> None:
    shared = (SharedGpu("GPU-0", 200, holders=2),)
    out = figures_for(
        [gpus("p", SDSC, 1, 200, shared=shared), gpus("q", SDSC, 1, 200, shared=shared)],
        [tokens("p", "m/a", 100, 0), tokens("q", "m/b", 100, 0)],
    )
    for model in ("m/a", "m/b"):  # an upper bound for each, and said
        assert out[model].power_w["gpu"] == 200 and out[model].gpus == 1
        assert out[model].info_value("attribution") == "shared_gpu"


def test_replicas_sharing_a_gpu_count_it_once() -> None:
    # p holds GPU-0 and GPU-1; q holds GPU-0 (time-sliced or another MIG slice) and GPU-2.
    g0 = SharedGpu("GPU-0", 200, holders=2)
    out = figures_for(
        [gpus("p", SDSC, 2, 200 + 300, shared=(g0,)), gpus("q", SDSC, 2, 200 + 250, shared=(g0,))],
        [tokens("p", "m/a", 100, 0), tokens("q", "m/a", 50, 0)],
    )
    assert out["m/a"].gpus == 3 and out["m/a"].power_w["gpu"] == pytest.approx(750)
    # only its own replicas hold GPU-0: the figure is exact, not an upper bound
    assert out["m/a"].info_value("attribution") == "exclusive"


def test_pods_serving_two_models_on_one_shared_gpu_charge_it_once_per_model() -> None:
    # A and C time-share one 300 W GPU and both serve X and Y (A mostly X, C mostly Y): each
    # model is charged the GPU once, in full (0.7 + 0.3 of it), flagged as a shared pod.
    g0 = SharedGpu("GPU-0", 300, holders=2)
    out = figures_for(
        [gpus("a", SDSC, 1, 300, shared=(g0,)), gpus("c", SDSC, 1, 300, shared=(g0,))],
        [
            tokens("a", "m/x", 70, 0),
            tokens("a", "m/y", 30, 0),
            tokens("c", "m/x", 30, 0),
            tokens("c", "m/y", 70, 0),
        ],
    )
    for model in ("m/x", "m/y"):
        assert out[model].power_w["gpu"] == pytest.approx(300)
        assert out[model].gpus == 1
        assert out[model].info_value("attribution") == "shared_pod"


def test_mig_slices_of_one_gpu_across_replicas_and_another_pod() -> None:
    # Three slices of GPU-0: two replicas of m/a and one pod of m/b; each sees the whole 300 W.
    g0 = SharedGpu("GPU-0", 300, holders=3)
    out = figures_for(
        [gpus(pod, SDSC, 1, 300, shared=(g0,)) for pod in ("a-1", "a-2", "b")],
        [tokens("a-1", "m/a", 10, 0), tokens("a-2", "m/a", 30, 0), tokens("b", "m/b", 5, 0)],
    )
    assert out["m/a"].gpus == 1 and out["m/a"].power_w["gpu"] == pytest.approx(300)
    assert out["m/b"].gpus == 1 and out["m/b"].power_w["gpu"] == pytest.approx(300)
    assert out["m/a"].info_value("attribution") == "shared_gpu"  # m/b holds it too


def test_same_model_in_two_namespaces_stays_apart() -> None:
    observation = Observation(
        0.0,
        (gpus("p", SDSC, 1, 200, ns="a"), gpus("p", SDSC, 1, 100, ns="b")),
        (tokens("p", "m", 10, 0, ns="a"), tokens("p", "m", 10, 0, ns="b")),
    )
    served = join(observation)
    assert [(s.namespace, s.model, s.pods[0].power_w) for s in served] == [
        ("a", "m", 200),
        ("b", "m", 100),
    ]


def test_observed_history_takes_precedence() -> None:
    out = figures_for(
        [gpus("g", SDSC, 4, 1320)],
        [tokens("g", "zai-org/GLM-4.7-FP8", 3000, 158)],
        history={
            ("llm", "zai-org/GLM-4.7-FP8"): ModelHistory(
                peak_tokens_per_second=6316, idle_floor_w_per_gpu=100
            )
        },
    )
    f = out["zai-org/GLM-4.7-FP8"]
    assert f.idle_power_w == 400 and f.info_value("idle_source") == "observed"
    assert f.utilization == pytest.approx(0.5)
    assert f.info_value("capacity_source") == "observed_peak"
    assert f.joules_per_token[("gpu", "marginal")] == pytest.approx(920 / 3158)


def test_configured_capacity_and_preset_and_market_basis() -> None:
    config = load(
        overrides={
            "utilization.capacity": [{"pattern": "GLM", "tokens_per_second": 31580}],
            "workload.models": [{"pattern": "GLM", "preset": "simple"}],
            "grid.regions": {"CAMX": {"market": 100.0}},
        }
    )
    settings = FigureSettings.from_config(config)
    out = figures_for(
        [gpus("g", SDSC, 4, 1320), gpus("q-1", SDSC, 1, 100), gpus("q-2", UNL, 1, 100)],
        [
            tokens("g", "zai-org/GLM-4.7-FP8", 3000, 158),
            tokens("q-1", "m/q", 50, 0),
            tokens("q-2", "m/q", 50, 0),
        ],
        settings=settings,
    )
    glm = out["zai-org/GLM-4.7-FP8"]
    assert glm.utilization == pytest.approx(0.1) and glm.info_value("capacity_source") == (
        "configured"
    )
    assert glm.info_value("preset") == "simple"
    assert glm.commercial[("nrp-envelope", "mid", "preset")] == pytest.approx(0.5 * 3 + 0.5 * 1.5)
    assert glm.grid_intensity["market"] == 100.0
    assert glm.co2_grams_per_token[("gpu", "market")] == pytest.approx(1320 * 100 / 3.6e6 / 3158)
    # A model also running where no market factor is configured gets no market series.
    assert "market" not in out["m/q"].grid_intensity
    assert all(basis == "location" for _, basis in out["m/q"].co2_grams_per_hour)


def test_compared_baselines_are_nrp_frontier_and_scale_matched() -> None:
    out = figures_for(
        [gpus("g", SDSC, 4, 1320), gpus("k", SDSC, 8, 928, product=H200), gpus("u", SDSC, 1, 100)],
        [
            tokens("g", "zai-org/GLM-4.7-FP8", 3000, 158),
            tokens("k", "moonshotai/Kimi-K2.5", 150, 8),
            tokens("u", "my/unknown", 100, 0),
        ],
    )

    def baselines(model: str) -> set[str]:
        return {b for b, _, _ in out[model].commercial}

    assert baselines("zai-org/GLM-4.7-FP8") == {"nrp-envelope", "frontier", "large-open"}
    assert baselines("moonshotai/Kimi-K2.5") == {"nrp-envelope", "frontier"}
    assert baselines("my/unknown") == {"nrp-envelope", "frontier"}
    assert len(out["zai-org/GLM-4.7-FP8"].commercial) == 3 * 3 * 2


def test_fp8_checkpoint_on_a_gpu_without_fp8_uses_the_bf16_peak() -> None:
    f = figures_for(
        [gpus("g", SDSC, 4, 1000, product="NVIDIA A100-SXM4-80GB")],
        [tokens("g", "zai-org/GLM-4.7-FP8", 1000, 100)],
    )["zai-org/GLM-4.7-FP8"]
    assert f.info_value("mfu_basis") == "bf16"
    assert f.mfu == pytest.approx(1100 * 2 * 32e9 / (4 * 312e12))


def test_configured_gpu_and_model_entries_come_first() -> None:
    config = load(
        overrides={
            "catalog": {
                "gpus": [
                    {"pattern": "GB10", "name": "GB10", "bf16_tflops": 100, "idle_power_w": 20}
                ],
                "models": [{"pattern": "^my/", "total_params_b": 20, "active_params_b": 20}],
            }
        }
    )
    f = figures_for(
        [gpus("g", SDSC, 1, 60, product="NVIDIA GB10")],
        [tokens("g", "my/model", 100, 10)],
        settings=FigureSettings.from_config(config),
    )["my/model"]
    assert f.info_value("gpu_type") == "GB10" and f.info_value("size_class") == "medium"
    assert f.idle_power_w == 20 and f.mfu == pytest.approx(110 * 2 * 20e9 / 100e12)


def test_observed_idle_floor_follows_a_shared_pods_share() -> None:
    out = figures_for(
        [gpus("p", SDSC, 2, 400)],
        [tokens("p", "m/a", 300, 0), tokens("p", "m/b", 100, 0)],
        history={("llm", "m/a"): ModelHistory(idle_floor_w_per_gpu=50)},
    )
    assert out["m/a"].idle_power_w == pytest.approx(50 * 2 * 0.75)


# ---- invariants of the assembled figures, over generated clusters


def test_a_model_that_moves_is_labelled_where_it_runs_now(monkeypatch) -> None:
    """What follows from a model's name and where its pods run is worked out once and kept
    per served model: a model moving to another node or GPU product gets its new labels at
    once, and what is kept is bounded."""
    settings = FigureSettings.from_config(load())
    model = "zai-org/GLM-4.7-FP8"
    row = [tokens("glm", model, 3000, 158)]
    first = figures_for([gpus("glm", SDSC, 4, 1320)], row, settings)[model]
    moved = figures_for([gpus("glm", UNL, 4, 1320)], row, settings)[model]
    other_gpu = figures_for([gpus("glm", UNL, 4, 1320, product=H200)], row, settings)[model]
    back = figures_for([gpus("glm", SDSC, 4, 1320)], row, settings)[model]
    assert (first.regions, moved.regions, back.regions) == (("CAMX",), ("MROW",), ("CAMX",))
    assert moved.info_value("nodes") == UNL and moved.info_value("gpu_type") == "H100 SXM"
    assert other_gpu.info_value("gpu_type") == "H200 SXM"
    assert back.info == first.info and len(settings.contexts) == 1  # one entry per model
    elsewhere = figures_for(
        [gpus("glm", UNL, 4, 1320, ns="other")],
        [tokens("glm", model, 3000, 158, ns="other")],
        settings,
    )[model]
    assert elsewhere.regions == ("MROW",) and len(settings.contexts) == 2
    monkeypatch.setattr("exporter.model.figures.MAX_KEPT", 2)
    third = figures_for(
        [gpus("q", "gpu-d.hsrn.nyu.edu", 1, 300)], [tokens("q", "m/q", 30, 3)], settings
    )
    assert third["m/q"].regions == ("NYCW",) and len(settings.contexts) == 1


NODES = (SDSC, UNL, "gpu-d.hsrn.nyu.edu", "unmapped-node.example.org")
PRODUCTS = (H100, H200, "NVIDIA A100-SXM4-80GB", "NVIDIA RTX A4000")
MODELS = ("zai-org/GLM-4.7-FP8", "moonshotai/Kimi-K2.5", "org/unknown-model", "Qwen/Qwen3-8B")


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[PodGpus], list[PodTokens], dict]:
    gpu_rows, token_rows = [], []
    shared = SharedGpu("GPU-S", draw(st.floats(0, 700)), holders=2)
    for index in range(draw(st.integers(1, 6))):
        pod = f"p{index}"
        n = draw(st.integers(1, 8))
        gpu_rows.append(
            gpus(
                pod,
                draw(st.sampled_from(NODES)),
                n,
                draw(st.floats(0, 700 * n)),
                product=draw(st.sampled_from(PRODUCTS)),
                source=draw(st.sampled_from((ENERGY_COUNTER, POWER_GAUGE))),
                shared=(shared,) if draw(st.booleans()) else (),
                busy_ratio=draw(st.none() | st.floats(0, 1)),
            )
        )
        for model in draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=2, unique=True)):
            token_rows.append(
                tokens(pod, model, draw(st.floats(0, 5000)), draw(st.floats(0, 2000)))
            )
    history = {
        ("llm", model): ModelHistory(
            peak_tokens_per_second=draw(st.none() | st.floats(0, 10000)),
            idle_floor_w_per_gpu=draw(st.none() | st.floats(0, 300)),
        )
        for model in MODELS
    }
    return gpu_rows, token_rows, history


MARKET = FigureSettings.from_config(
    load(overrides={"grid.regions": {"CAMX": {"market": 120.0}, "MROW": {"market": 600.0}}})
)


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_assembled_figures_keep_the_invariants(cluster) -> None:
    gpu_rows, token_rows, history = cluster
    for f in figures_for(gpu_rows, token_rows, MARKET, history).values():
        values = [
            *f.power_w.values(),
            *f.joules_per_token.values(),
            *f.grid_intensity.values(),
            *f.co2_grams_per_token.values(),
            *f.co2_grams_per_hour.values(),
            *f.commercial.values(),
            *(v for v in (f.idle_power_w, f.prompt_token_ratio) if v is not None),
        ]
        assert all(math.isfinite(v) and v >= 0 for v in values), f
        for ratio in (f.utilization, f.mfu):  # above 1 only when capacity is stale, or
            assert ratio is None or (math.isfinite(ratio) and ratio >= 0), f  # T counts cache hits
        for ratio in (f.idle_power_ratio, f.gpu_busy, f.prompt_token_ratio):
            assert ratio is None or 0 <= ratio <= 1, f
        for scope in ("gpu", "facility"):
            amortized = f.joules_per_token.get((scope, "amortized"))
            marginal = f.joules_per_token.get((scope, "marginal"))
            if amortized is not None and marginal is not None:
                assert marginal <= amortized * (1 + 1e-9)
            for basis, intensity in f.grid_intensity.items():
                grams = f.co2_grams_per_token.get((scope, basis))
                if grams is not None and amortized is not None:
                    assert grams == pytest.approx(amortized * intensity / 3.6e6, rel=1e-6)
        if f.power_w:
            assert f.power_w["facility"] == pytest.approx(f.power_w["gpu"] * 1.2 * 1.4)
        # market only where every region the model draws power in has a market factor
        if "market" in f.grid_intensity:
            assert set(f.regions) <= {"CAMX", "MROW"}
        for (baseline, bound, _mix), value in f.commercial.items():
            envelope = MARKET.baselines[baseline]
            ends = (envelope.prefill[bound], envelope.decode[bound])
            assert min(ends) * (1 - 1e-9) <= value <= max(ends) * (1 + 1e-9)
