"""The NRP review's table, reproduced end to end, with the context that explains it: idle
floors, utilization, MFU, busy ratios and scale-matched baselines from a real Prometheus."""

from __future__ import annotations

import pytest

from tests.harness import one, pick, wait_until

pytestmark = pytest.mark.integration

# The review's table (seed issue): model, W, tok/s, J/token as printed.
REVIEW = {
    "zai-org/GLM-4.7-FP8": (1320, 3158, 0.42),
    "Qwen/Qwen3.5-397B-A17B-FP8": (1235, 2392, 0.52),
    "openai/gpt-oss-120b": (597, 2937, 0.20),
    "moonshotai/Kimi-K2.5": (928, 158, 5.86),
    "MiniMaxAI/MiniMax-M2.5": (421, 246, 1.71),
}


@pytest.fixture(scope="module")
def samples(prometheus, tmp_path_factory):
    from tests.harness import ExporterProcess

    exporter = ExporterProcess(
        tmp_path_factory.mktemp("nrp"),
        {"prometheus": {"url": prometheus.url}, "exporter": {"interval": "1s"}},
    ).start()
    try:
        # The idle floor is observed in process: an idle model has it from its second cycle.
        wait_until(
            lambda: pick(exporter.samples(), "llm_carbon_model_info", idle_source="observed"),
            15,
            "an observed idle floor",
        )
        yield exporter.samples()
    finally:
        exporter.stop()


@pytest.mark.parametrize("model", list(REVIEW))
def test_review_figures(samples, model: str) -> None:
    watts, tps, joules = REVIEW[model]
    assert one(samples, "llm_carbon_power_watts", scope="gpu", model=model) == pytest.approx(
        watts, rel=0.01
    )
    total = sum(v for _, v in pick(samples, "llm_carbon_tokens_per_second", model=model))
    assert total == pytest.approx(tps, rel=0.01)
    # The review's J/token is its W over its tok/s as printed (Kimi: 928 / 158 = 5.873,
    # printed 5.86), and the exporter's is the same quotient within 1 %.
    assert watts / tps == pytest.approx(joules, abs=0.015)
    assert one(
        samples,
        "llm_carbon_energy_joules_per_token",
        scope="gpu",
        accounting="amortized",
        model=model,
    ) == pytest.approx(watts / tps, rel=0.01)


def test_kimi_reads_underutilized_and_idle_explains_its_cost(samples) -> None:
    kimi = {"model": "moonshotai/Kimi-K2.5"}
    assert one(samples, "llm_carbon_underutilized", **kimi) == 1
    assert one(samples, "llm_carbon_idle_power_ratio", **kimi) > 0.5
    amortized = one(
        samples, "llm_carbon_energy_joules_per_token", scope="gpu", accounting="amortized", **kimi
    )
    marginal = one(
        samples, "llm_carbon_energy_joules_per_token", scope="gpu", accounting="marginal", **kimi
    )
    assert marginal < 0.5 * amortized
    assert one(samples, "llm_carbon_model_flops_utilization_ratio", **kimi) < 0.01


def test_glm_does_not(samples) -> None:
    glm = {"model": "zai-org/GLM-4.7-FP8"}
    assert one(samples, "llm_carbon_underutilized", **glm) == 0
    assert one(samples, "llm_carbon_idle_power_ratio", **glm) < 0.5
    # 3158 tok/s x 2 x 32e9 active parameters / (4 x 1979 TFLOP/s FP8) = 2.55 %.
    assert one(samples, "llm_carbon_model_flops_utilization_ratio", **glm) == pytest.approx(
        3158 * 2 * 32e9 / (4 * 1979e12), rel=0.01
    )
    info = pick(samples, "llm_carbon_model_info", **glm)[0][0]
    assert info["size_class"] == "large-open" and info["mfu_basis"] == "fp8"
    baselines = {
        lab["baseline"] for lab, _ in pick(samples, "llm_carbon_commercial_joules_per_token", **glm)
    }
    assert baselines == {"nrp-envelope", "frontier", "large-open"}


# With the default rule (idle share above 0.5, or MFU below 1 %, while drawing power), and
# the GPU table's loaded-idle draw (85 W per H100, 127 W per H200): the review's three
# low-throughput models are flagged, each with most of its power below the idle floor.
FLAGS = {
    "moonshotai/Kimi-K2.5": 1,  # 116 W per H200 for 158 tok/s: idle share 1 (capped)
    "MiniMaxAI/MiniMax-M2.5": 1,  # 105 W per H100 for 246 tok/s: idle share 1 (capped)
    "Qwen/Qwen3.5-397B-A17B-FP8": 1,  # 154 W per H100: idle share 680/1235 = 0.55, MFU 0.5 %
    "zai-org/GLM-4.7-FP8": 0,  # idle share 0.26, MFU 2.6 %
    "openai/gpt-oss-120b": 0,  # idle share 0.28, MFU 1.5 %
    "meta-llama/Llama-3.1-8B-Instruct": 1,  # drawing power with no tokens
}


@pytest.mark.parametrize(("model", "flag"), FLAGS.items())
def test_which_review_models_read_underutilized(samples, model: str, flag: int) -> None:
    assert one(samples, "llm_carbon_underutilized", model=model) == flag
    idle_share = one(samples, "llm_carbon_idle_power_ratio", model=model)
    if model == "Qwen/Qwen3.5-397B-A17B-FP8":
        assert idle_share == pytest.approx(680 / 1235, rel=0.02)
    else:
        assert (idle_share > 0.5) == bool(flag)


def test_look_back_gives_observed_idle_floor_and_peak(samples) -> None:
    # The idle model's own history is its idle floor; active models have a peak.
    idle = {"model": "meta-llama/Llama-3.1-8B-Instruct"}
    assert pick(samples, "llm_carbon_model_info", **idle)[0][0]["idle_source"] == "observed"
    assert one(samples, "llm_carbon_idle_power_watts", **idle) == pytest.approx(78, rel=0.01)
    glm = {"model": "zai-org/GLM-4.7-FP8"}
    assert pick(samples, "llm_carbon_model_info", **glm)[0][0]["capacity_source"] == (
        "observed_peak"
    )
    assert one(samples, "llm_carbon_utilization_ratio", **glm) == pytest.approx(1.0, abs=0.02)


def test_busy_ratio_prefers_the_profiling_field(samples) -> None:
    # The fixture reports GPU_UTIL 68 % everywhere; only Kimi's node has GR_ENGINE_ACTIVE
    # (0.8 x 68 % = 0.544).
    assert one(samples, "llm_carbon_gpu_busy_ratio", model="moonshotai/Kimi-K2.5") == (
        pytest.approx(0.544, rel=0.01)
    )
    assert one(samples, "llm_carbon_gpu_busy_ratio", model="zai-org/GLM-4.7-FP8") == (
        pytest.approx(0.68, rel=0.01)
    )


def test_scale_matched_envelope_and_observed_mix(samples) -> None:
    kimi = {"model": "moonshotai/Kimi-K2.5", "baseline": "frontier"}
    share = one(samples, "llm_carbon_prompt_token_ratio", model="moonshotai/Kimi-K2.5")
    observed = one(
        samples, "llm_carbon_commercial_joules_per_token", bound="mid", mix="observed", **kimi
    )
    assert observed == pytest.approx(share * 0.4 + (1 - share) * 1.5)
    # The preset's share is a global series, so the mismatch is one subtraction away.
    preset = one(samples, "llm_carbon_preset_prompt_token_ratio", preset="agentic")
    assert share - preset == pytest.approx(150 / 158 - 40000 / 42000, abs=0.005)
