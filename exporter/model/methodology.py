"""The methodology as pure functions over plain numbers: no I/O, no configuration objects.

Every formula here is written out, with its sources, in docs/methodology.md. Units: W, J,
tokens/s, g CO2/kWh, g CO2. Functions return None where a figure is undefined (rather than
0 or NaN), so callers omit the series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

JOULES_PER_KWH = 3.6e6
SECONDS_PER_HOUR = 3600.0
HOURS_PER_YEAR = 8766.0  # 365.25 days
# Above this many tokens per finished request the request rate is not a denominator: no model
# reads a context of 100 M tokens, so the rate is garbage or the window saw (next to) no
# request finish while long ones ran.
MAX_TOKENS_PER_REQUEST = 1e8


def is_active(tokens_per_second: float, min_tokens_per_second: float) -> bool:
    """A model is active when it serves at least `min_tokens_per_second` (prompt + generation)."""
    return tokens_per_second >= min_tokens_per_second and tokens_per_second > 0


def joules_per_token(power_w: float, tokens_per_second: float) -> float | None:
    """Amortized energy per token: P / T (standby included)."""
    if tokens_per_second <= 0:
        return None
    return power_w / tokens_per_second


def marginal_joules_per_token(
    power_w: float, idle_power_w: float, tokens_per_second: float
) -> float | None:
    """Energy per token above the idle floor: max(P - P_idle, 0) / T."""
    if tokens_per_second <= 0:
        return None
    return max(power_w - idle_power_w, 0.0) / tokens_per_second


def idle_power_ratio(idle_power_w: float, power_w: float) -> float | None:
    """Share of the power draw that the idle floor explains: min(P_idle / P, 1)."""
    if power_w <= 0:
        return None
    return min(idle_power_w / power_w, 1.0)


def facility_power(gpu_power_w: float, host_overhead: float, pue: float) -> float:
    """Estimated facility power behind a measured GPU power: P_gpu x host_overhead x PUE."""
    return gpu_power_w * host_overhead * pue


def co2_grams_per_hour(power_w: float, intensity_g_per_kwh: float) -> float:
    """g CO2 per hour of drawing `power_w` on a grid of the given intensity: P x I / 1000."""
    return power_w * intensity_g_per_kwh / 1000.0


def co2_grams_per_second(pods: Iterable[tuple[float, float]]) -> float:
    """Sum over (power W, intensity g/kWh) pairs of P x I / 3.6e6: each pod on its own grid."""
    return sum(power * intensity for power, intensity in pods) / JOULES_PER_KWH


def co2_grams_per_token(grams_per_second: float, tokens_per_second: float) -> float | None:
    """g CO2 per token: (sum of P_pod x I_pod / 3.6e6) / T."""
    if tokens_per_second <= 0:
        return None
    return grams_per_second / tokens_per_second


def power_weighted_intensity(pods: Iterable[tuple[float, float]]) -> float | None:
    """Intensity of the energy drawn: sum(P x I) / sum(P); the plain mean when no power is
    drawn (so a model at 0 W still shows where it runs); None for no pods."""
    pairs = list(pods)
    if not pairs:
        return None
    total_power = sum(power for power, _ in pairs)
    if total_power <= 0:
        return sum(intensity for _, intensity in pairs) / len(pairs)
    return sum(power * intensity for power, intensity in pairs) / total_power


def prompt_token_ratio(prompt_tps: float, generation_tps: float) -> float | None:
    """Observed prompt share s_obs = Tp / (Tp + Tg)."""
    total = prompt_tps + generation_tps
    if total <= 0:
        return None
    return prompt_tps / total


def preset_prompt_token_ratio(input_tokens: int, output_tokens: int) -> float:
    """A preset's prompt share s_preset = in / (in + out)."""
    return input_tokens / (input_tokens + output_tokens)


