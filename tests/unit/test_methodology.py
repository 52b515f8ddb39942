"""Every formula of the methodology, on worked examples and on generated inputs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.model import methodology as m

# Watts: 0 or at least a microwatt (denormal floats make products round by factors of 2).
power = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e5))
positive_rate = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False)
intensity = st.floats(min_value=0, max_value=2000, allow_nan=False)
share = st.floats(min_value=0, max_value=1, allow_nan=False)
joules = st.floats(min_value=0, max_value=100, allow_nan=False)


# ---- worked examples from the NRP review


@pytest.mark.parametrize(
    ("watts", "tps", "expected"),
    [(1320, 3158, 0.42), (1235, 2392, 0.52), (597, 2937, 0.20), (928, 158, 5.87), (421, 246, 1.71)],
)
def test_amortized_joules_per_token_reproduces_the_nrp_table(watts, tps, expected) -> None:
    # The review prints Kimi-K2.5 as 5.86 (truncated); 928 / 158 = 5.873.
    assert round(m.joules_per_token(watts, tps), 2) == expected


def test_nrp_envelope_agentic_mid_is_2_93() -> None:
    s = m.preset_prompt_token_ratio(40000, 2000)
    assert s == pytest.approx(0.952381, rel=1e-6)
    assert round(m.commercial_joules_per_token(s, 3.0, 1.5), 2) == 2.93


def test_presets_prompt_shares() -> None:
    assert m.preset_prompt_token_ratio(100, 100) == 0.5
    assert m.preset_prompt_token_ratio(10000, 500) == pytest.approx(0.952381, rel=1e-6)


def test_marginal_is_power_above_idle_per_token_and_never_negative() -> None:
    assert m.marginal_joules_per_token(928, 8 * 85, 158) == pytest.approx(248 / 158)
    assert m.marginal_joules_per_token(400, 508, 100) == 0.0


def test_idle_power_ratio_is_capped_at_one() -> None:
    assert m.idle_power_ratio(340, 1320) == pytest.approx(340 / 1320)
    assert m.idle_power_ratio(1016, 928) == 1.0
    assert m.idle_power_ratio(10, 0) is None


def test_undefined_figures_are_none_not_zero() -> None:
    assert m.joules_per_token(100, 0) is None
    assert m.marginal_joules_per_token(100, 10, 0) is None
    assert m.co2_grams_per_token(1.0, 0) is None
    assert m.prompt_token_ratio(0, 0) is None
    assert m.power_weighted_intensity([]) is None
    assert m.utilization_ratio(10, 0) is None
    assert m.model_flops_utilization(10, 1e9, 0, 1e15) is None


def test_active_gate() -> None:
    assert m.is_active(5, 5)
    assert not m.is_active(4.99, 5)
    assert not m.is_active(0, 0)


def test_co2_per_hour_and_per_token_units() -> None:
    # 1 kW on a 194.35 g/kWh grid for an hour emits 194.35 g.
    assert m.co2_grams_per_hour(1000, 194.35) == pytest.approx(194.35)
    grams_per_second = m.co2_grams_per_second([(1000, 194.35)])
    assert grams_per_second * 3600 == pytest.approx(194.35)
    assert m.co2_grams_per_token(grams_per_second, 1000) == pytest.approx(194.35 / 3.6e6)


def test_co2_uses_each_pods_own_grid() -> None:
    # A replica in California and one in Nebraska: never one grid for both.
    pods = [(700, 194.35), (535, 417.36)]
    assert m.co2_grams_per_second(pods) == pytest.approx((700 * 194.35 + 535 * 417.36) / 3.6e6)
    assert m.power_weighted_intensity(pods) == pytest.approx((700 * 194.35 + 535 * 417.36) / 1235)


def test_power_weighted_intensity_without_power_is_the_plain_mean() -> None:
    assert m.power_weighted_intensity([(0, 100), (0, 300)]) == 200


def test_facility_power() -> None:
    assert m.facility_power(1000, 1.2, 1.4) == pytest.approx(1680)


def test_model_flops_utilization() -> None:
    # GLM-4.7-FP8: 3158 tok/s x 2 x 32e9 / (4 x 1979e12) = 2.55 %.
    assert m.model_flops_utilization(3158, 32e9, 4, 1979e12) == pytest.approx(0.02553, rel=1e-3)


def test_size_classes() -> None:
    classes = [("small", 15), ("medium", 100), ("large-open", 1000), ("frontier", None)]
    assert m.size_class(8, classes) == "small"
    assert m.size_class(15, classes) == "medium"
    assert m.size_class(355, classes) == "large-open"
    assert m.size_class(1040, classes) == "frontier"


def _because(**overrides: object) -> tuple[str, ...]:
    args = dict(
        power_w=1320,
        gpus=4,
        min_power_w_per_gpu=20,
        active=True,
        utilization=1.0,
        utilization_below=0.1,
        mfu=0.0255,
        mfu_below=0.01,
        idle_ratio=340 / 1320,
        idle_ratio_above=0.5,
    )
    args.update(overrides)
    return m.underutilized_because(**args)  # type: ignore[arg-type]


def _under(**overrides: object) -> bool:
    return bool(_because(**overrides))


def test_underutilized_rule() -> None:
    assert not _under()  # GLM-4.7-FP8 on the NRP figures
    # Kimi-K2.5: 928 W on 8 x H200 whose loaded idle is ~127 W each.
    assert _under(power_w=928, gpus=8, idle_ratio=1.0, mfu=0.0006)
    assert _under(utilization=0.05)
    assert _under(mfu=0.005)
    assert _under(active=False)
    # Not drawing power: nothing to flag, whatever the other inputs say.
    assert not _under(power_w=10, active=False, idle_ratio=1.0)
    # Missing inputs never trigger.
    assert not _under(utilization=None, mfu=None, idle_ratio=None)


def test_underutilized_names_every_rule_that_flags_it() -> None:
    assert _because() == ()
    kimi = _because(power_w=928, gpus=8, idle_ratio=1.0, mfu=0.0006)
    assert kimi == (m.IDLE_RATIO_RULE, m.MFU_RULE)
    assert _because(utilization=0.05) == (m.UTILIZATION_RULE,)
    # Inactive: the per-token rules do not apply, the idle share still does.
    assert _because(active=False, utilization=0.0, mfu=0.0) == (m.INACTIVE_RULE,)
    assert _because(active=False, idle_ratio=0.9) == (m.IDLE_RATIO_RULE, m.INACTIVE_RULE)
    assert _because(power_w=10, active=False, idle_ratio=1.0) == ()


# ---- invariants over generated inputs


@given(power, power, positive_rate)
def test_marginal_never_exceeds_amortized(p: float, idle: float, t: float) -> None:
    assert m.marginal_joules_per_token(p, idle, t) <= m.joules_per_token(p, t) + 1e-12


@given(st.lists(st.tuples(power, intensity), min_size=1, max_size=8), positive_rate)
def test_co2_equals_energy_times_intensity(pods: list, t: float) -> None:
    total_power = sum(p for p, _ in pods)
    weighted = m.power_weighted_intensity(pods)
    grams = m.co2_grams_per_token(m.co2_grams_per_second(pods), t)
    energy_kwh_per_token = m.joules_per_token(total_power, t) / 3.6e6
    assert grams == pytest.approx(energy_kwh_per_token * weighted, rel=1e-9, abs=1e-15)


@given(st.lists(st.tuples(power, intensity), min_size=1, max_size=8))
def test_weighted_intensity_lies_between_its_regions(pods: list) -> None:
    weighted = m.power_weighted_intensity(pods)
    values = [i for _, i in pods]
    assert min(values) - 1e-9 <= weighted <= max(values) + 1e-9


@given(share, joules, joules)
def test_observed_mix_envelope_lies_between_decode_and_prefill(
    s: float, prefill: float, decode: float
) -> None:
    value = m.commercial_joules_per_token(s, prefill, decode)
    assert min(prefill, decode) - 1e-12 <= value <= max(prefill, decode) + 1e-12


@given(power, power, positive_rate, positive_rate)
def test_ratios_are_finite_and_not_negative(p: float, idle: float, tp: float, tg: float) -> None:
    for value in (
        m.prompt_token_ratio(tp, tg),
        m.idle_power_ratio(idle, p + 1e-9),
        m.utilization_ratio(tp, tg),
    ):
        assert value is not None and math.isfinite(value) and value >= 0
    assert m.prompt_token_ratio(tp, tg) <= 1
    assert m.idle_power_ratio(idle, p + 1e-9) <= 1
