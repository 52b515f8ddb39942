"""Each step of the per-model figures on its own: GPU power, CO2, the idle floor, energy per
token, utilization, MFU, busy ratio, the underutilized flag, the commercial envelopes and the
info labels."""

from __future__ import annotations

import pytest

from exporter.config import load
from exporter.model import figures
from exporter.model import methodology as m
from exporter.model import steps as fig
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE, ModelHistory
from exporter.model.settings import FigureSettings
from tests.figure_parts import CAMX, H100, MROW, SDSC, SETTINGS, UNL, served, share


def test_gpu_power_sums_pods_and_names_the_reading() -> None:
    power = fig.gpu_power(served(share(watts=500), share("q", watts=300, share=0.5)))
    assert power.known and power.watts == 800 and power.source == ENERGY_COUNTER
    assert power.attributed_gpus == 4 + 2
    mixed = fig.gpu_power(served(share(), share("q", source=POWER_GAUGE)))
    assert mixed.source == "mixed"


def test_gpu_power_is_unknown_while_a_pod_lacks_gpus() -> None:
    assert fig.gpu_power(served()).source == "missing"
    incomplete = fig.gpu_power(served(share(), missing=("q",)))
    assert not incomplete.known and incomplete.source == "incomplete"


def test_carbon_weighs_each_pod_by_its_own_grid() -> None:
    pods = (share(watts=600), share("q", node=UNL, watts=400))
    regions = {SDSC: "CAMX", UNL: "MROW"}
    co2 = fig.carbon(pods, regions, SETTINGS, fig.gpu_power(served(*pods)), 1000.0)
    grams_per_second = (600 * CAMX + 400 * MROW) / 3.6e6
    assert co2.intensity["location"] == pytest.approx((600 * CAMX + 400 * MROW) / 1000)
    assert co2.per_hour[("gpu", "location")] == pytest.approx(grams_per_second * 3600)
    assert co2.per_token[("facility", "location")] == pytest.approx(
        grams_per_second * SETTINGS.facility_factor / 1000
    )
    assert "market" not in co2.intensity  # no market factor configured for these regions


def test_carbon_is_withheld_while_power_is_incomplete_and_per_token_while_inactive() -> None:
    pods = (share(),)
    incomplete = fig.gpu_power(served(*pods, missing=("q",)))
    assert fig.carbon(pods, {SDSC: "CAMX"}, SETTINGS, incomplete, 1000.0).per_hour == {}
    idle = fig.carbon(pods, {SDSC: "CAMX"}, SETTINGS, fig.gpu_power(served(*pods)), None)
    assert idle.per_hour and idle.per_token == {}


def test_idle_floor_prefers_the_observed_one_then_the_gpu_table() -> None:
    pods = (share(gpus=4, share=0.5),)
    specs = {H100: SETTINGS.catalog.gpu(H100)}
    observed = fig.idle_floor(pods, specs, ModelHistory(idle_floor_w_per_gpu=90.0), 2.0)
    assert observed == (180.0, "observed")
    table = fig.idle_floor(pods, specs, ModelHistory(), 2.0)
    assert table[1] == "gpu_table" and table[0] == pytest.approx(2 * specs[H100].idle_power_w)
    assert fig.idle_floor(pods, {H100: None}, ModelHistory(), 2.0) == (None, "unknown")


def test_joules_per_token_in_both_scopes_and_accountings() -> None:
    power = fig.gpu_power(served(share(watts=800)))
    jpt = fig.joules_per_token(power, 300.0, 400.0, 1.5)
    assert jpt == {
        ("gpu", "amortized"): 2.0,
        ("gpu", "marginal"): 1.25,
        ("facility", "amortized"): 3.0,
        ("facility", "marginal"): pytest.approx(1.875),
    }
    assert ("gpu", "marginal") not in fig.joules_per_token(power, None, 400.0, 1.5)
    assert fig.joules_per_token(power, 900.0, 400.0, 1.0)[("gpu", "marginal")] == 0.0


def test_utilization_uses_configured_capacity_then_the_observed_peak() -> None:
    configured = FigureSettings.from_config(
        load(overrides={"utilization.capacity": [{"pattern": "^m$", "tokens_per_second": 500}]})
    )
    assert fig.utilization("m", 100.0, configured, ModelHistory()) == (0.2, "configured")
    peak = ModelHistory(peak_tokens_per_second=400.0)
    assert fig.utilization("x", 100.0, SETTINGS, peak) == (0.25, "observed_peak")
    assert fig.utilization("x", 800.0, SETTINGS, peak) == (1.0, "observed_peak")  # never > peak
    assert fig.utilization("x", 100.0, SETTINGS, ModelHistory()) == (None, "unknown")