def commercial_joules_per_token(
    prompt_share: float, prefill_j_per_token: float, decode_j_per_token: float
) -> float:
    """Blended commercial J/token at prompt share s: s x prefill + (1 - s) x decode."""
    return prompt_share * prefill_j_per_token + (1.0 - prompt_share) * decode_j_per_token


def model_flops_utilization(
    tokens_per_second: float, active_params: float, gpus: int, peak_flops_per_gpu: float
) -> float | None:
    """MFU: T x 2 x N_active / (GPUs x peak dense FLOP/s)."""
    if gpus <= 0 or peak_flops_per_gpu <= 0:
        return None
    return tokens_per_second * 2.0 * active_params / (gpus * peak_flops_per_gpu)


def utilization_ratio(tokens_per_second: float, capacity_tokens_per_second: float) -> float | None:
    """Throughput relative to capacity: T / capacity (may exceed 1 if capacity is stale)."""
    if capacity_tokens_per_second <= 0:
        return None
    return tokens_per_second / capacity_tokens_per_second


def size_class(total_params_b: float, classes: Iterable[tuple[str, float | None]]) -> str:
    """The first class whose upper bound (billions of total parameters) exceeds the size;
    a class without a bound takes everything left."""
    name = ""
    for name, below in classes:
        if below is None or total_params_b < below:
            return name
    return name


# The underutilization rules, as `underutilized_because` names them.
IDLE_RATIO_RULE = "idle_power_ratio_above"
INACTIVE_RULE = "inactive"
UTILIZATION_RULE = "utilization_below"
MFU_RULE = "mfu_below"


def underutilized_because(
    *,
    power_w: float,
    gpus: float,
    min_power_w_per_gpu: float,
    active: bool,
    utilization: float | None,
    utilization_below: float | None,
    mfu: float | None,
    mfu_below: float | None,
    idle_ratio: float | None,
    idle_ratio_above: float | None,
) -> tuple[str, ...]:
    """The rules that flag GPUs drawing power while doing little: the idle floor explains most
    of the draw, the model is inactive, or an active model's utilization or MFU is under its
    floor. None while the GPUs draw (next to) no power; a missing figure never triggers."""
    if gpus <= 0 or power_w < min_power_w_per_gpu * gpus:
        return ()
    rules = []
    if idle_ratio is not None and idle_ratio_above is not None and idle_ratio > idle_ratio_above:
        rules.append(IDLE_RATIO_RULE)
    if not active:
        return (*rules, INACTIVE_RULE)  # drawing power with (next to) no tokens
    if (
        utilization is not None
        and utilization_below is not None
        and utilization < utilization_below
    ):
        rules.append(UTILIZATION_RULE)
    if mfu is not None and mfu_below is not None and mfu < mfu_below:
        rules.append(MFU_RULE)
    return tuple(rules)


def per_unit(per_second: float, units_per_second: float) -> float | None:
    """A rate per unit of output (a token, a finished request): rate / units per second;
    None without units, or where the quotient overflows."""
    if units_per_second <= 0:
        return None
    value = per_second / units_per_second
    return value if math.isfinite(value) else None


def request_rate(requests_per_second: float | None, tokens_per_second: float) -> float | None:
    """The request rate to divide by: None without finished requests, or with more than
    MAX_TOKENS_PER_REQUEST tokens each."""
    if not requests_per_second or requests_per_second <= 0:
        return None
    if tokens_per_second / requests_per_second > MAX_TOKENS_PER_REQUEST:
        return None
    return requests_per_second


def embodied_grams_per_hour(kg_per_gpu: float, gpus: float, lifetime_years: float) -> float:
    """Embodied g CO2e per hour of holding `gpus` GPUs (fractions for MIG slices), each made
    with `kg_per_gpu` (its server share included), amortized over `lifetime_years`: SCI's
    M = TE x (time reserved / expected life) x (resources reserved / total resources)."""
    return kg_per_gpu * 1000.0 * gpus / (lifetime_years * HOURS_PER_YEAR)
