"""Live grid intensity end to end: the exporter reads a real Prometheus (fed by the simulated
cluster) and the Electricity Maps and WattTime stand-ins, and its per-model CO2 follows the
zones' values: each pod on its own zone, power-weighted; a new value within one refresh; the
annual value after max_age once the provider is gone; at most one request per zone per
refresh, every one authenticated."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.grid import SimulatedGrid
from exporter.demo.simulation import SimCluster
from tests.harness import ExporterProcess, PrometheusServer, one, pick, wait_until
from tests.live import start_prometheus
from tests.simulated import NODE_INTENSITY

pytestmark = pytest.mark.integration

LB = 0.45359237
GLM = {"namespace": "nrp-llm", "model": "zai-org/GLM-4.7-FP8"}  # 1320 W, 3158 tok/s, CAMX
QWEN = {"namespace": "nrp-llm", "model": "Qwen/Qwen3.5-397B-A17B-FP8"}  # CAMX and MROW
CISO, SWPP, MARGINAL = 150.0, 500.0, 1000.0  # g/kWh, g/kWh, lb/MWh
REFRESH_S, MAX_AGE_S, INTERVAL_S = 2.0, 6.0, 1.0


@pytest.fixture(scope="module")
def grid() -> Iterator[SimulatedGrid]:
    simulated = SimulatedGrid(
        location={"US-CAL-CISO": CISO, "US-CENT-SWPP": SWPP},
        marginal={"CAISO_NORTH": MARGINAL},
        zones={"CAMX": "US-CAL-CISO", "MROW": "US-CENT-SWPP"},
        regions={"CAMX": "CAISO_NORTH"},
        period_s=1.0,  # values that apply from this second: max_age can be short
        refresh=f"{REFRESH_S:g}s",
        max_age=f"{MAX_AGE_S:g}s",
        method=None,
        simulated_day=False,
    ).start()
    yield simulated
    simulated.stop()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, endpoints: SimulatedEndpoints, cluster: SimCluster
) -> Iterator[PrometheusServer]:
    """Prometheus only: the live grid does not depend on which query API the source reads."""
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), endpoints, cluster)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def exporter(tmp_path_factory, prometheus: PrometheusServer, grid: SimulatedGrid):
    process = ExporterProcess(
        tmp_path_factory.mktemp("grid"),
        {
            "prometheus": {"url": prometheus.url},
            "exporter": {"interval": f"{INTERVAL_S:g}s"},
            "grid": {"live": grid.live()},
        },
    ).start()
    process.started_at = time.monotonic()
    live = {("CAMX", "location"), ("MROW", "location"), ("CAMX", "marginal")}
    wait_until(
        lambda: live <= live_regions(process.samples()),
        15,
        "the first live value of every configured zone",
    )
    yield process
    process.stop()


def live_regions(samples) -> set[tuple[str, str]]:
    """(region, basis) pairs whose intensity in force comes from a live provider."""
    return {
        (labels["region"], labels["basis"])
        for labels, _ in pick(samples, "llm_carbon_region_grid_intensity_grams_per_kwh")
        if labels["source"] in ("electricitymaps", "watttime")
    }


def per_token(samples, basis: str, **model: str) -> list[float]:
    return [
        v
        for _, v in pick(
            samples, "llm_carbon_co2_grams_per_token", scope="gpu", basis=basis, **model
        )
    ]


def test_co2_per_token_is_power_times_the_zones_value(exporter, cluster: SimCluster) -> None:
    samples = exporter.samples()
    watts = one(samples, "llm_carbon_power_watts", scope="gpu", **GLM)
    tps = sum(v for _, v in pick(samples, "llm_carbon_tokens_per_second", **GLM))
    [location] = per_token(samples, "location", **GLM)
    assert location == pytest.approx(watts * CISO / 3.6e6 / tps, rel=1e-9)
    assert location == pytest.approx(1320 * CISO / 3.6e6 / 3158, rel=0.025)  # the review's GLM
    [marginal] = per_token(samples, "marginal", **GLM)
    assert marginal == pytest.approx(1320 * MARGINAL * LB / 3.6e6 / 3158, rel=0.025)
    region = pick(samples, "llm_carbon_region_grid_intensity_grams_per_kwh", region="CAMX")
    in_force = {lab["basis"]: (lab["source"], v) for lab, v in region}
    assert in_force == {
        "location": ("electricitymaps", CISO),
        "marginal": ("watttime", pytest.approx(MARGINAL * LB)),
    }
    for _, age in pick(samples, "llm_carbon_grid_intensity_age_seconds"):
        assert 0 <= age <= MAX_AGE_S


def test_a_two_zone_model_is_power_weighted_over_its_pods(exporter, cluster: SimCluster) -> None:
    samples = exporter.samples()
    pods = [p for p in cluster.pods if p.model == QWEN["model"]]
    value = {"gpu-a.sdsc.optiputer.net": CISO, "hcc-nrp-b.unl.edu": SWPP}
    grams_per_second = sum(p.power_w * value[p.node] for p in pods) / 3.6e6
    tps = sum(p.prompt_tps + p.generation_tps for p in pods)
    [location] = per_token(samples, "location", **QWEN)
    assert location == pytest.approx(grams_per_second / tps, rel=0.025)
    intensity = one(samples, "llm_carbon_grid_intensity_grams_per_kwh", basis="location", **QWEN)
    assert intensity == pytest.approx(
        grams_per_second * 3.6e6 / sum(p.power_w for p in pods), rel=0.01
    )
    assert per_token(samples, "marginal", **QWEN) == []  # MROW has no marginal value


def test_a_new_value_is_followed_within_one_refresh(exporter, grid: SimulatedGrid) -> None:
    grid.location.values["US-CAL-CISO"] = CISO * 2
    started = time.monotonic()
    wait_until(
        lambda: (
            one(
                exporter.samples(),
                "llm_carbon_region_grid_intensity_grams_per_kwh",
                region="CAMX",
                basis="location",
            )
            == CISO * 2
        ),
        REFRESH_S + 2 * INTERVAL_S + 2,
        "the new zone value in force",
    )
    assert time.monotonic() - started <= REFRESH_S + 2 * INTERVAL_S + 2
    samples = exporter.samples()
    watts = one(samples, "llm_carbon_power_watts", scope="gpu", **GLM)
    tps = sum(v for _, v in pick(samples, "llm_carbon_tokens_per_second", **GLM))
    [location] = per_token(samples, "location", **GLM)
    assert location == pytest.approx(watts * CISO * 2 / 3.6e6 / tps, rel=1e-9)


def test_requests_at_most_one_per_zone_per_refresh_all_authenticated(
    exporter, grid: SimulatedGrid
) -> None:
    elapsed = time.monotonic() - exporter.started_at + 1
    token = grid.token_file.read_text()
    for zone in ("US-CAL-CISO", "US-CENT-SWPP"):
        asked = [r for r in grid.location.data_requests() if r.params["zone"] == zone]
        assert 2 <= len(asked) <= elapsed / REFRESH_S + 1, (zone, len(asked), elapsed)
        assert all(r.headers.get("auth-token") == token for r in asked)
    forecasts = grid.marginal.data_requests()
    assert 2 <= len(forecasts) <= elapsed / REFRESH_S + 1
    issued = set(grid.marginal.tokens)
    assert all(r.headers["authorization"].removeprefix("Bearer ") in issued for r in forecasts)
    logins = [r for r in grid.marginal.requests if r.path == "/login"]
    assert len(logins) == 1 and logins[0].headers["authorization"].startswith("Basic ")
    samples = exporter.samples()
    requests = {
        lab["upstream"]: v
        for lab, v in pick(samples, "llm_carbon_exporter_upstream_requests_total")
    }
    assert requests["watttime"] >= len(forecasts) + len(logins) - 1  # read a moment later


def test_report_fetches_the_live_values_once_before_its_cycle(
    tmp_path, prometheus: PrometheusServer, grid: SimulatedGrid
) -> None:
    config = tmp_path / "report.yaml"
    document = {"prometheus": {"url": prometheus.url}, "grid": {"live": grid.live()}}
    config.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "report", "--format", "json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    glm = next(m for m in json.loads(result.stdout)["models"] if m["model"] == GLM["model"])
    assert glm["grid_intensity_grams_per_kwh"] == {
        "location": grid.location.values["US-CAL-CISO"],
        "marginal": pytest.approx(MARGINAL * LB),
    }
    # Live values in a one-shot report: it fetched them itself, before its only cycle.
    assert "gpu/marginal" in glm["co2_grams_per_token"]


def test_diagnose_asks_the_providers_and_says_whether_their_data_is_current(
    tmp_path, prometheus: PrometheusServer, grid: SimulatedGrid
) -> None:
    config = tmp_path / "diagnose.yaml"
    document = {"prometheus": {"url": prometheus.url}, "grid": {"live": grid.live()}}
    config.write_text(yaml.safe_dump(document))

    def grid_line(path) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "diagnose", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return next(line for line in result.stdout.splitlines() if line[2:].startswith("grid"))

    # Two regions on the location basis, one on the marginal basis.
    assert grid_line(config) == "✓ grid      live grid data current for 3 regions"
    unreachable = [{**entry, "url": "http://127.0.0.1:9"} for entry in grid.live()]
    config.write_text(yaml.safe_dump({**document, "grid": {"live": unreachable}}))
    assert grid_line(config).startswith("! grid      live grid data missing or stale for 3 regions")


def test_without_the_providers_the_annual_value_after_max_age(
    exporter, grid: SimulatedGrid
) -> None:
    grid.location.stop()
    grid.marginal.stop()
    stopped = time.monotonic()
    annual = NODE_INTENSITY["gpu-a.sdsc.optiputer.net"]

    def fallen_back() -> bool:
        samples = exporter.samples()
        assert per_token(samples, "location", **GLM), "a gap in the location series"
        region = pick(samples, "llm_carbon_region_grid_intensity_grams_per_kwh", region="CAMX")
        return {lab["source"] for lab, _ in region} == {"egrid2023rev2"}

    wait_until(fallen_back, MAX_AGE_S + REFRESH_S + 5, "the annual value in force", interval=0.25)
    assert time.monotonic() - stopped >= MAX_AGE_S - REFRESH_S - 1  # not before max_age
    samples = exporter.samples()
    watts = one(samples, "llm_carbon_power_watts", scope="gpu", **GLM)
    tps = sum(v for _, v in pick(samples, "llm_carbon_tokens_per_second", **GLM))
    [location] = per_token(samples, "location", **GLM)
    assert location == pytest.approx(watts * annual / 3.6e6 / tps, rel=1e-9)
    assert per_token(samples, "marginal", **GLM) == []
    assert (
        one(samples, "llm_carbon_grid_intensity_age_seconds", region="CAMX", basis="location")
        > MAX_AGE_S
    )
    for upstream in ("electricitymaps", "watttime"):
        assert one(samples, "llm_carbon_exporter_upstream_up", upstream=upstream) == 0
        assert (
            one(
                samples,
                "llm_carbon_exporter_upstream_errors_total",
                upstream=upstream,
                reason="connect",
            )
            >= 1
        )
    assert one(samples, "llm_carbon_exporter_upstream_up", upstream="prometheus") == 1
    log = exporter.log()
    assert (
        "the annual value is in force" in log and "zone US-CAL-CISO failed (reason=connect)" in log
    )
    assert grid.token_file.read_text() not in log