def test_mfu_at_fp8_where_model_and_gpu_have_it() -> None:
    spec = SETTINGS.catalog.model("zai-org/GLM-4.7-FP8")
    gpu = SETTINGS.catalog.gpu(H100)
    mfu, basis = fig.model_flops_utilization((share(gpus=4),), spec, {H100: gpu}, 1000.0)
    assert basis == "fp8"
    assert mfu == pytest.approx(1000 * 2 * spec.active_params_b * 1e9 / (4 * gpu.fp8_tflops * 1e12))
    assert fig.model_flops_utilization((share(),), None, {H100: gpu}, 1.0) == (
        None,
        "unknown_model",
    )
    assert fig.model_flops_utilization((share(),), spec, {H100: None}, 1.0) == (None, "unknown_gpu")


def test_gpu_busy_is_gpu_weighted_and_needs_every_pod() -> None:
    busy = fig.gpu_busy((share(gpus=1, busy=0.2), share("q", gpus=3, busy=0.6)))
    assert busy == pytest.approx(0.5)
    assert fig.gpu_busy((share(busy=0.2), share("q"))) is None


def test_underutilized_follows_the_configured_rules() -> None:
    power = fig.gpu_power(served(share(gpus=4, watts=800)))
    assert fig.underutilized(power, True, SETTINGS, 0.5, 0.05, 0.2) == ()
    assert fig.underutilized(power, True, SETTINGS, 0.05, 0.05, 0.2) == (m.UTILIZATION_RULE,)
    assert fig.underutilized(power, True, SETTINGS, 0.5, 0.001, 0.2) == (m.MFU_RULE,)
    assert fig.underutilized(power, True, SETTINGS, 0.5, 0.05, 0.8) == (m.IDLE_RATIO_RULE,)
    assert fig.underutilized(power, False, SETTINGS, None, None, None) == (m.INACTIVE_RULE,)
    cold = fig.gpu_power(served(share(gpus=4, watts=40)))  # 10 W per GPU: not drawing power
    assert fig.underutilized(cold, False, SETTINGS, None, None, None) == ()
    unknown = fig.gpu_power(served(share(), missing=("q",)))
    assert fig.underutilized(unknown, False, SETTINGS, None, None, None) is None


def test_commercial_compares_the_always_baselines_and_the_size_match() -> None:
    out = fig.commercial(SETTINGS, "large-open", "agentic", 0.5)
    assert {b for b, _, _ in out} == {"nrp-envelope", "frontier", "large-open"}
    assert out[("nrp-envelope", "mid", "observed")] == pytest.approx(0.5 * 3 + 0.5 * 1.5)
    preset = 40000 / 42000
    assert out[("frontier", "low", "preset")] == pytest.approx(preset * 0.1 + (1 - preset) * 0.5)
    inactive = fig.commercial(SETTINGS, "unknown", "agentic", None)
    assert {mix for _, _, mix in inactive} == {"preset"} and len(inactive) == 2 * 3


def test_commercial_envelopes_of_one_class_differ_by_preset_and_repeat_exactly() -> None:
    """The preset's share is worked out once per size class and preset: a second preset for
    the same class gets its own values, and asking again gives the same envelopes."""
    agentic = fig.commercial(SETTINGS, "large-open", "agentic", 0.5)
    simple = fig.commercial(SETTINGS, "large-open", "simple", 0.5)
    key = ("frontier", "high", "preset")
    envelope = SETTINGS.baselines["frontier"]
    for out, (tokens_in, tokens_out) in ((agentic, (40000, 2000)), (simple, (100, 100))):
        share_in = tokens_in / (tokens_in + tokens_out)
        assert out[key] == pytest.approx(
            share_in * envelope.prefill["high"] + (1 - share_in) * envelope.decode["high"]
        )
    assert agentic[key] != simple[key]
    assert fig.commercial(SETTINGS, "large-open", "agentic", 0.5) == agentic
    observed = fig.commercial(SETTINGS, "large-open", "agentic", 0.9)
    assert observed[("frontier", "high", "observed")] != agentic[("frontier", "high", "observed")]
    assert [mix for _, _, mix in agentic][:2] == ["preset", "observed"]


def test_attribution_and_gpu_type_labels() -> None:
    assert fig.attribution((share(),)) == "exclusive"
    assert fig.attribution((share(shared_gpus=1),)) == "shared_gpu"
    assert fig.attribution((share(shared_gpus=1), share("q", share=0.5))) == "shared_pod"
    specs = {H100: SETTINGS.catalog.gpu(H100), "Odd GPU": None}
    assert fig.gpu_type((share(), share("q", product="Odd GPU")), specs) == "H100 SXM,Odd GPU"


def test_info_labels_are_emitted_by_name() -> None:
    computed = figures.compute(served(share()), SETTINGS)
    labels = computed.info.labels()
    assert tuple(labels) == figures.INFO_LABELS
    assert labels["regions"] == "CAMX" and computed.info_value("power_source") == ENERGY_COUNTER
