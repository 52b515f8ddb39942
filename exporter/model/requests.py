"""Steps of a model's figures per request and over the whole footprint: energy and CO2 per
finished request, the observed tokens per request, facility energy per computed token, the
embodied emissions of its hardware, and SCI per token and per request.

SCI (Green Software Foundation, ISO/IEC 21031:2024) = (E x I + M) per R: the operational CO2
of the facility scope on the location basis (SCI excludes market-based instruments) plus the
embodied emissions M of the GPUs and their share of the server, amortized over their life
and over the time reserved, which is all of it: idle GPUs age too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.model import methodology as m
from exporter.model.embodied import EmbodiedTable
from exporter.model.join import PodShare, ServedModel
from exporter.model.steps import GpuPower, joules_per_token, scaled


@dataclass(frozen=True)
class PerRequest:
    """A model's figures per finished request (absent without a request counter, or while
    inactive) and per kind of token."""

    requests_per_second: float | None = None
    joules_per_request: Mapping[tuple[str, str], float] = field(default_factory=dict)
    co2_grams_per_request: Mapping[tuple[str, str], float] = field(default_factory=dict)
    tokens_per_request: Mapping[str, float] = field(default_factory=dict)  # phase
    facility_joules_per_computed_token: float | None = None


@dataclass(frozen=True)
class Footprint:
    """Embodied emissions, and SCI: operational plus embodied CO2 per unit."""

    embodied_grams_per_hour: float | None = None
    sci_grams_per_token: float | None = None
    sci_grams_per_request: float | None = None


def per_request(
    served: ServedModel,
    power: GpuPower,
    idle_w: float | None,
    co2_per_hour: Mapping[tuple[str, str], float],
    factor: float,
    active: bool,
) -> PerRequest:
    """Per-request figures, computed like the per-token ones with finished requests per
    second as the denominator, and facility energy per token computed (prompt tokens not
    served from the prefix cache, plus generated tokens). Only while active."""
    if not active:
        return PerRequest(requests_per_second=served.requests_per_second)
    rps = m.request_rate(served.requests_per_second, served.tokens_per_second)
    watts = scaled(power.watts, factor) if power.known else {}
    computed = (
        m.per_unit(watts["facility"], served.prompt_computed_tps + served.generation_tps)
        if served.prompt_computed_tps is not None and "facility" in watts
        else None
    )
    if rps is None:
        return PerRequest(served.requests_per_second, facility_joules_per_computed_token=computed)
    co2 = {k: m.per_unit(g / m.SECONDS_PER_HOUR, rps) for k, g in co2_per_hour.items()}
    return PerRequest(
        requests_per_second=rps,
        joules_per_request=joules_per_token(power, idle_w, rps, factor),  # a request as the unit
        co2_grams_per_request={k: g for k, g in co2.items() if g is not None},
        tokens_per_request={
            "prompt": served.prompt_tps / rps,
            "generation": served.generation_tps / rps,
        },
        facility_joules_per_computed_token=computed,
    )


def embodied(pods: tuple[PodShare, ...], table: EmbodiedTable) -> tuple[float | None, str]:
    """(embodied g CO2e per hour of the model's GPUs and their server share, basis): each
    pod's share of its GPUs (MIG slices, a pod's share of a GPU it serves several models on)
    times the per-GPU figure, over the hardware's life. None where a GPU has no figure."""
    if not pods:
        return None, "none"
    found = [table.per_gpu(p.gpu_model) for p in pods]
    if any(f is None for f in found):
        return None, "none"
    grams = sum(
        m.embodied_grams_per_hour(f.kg, p.gpu_equivalents, table.lifetime_years)
        for p, f in zip(pods, found, strict=True)
        if f is not None
    )
    proxy = any(f is not None and f.proxy for f in found)
    return grams, "proxy" if proxy else "table"


def sci(
    co2_per_hour: Mapping[tuple[str, str], float],
    embodied_per_hour: float | None,
    served: ServedModel,
    active: bool,
) -> tuple[float | None, float | None]:
    """(SCI g per token, g per request): facility-scope, location-based operational CO2 plus
    embodied, per token and per finished request; only while active, and only where both
    parts are known."""
    operational = co2_per_hour.get(("facility", "location"))
    if not active or operational is None or embodied_per_hour is None:
        return None, None
    per_second = (operational + embodied_per_hour) / m.SECONDS_PER_HOUR
    rps = m.request_rate(served.requests_per_second, served.tokens_per_second)
    return m.per_unit(per_second, served.tokens_per_second), m.per_unit(per_second, rps or 0.0)
