"""Per-request figures, the embodied emissions of a model's hardware and SCI, step by step and
through `compute`, with invariants over any inputs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.config import load
from exporter.model import figures
from exporter.model import methodology as m
from exporter.model import requests as r
from exporter.model import steps as fig
from exporter.model.embodied import EmbodiedTable
from exporter.model.observations import ModelHistory
from exporter.model.settings import FigureSettings
from tests.figure_parts import CAMX, H100, SDSC, SETTINGS, served, share

F = SETTINGS.facility_factor
H100_KG = 164 + 375  # NVIDIA's HGX H100 figure per GPU, and the server share per GPU
GRAMS_PER_HOUR_PER_H100 = H100_KG * 1000 / (5 * 8766)


def test_per_request_divides_power_and_co2_by_finished_requests() -> None:
    model = served(share(watts=800), tps=1000.0, requests_per_second=2.0)
    power = fig.gpu_power(model)
    co2_per_hour = {("gpu", "location"): 180.0, ("facility", "location"): 180.0 * F}
    figs = r.per_request(model, power, 300.0, co2_per_hour, F, active=True)
    assert figs.requests_per_second == 2.0
    assert figs.joules_per_request == {
        ("gpu", "amortized"): 400.0,
        ("gpu", "marginal"): 250.0,
        ("facility", "amortized"): pytest.approx(400.0 * F),
        ("facility", "marginal"): pytest.approx((800 - 300) * F / 2),
    }
    assert figs.co2_grams_per_request[("gpu", "location")] == pytest.approx(180 / 3600 / 2)
    assert figs.tokens_per_request == {"prompt": 450.0, "generation": 50.0}


def test_per_request_figures_are_absent_without_requests_or_while_inactive() -> None:
    power = fig.gpu_power(served(share()))
    for rps in (None, 0.0):
        figs = r.per_request(served(share(), requests_per_second=rps), power, None, {}, F, True)
        assert figs.joules_per_request == {} and figs.tokens_per_request == {}
    idle = r.per_request(served(share(), requests_per_second=2.0), power, None, {}, F, False)
    assert idle.requests_per_second == 2.0 and idle.joules_per_request == {}


def test_a_request_rate_too_small_for_its_tokens_is_not_a_denominator() -> None:
    """A request rate that makes a request longer than any context is garbage upstream."""
    assert m.request_rate(1e-6, 1000.0) is None  # 1e9 tokens per request
    assert m.request_rate(1e-3, 1000.0) == 1e-3  # 1e6 tokens: long, possible
    model = served(share(), tps=1000.0, requests_per_second=5e-324)
    figs = r.per_request(model, fig.gpu_power(model), None, {}, F, True)
    assert figs.joules_per_request == {} and figs.tokens_per_request == {}


def test_energy_per_computed_token_leaves_prefix_cache_hits_out() -> None:
    # 900 prompt tokens/s of which 300 computed, 100 generated: 400 tokens computed.
    model = served(share(watts=800), tps=1000.0, prompt_computed_tps=300.0)
    figs = r.per_request(model, fig.gpu_power(model), None, {}, F, active=True)
    assert figs.facility_joules_per_computed_token == pytest.approx(800 * F / 400)
    without = served(share(watts=800), tps=1000.0)
    assert r.per_request(without, fig.gpu_power(without), None, {}, F, True) == r.PerRequest()


def test_embodied_is_each_pods_share_of_its_gpus_over_their_life() -> None:
    table = SETTINGS.embodied
    grams, basis = r.embodied((share(gpus=4),), table)
    assert basis == "table" and grams == pytest.approx(4 * GRAMS_PER_HOUR_PER_H100)
    # Half of 4 GPUs held (a shared GPU's share, or MIG slices) is charged half.
    half, _ = r.embodied((share(gpus=4, share=0.5),), table)
    assert half == pytest.approx(2 * GRAMS_PER_HOUR_PER_H100)
    assert r.embodied((), table) == (None, "none")


def test_a_gpu_missing_from_the_table_uses_the_proxy_or_nothing() -> None:
    odd = share(product="Tesla T4")
    proxy = EmbodiedTable([], server_kg_per_gpu=375, unknown_gpu_kg=150, lifetime_years=5)
    grams, basis = r.embodied((odd,), proxy)
    assert basis == "proxy" and grams == pytest.approx(4 * (150 + 375) * 1000 / (5 * 8766))
    strict = EmbodiedTable([], server_kg_per_gpu=375, unknown_gpu_kg=None, lifetime_years=5)
    assert r.embodied((odd, share()), strict) == (None, "none")


def test_configured_embodied_entries_win_over_the_table() -> None:
    ademe = EmbodiedTable(
        [{"pattern": "H100", "kg": 273}],
        server_kg_per_gpu=712.5,
        unknown_gpu_kg=150,
        lifetime_years=3,
    )
    grams, _ = r.embodied((share(gpus=1),), ademe)
    assert grams == pytest.approx((273 + 712.5) * 1000 / (3 * 8766))  # EcoLogits: 37.5 g/h
    assert grams == pytest.approx(37.5, abs=0.05)


def test_sci_adds_embodied_to_facility_location_co2_per_token_and_request() -> None:
    model = served(share(), tps=1000.0, requests_per_second=4.0)
    co2 = {("facility", "location"): 360.0, ("facility", "market"): 1.0}
    per_token, per_request = r.sci(co2, 36.0, model, active=True)
    assert per_token == pytest.approx((360 + 36) / 3600 / 1000)
    assert per_request == pytest.approx((360 + 36) / 3600 / 4)
    assert r.sci(co2, None, model, True) == (None, None)
    assert r.sci({("facility", "market"): 1.0}, 36.0, model, True) == (None, None)
    assert r.sci(co2, 36.0, model, active=False) == (None, None)


def test_compute_fills_per_request_and_footprint_for_an_active_model() -> None:
    model = served(share(watts=1320, gpus=4), tps=3158.0, requests_per_second=2.5)
    f = figures.compute(model, SETTINGS, ModelHistory())
    facility_w = 1320 * F
    assert f.per_request.joules_per_request[("facility", "amortized")] == pytest.approx(
        facility_w / 2.5
    )
    assert f.footprint.embodied_grams_per_hour == pytest.approx(4 * GRAMS_PER_HOUR_PER_H100)
    operational = facility_w * CAMX / 1000  # g/h at SDSC
    assert f.footprint.sci_grams_per_token == pytest.approx(
        (operational + 4 * GRAMS_PER_HOUR_PER_H100) / 3600 / 3158, rel=1e-9
    )
    assert f.info.embodied_basis == "table"
    idle = figures.compute(served(share(), tps=0.0), SETTINGS)
    assert idle.footprint.embodied_grams_per_hour == pytest.approx(4 * GRAMS_PER_HOUR_PER_H100)
    assert idle.footprint.sci_grams_per_token is None


def test_lifetime_and_server_share_come_from_the_configuration() -> None:
    config = load(overrides={"embodied": {"lifetime_years": 10, "server_kg_per_gpu": 0}})
    table = FigureSettings.from_config(config).embodied
    grams, _ = r.embodied((share(gpus=1),), table)
    assert grams == pytest.approx(164 * 1000 / (10 * 8766))


POSITIVE = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False)


@given(watts=POSITIVE, tps=POSITIVE, rps=POSITIVE, load_factor=POSITIVE)
def test_sci_is_never_below_operational_co2_and_embodied_ignores_load(
    watts: float, tps: float, rps: float, load_factor: float
) -> None:
    model = served(share(watts=watts), tps=tps, requests_per_second=rps)
    busier = served(share(watts=watts), tps=tps * load_factor, requests_per_second=rps)
    f = figures.compute(model, SETTINGS, ModelHistory())
    g = figures.compute(busier, SETTINGS, ModelHistory())
    assert f.footprint.embodied_grams_per_hour == g.footprint.embodied_grams_per_hour
    if f.footprint.sci_grams_per_token is not None:
        assert f.footprint.sci_grams_per_token >= f.co2_grams_per_token[("facility", "location")]
    if f.footprint.sci_grams_per_request is not None:
        operational = f.per_request.co2_grams_per_request[("facility", "location")]
        assert f.footprint.sci_grams_per_request >= operational


def test_the_demo_nodes_are_in_the_embodied_table() -> None:
    assert SETTINGS.embodied.per_gpu(H100) is not None
    assert SETTINGS.node_regions.region_of(SDSC)[0] == "CAMX"
