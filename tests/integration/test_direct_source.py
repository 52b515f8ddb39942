"""Direct-scrape (sidecar) mode against fixture endpoints over real HTTP: own-pod GPU
filtering, windows and counter resets under freezegun, MIG and shared GPUs, other inference
servers, upstream failures, the CLI and the demo."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import pytest
import requests
from freezegun import freeze_time

from exporter.config import Config, build, default_document, load, merge
from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.nrp import nrp_cluster
from exporter.demo.run import demo_config
from exporter.demo.simulation import EPOCH, targets
from exporter.engine import Engine
from exporter.exposition.collector import ExporterCollector
from exporter.sources.dcgm_units import BASE_UNIT_ENERGY
from exporter.sources.direct import DirectSource
from tests.harness import (
    StaticPages,
    free_port,
    one,
    parse_samples,
    pick,
    start_demo,
    stop_process,
    wait_until,
)
from tests.sidecar import GPU as L40S
from tests.sidecar import sidecar
from tests.simulated import (
    FACILITY,
    NODE_INTENSITY,
    embodied_grams_per_hour,
    shared_gpu_cluster,
)

pytestmark = pytest.mark.integration

GLM = "zai-org/GLM-4.7-FP8"
START = "2026-11-26 12:00:00"


@pytest.fixture
def endpoints() -> Iterator[SimulatedEndpoints]:
    server = SimulatedEndpoints(nrp_cluster()).start()
    yield server
    server.stop()


def sidecar_config(endpoints: SimulatedEndpoints, pod: str, **extra: object) -> dict:
    """A sidecar for one simulated pod: its vLLM page and its node's DCGM page."""
    cluster = endpoints.cluster
    sim = next(p for p in cluster.pods if p.name == pod)
    pages = {t.key: f"http://{endpoints.address}{t.path}" for t in targets(cluster)}
    return merge(
        default_document(),
        {
            "source": "direct",
            "direct": {
                "dcgm_urls": [pages[sim.node]],
                "pods": [{"namespace": sim.namespace, "pod": pod, "vllm_urls": [pages[pod]]}],
                **extra,
            },
        },
    )


def cycles(engine: Engine, frozen, count: int, step: float = 30) -> None:
    for _ in range(count):
        assert engine.run_cycle(), engine.state.errors_total
        frozen.tick(step)


def figures(engine: Engine, model: str):
    return next(f for f in engine.state.snapshot.models if f.model == model)


def test_sidecar_counts_only_its_own_pods_gpus(endpoints) -> None:
    glm_pod = next(p for p in endpoints.cluster.pods if p.model == GLM)
    with freeze_time(START) as frozen:
        engine = Engine(
            build(sidecar_config(endpoints, glm_pod.name)),
            DirectSource(build(sidecar_config(endpoints, glm_pod.name))),
        )
        assert engine.run_cycle()
        assert engine.state.snapshot.models == ()  # one sample: no rate yet, no figures
        frozen.tick(30)
        cycles(engine, frozen, 1)
        f = figures(engine, GLM)
    # Node A also holds Qwen's four GPUs; only GLM's four count.
    assert f.gpus == 4 and f.info_value("power_source") == "energy_counter"
    assert f.power_w["gpu"] == pytest.approx(1320, rel=1e-6)
    assert f.tokens_per_second["prompt"] == pytest.approx(3000, rel=1e-6)
    assert f.joules_per_token[("gpu", "amortized")] == pytest.approx(1320 / 3158, rel=1e-6)
    assert f.gpu_busy == pytest.approx(0.68)
    assert f.info_value("regions") == "CAMX" and f.info_value("attribution") == "exclusive"


def test_sidecar_per_request_figures_and_sci_match_the_known_rates(endpoints) -> None:
    pod = next(p for p in endpoints.cluster.pods if p.model == GLM)
    config = build(sidecar_config(endpoints, pod.name))
    with freeze_time(START) as frozen:
        engine = Engine(config, DirectSource(config))
        cycles(engine, frozen, 3)
        samples = parse_samples(ExporterCollector(engine).exposition(False).decode())
    key = {"namespace": pod.namespace, "model": GLM}
    rps = pod.requests_per_second
    assert one(samples, "llm_carbon_requests_per_second", **key) == pytest.approx(rps, rel=0.01)
    joules = one(
        samples, "llm_carbon_energy_joules_per_request", scope="gpu", accounting="amortized", **key
    )
    assert joules == pytest.approx(pod.power_w / rps, rel=0.015)
    tps = pod.prompt_tps + pod.generation_tps
    embodied = embodied_grams_per_hour(endpoints.cluster.node(pod.node).product, len(pod.gpus))
    assert one(samples, "llm_carbon_embodied_co2_grams_per_hour", **key) == pytest.approx(embodied)
    operational = pod.power_w * FACILITY * NODE_INTENSITY[pod.node] / 3.6e6 / tps
    assert one(samples, "llm_carbon_sci_grams_per_token", **key) == pytest.approx(
        operational + embodied / 3600 / tps, rel=0.03
    )
    generated = one(samples, "llm_carbon_tokens_per_request", phase="generation", **key)
    assert generated == pytest.approx(pod.generation_tps / rps, rel=0.015)
    wh = (
        one(
            samples,
            "llm_carbon_energy_joules_per_request",
            scope="facility",
            accounting="amortized",
            **key,
        )
        / 3600
    )
    assert wh == pytest.approx(pod.power_w * FACILITY / rps / 3600, rel=0.015)


def test_sidecar_keeps_only_the_computed_share_of_the_prompt_tokens_by_source(endpoints) -> None:
    """vLLM counts prompt tokens by source (computed, prefix-cache hit, KV transfer): only the
    computed ones enter a window, and J per computed token divides by them."""
    pod = next(p for p in endpoints.cluster.pods if p.model == GLM)
    config = build(sidecar_config(endpoints, pod.name))
    with freeze_time(START) as frozen:
        source = DirectSource(config)
        engine = Engine(config, source)
        cycles(engine, frozen, 3)
        samples = parse_samples(ExporterCollector(engine).exposition(False).decode())
    kept = [
        (name, dict(labels).get("source"))
        for _, name, labels in source.store.windows
        if name.startswith("vllm:prompt_tokens_by_source")
    ]
    assert kept and {value for _, value in kept} == {"local_compute"}
    computed = one(
        samples,
        "llm_carbon_energy_joules_per_computed_token",
        namespace=pod.namespace,
        model=GLM,
    )
    tokens = pod.prompt_computed_tps + pod.generation_tps
    assert computed == pytest.approx(pod.power_w * FACILITY / tokens, rel=0.015)


T = TypeVar("T")


def read_sidecar(
    server: StaticPages,
    config: Config,
    pages_at: Callable[[int], dict[str, str]],
    reads: int,
    collect: Callable[[Engine], T],
) -> list[T]:
    """A sidecar reading `pages_at(seconds)` from `server` every 30 s under freezegun, for
    `reads` reads; what `collect` takes from the engine after each. Closes the server."""
    out = []
    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            for read in range(reads):
                server.pages.update(pages_at(30 * read))
                assert engine.run_cycle()
                out.append(collect(engine))
                frozen.tick(30)
    finally:
        server.close()
    return out


def test_sidecar_without_a_request_counter_has_no_per_request_series() -> None:
    page = (
        "# TYPE vllm:prompt_tokens_total counter\n"
        'vllm:prompt_tokens_total{{model_name="m"}} {prompt}\n'
        "# TYPE vllm:generation_tokens_total counter\n"
        'vllm:generation_tokens_total{{model_name="m"}} {generation}\n'
    )
    dcgm = "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
    dcgm += f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{L40S}}} "
    server = StaticPages({})
    *_, samples = read_sidecar(
        server,
        sidecar(server, "/vllm"),
        lambda seconds: {
            "/vllm": page.format(prompt=900 * seconds, generation=100 * seconds),
            "/dcgm": f"{dcgm}{10**9 + 300_000 * seconds}\n",
        },
        4,
        lambda engine: parse_samples(ExporterCollector(engine).exposition(False).decode()),
    )
    assert one(
        samples, "llm_carbon_energy_joules_per_token", scope="gpu", accounting="amortized"
    ) == pytest.approx(0.3)
    for name in (
        "llm_carbon_requests_per_second",
        "llm_carbon_energy_joules_per_request",
        "llm_carbon_tokens_per_request",
        "llm_carbon_sci_grams_per_request",
        "llm_carbon_energy_joules_per_computed_token",
    ):
        assert pick(samples, name) == [], name
    assert one(samples, "llm_carbon_sci_grams_per_token") > 0  # per token it stands


def test_restart_and_driver_reload_reset_counters_without_harm(endpoints) -> None:
    cluster = endpoints.cluster
    glm_pod = next(p for p in cluster.pods if p.model == GLM)
    config = build(sidecar_config(endpoints, glm_pod.name, window="60s"))
    with freeze_time(START) as frozen:
        engine = Engine(config, DirectSource(config))
        cycles(engine, frozen, 3)
        before = engine.state.snapshot.energy_joules_total[("nrp-llm", GLM)]["gpu"]
        # vLLM restarts 10 s before the next cycle: its counters start again from 0, and
        # tokens served between the last sample and the restart are lost to every observer.
        now = frozen.time_to_freeze.timestamp()
        restarted = dataclasses.replace(glm_pod, started_at=now - 20)
        reloaded = dataclasses.replace(cluster.node(glm_pod.node), driver_loaded_at=now - 20)
        endpoints.set_cluster(
            dataclasses.replace(
                cluster,
                pods=tuple(restarted if p.name == glm_pod.name else p for p in cluster.pods),
                nodes=tuple(reloaded if n.hostname == glm_pod.node else n for n in cluster.nodes),
            )
        )
        frozen.tick(0)
        assert engine.run_cycle()
        f = figures(engine, GLM)
        # Window [now-60, now]: 30 s before the restart were counted (as 3000 tok/s), then
        # the reset, then 20 s counted again: (3000 x 30 + 3000 x 20) / 60.
        assert f.tokens_per_second["prompt"] == pytest.approx(3000 * 50 / 60, rel=1e-6)
        assert f.power_w["gpu"] == pytest.approx(1320 * 50 / 60, rel=1e-4)
        assert f.joules_per_token[("gpu", "amortized")] == pytest.approx(1320 / 3158, rel=1e-4)
        frozen.tick(30)
        cycles(engine, frozen, 3)
        f = figures(engine, GLM)
        assert f.tokens_per_second["prompt"] == pytest.approx(3000, rel=1e-6)
    # The exporter's own counter kept rising through the reset: 4 more cycles of about
    # 30 s at 1320 W (the first one lower: the window straddles the reset).
    total = engine.state.snapshot.energy_joules_total[("nrp-llm", GLM)]["gpu"]
    assert before > 0 and total - before == pytest.approx(1320 * 30 * 4, rel=0.1)


def _read(cluster, **metrics: str) -> Engine:
    """Two cycles over `cluster`'s pages, with `metrics` as upstream.metrics names."""
    endpoints = SimulatedEndpoints(cluster).start()
    try:
        document = demo_config(endpoints.cluster, endpoints.address, "127.0.0.1:0")
        config = build(merge(document, {"upstream": {"metrics": metrics}}))
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            cycles(engine, frozen, 2)
    finally:
        endpoints.stop()
    return engine


def test_time_sliced_gpus_are_counted_once_and_flagged() -> None:
    engine = _read(shared_gpu_cluster())
    a, c = figures(engine, "m/a"), figures(engine, "m/c")
    # GPU 0 is shared by pods a and b (time-sliced copies): each is charged the whole GPU
    # once (an upper bound: DCGM does not split it) and says so.
    assert a.gpus == 1 and a.power_w["gpu"] == pytest.approx(300)
    assert a.info_value("attribution") == "shared_gpu"
    assert c.gpus == 1 and c.power_w["gpu"] == pytest.approx(150)
    assert c.info_value("attribution") == "exclusive"


@pytest.mark.parametrize("on_gpu_row", [False, True], ids=["power-per-instance", "power-on-gpu"])
def test_mig_instances_are_charged_their_share_of_the_gpu(on_gpu_row: bool) -> None:
    """Three 1g.10gb instances per A100 (7 slices): on GPU 0, a holds two and b one; on
    GPU 1, c holds all three. Wherever DCGM publishes the power (on every instance row, or
    only on the GPU's own row, without pod labels), each pod draws its slices' share."""
    engine = _read(shared_gpu_cluster(3, power_on_gpu_row=on_gpu_row))
    a, b, c = (figures(engine, m) for m in ("m/a", "m/b", "m/c"))
    assert a.power_w["gpu"] == pytest.approx(300 * 2 / 7)
    assert b.power_w["gpu"] == pytest.approx(300 * 1 / 7)
    assert c.power_w["gpu"] == pytest.approx(150 * 3 / 7)
    for f in (a, b, c):
        assert f.gpus == 1 and f.info_value("attribution") == "mig_share"
        assert f.info_value("power_source") == "energy_counter"


def test_a_base_unit_energy_counter_in_joules_reads_the_same_watts() -> None:
    """dcgm-exporter 4.9 (DCGM 4.7) exports energy in joules under a name that says so:
    configured, it reads the same watts as the legacy millijoule counter."""
    cluster = shared_gpu_cluster()
    joules = dataclasses.replace(
        cluster, nodes=tuple(dataclasses.replace(n, base_units=True) for n in cluster.nodes)
    )
    engine = _read(joules, gpu_energy=BASE_UNIT_ENERGY)
    c = figures(engine, "m/c")
    assert c.power_w["gpu"] == pytest.approx(150)
    assert c.info_value("power_source") == "energy_counter"
    # The legacy name on a base-unit page finds no counter and falls back to the gauge.
    legacy = figures(_read(joules), "m/c")
    assert legacy.info_value("power_source") == "power_gauge"


@pytest.mark.parametrize("mig", [0, 3])
def test_replicas_of_one_model_on_one_gpu_count_it_once(mig: int) -> None:
    a = figures(_read(shared_gpu_cluster(mig, b_serves="m/a")), "m/a")
    # Pods a and b both report GPU 0's whole 300 W (time-sliced), or hold 2 + 1 of its 7
    # slices (MIG): the model draws it once, and counts one GPU.
    assert a.gpus == 1
    assert a.power_w["gpu"] == pytest.approx(300 if not mig else 300 * 3 / 7)
    assert a.tokens_per_second["prompt"] == pytest.approx(150)
    assert a.info_value("attribution") == ("exclusive" if not mig else "mig_share")


def dcgm_page(watts_mj: float) -> str:
    return (
        f"# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
        f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{L40S}}} {watts_mj:.0f}\n"
    )


@pytest.mark.parametrize(
    ("server", "overrides", "page"),
    [
        (
            "sglang",
            {
                "upstream": {
                    "metrics": {
                        "prompt_tokens": "sglang:prompt_tokens_total",
                        "generation_tokens": "sglang:generation_tokens_total",
                    }
                }
            },
            lambda s: (
                "# TYPE sglang:prompt_tokens_total counter\n"
                f'sglang:prompt_tokens_total{{model_name="qwen"}} {900 * s}\n'
                "# TYPE sglang:generation_tokens_total counter\n"
                f'sglang:generation_tokens_total{{model_name="qwen"}} {100 * s}\n'
            ),
        ),
        (
            "tgi",
            {
                "upstream": {
                    "metrics": {
                        "prompt_tokens": "tgi_request_input_length_sum",
                        "generation_tokens": "tgi_request_generated_tokens_sum",
                    },
                    "default_model": "qwen",
                }
            },
            lambda s: (
                "# TYPE tgi_request_input_length histogram\n"
                f"tgi_request_input_length_sum {900 * s}\n"
                f"tgi_request_input_length_count {s}\n"
                "# TYPE tgi_request_generated_tokens histogram\n"
                f"tgi_request_generated_tokens_sum {100 * s}\n"
            ),
        ),
    ],
)
def test_other_inference_servers_through_name_mappings(server, overrides, page) -> None:
    pages = StaticPages({})
    base = f"http://127.0.0.1:{pages.server_address[1]}"
    document = merge(
        default_document(),
        {
            "source": "direct",
            "direct": {
                "dcgm_urls": [f"{base}/dcgm"],
                "pods": [{"namespace": "ns", "pod": "p", "vllm_urls": [f"{base}/server"]}],
            },
            **overrides,
        },
    )
    config = build(document)
    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            for step in range(3):
                seconds = step * 30
                pages.pages.update(
                    {
                        "/server": page(1000 + seconds),
                        "/dcgm": dcgm_page(250_000 * (1000 + seconds)),
                    }
                )
                assert engine.run_cycle(), engine.state.errors_total
                frozen.tick(30)
            f = figures(engine, "qwen")
    finally:
        pages.shutdown()
    assert f.tokens_per_second == {"prompt": pytest.approx(900), "generation": pytest.approx(100)}
    assert f.power_w["gpu"] == pytest.approx(250) and f.info_value("gpu_type") == "L40S"
    assert f.joules_per_token[("gpu", "amortized")] == pytest.approx(0.25)


@pytest.mark.parametrize("b_serves", ["m/a", "m/b"])
def test_a_gpu_configured_for_two_pods_is_counted_once_and_flagged(b_serves: str) -> None:
    # dcgm-exporter without pod mapping: the GPU is found through direct.pods[].gpu_uuids,
    # and both pods list it (time-slicing). Replicas of one model draw it once; pods of two
    # models are each charged it in full, and say so.
    pages = StaticPages({"/dcgm": ""})
    page = (
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-9",modelName="NVIDIA L40S",'
        'Hostname="n.ucsd.edu"} MJ\n'
    )
    tokens = {
        "/a": 'vllm:prompt_tokens_total{{model_name="m/a"}} {n}\n'
        'vllm:generation_tokens_total{{model_name="m/a"}} {n}\n',
        "/b": f'vllm:prompt_tokens_total{{{{model_name="{b_serves}"}}}} {{n}}\n'
        f'vllm:generation_tokens_total{{{{model_name="{b_serves}"}}}} {{n}}\n',
    }
    pods = [
        {
            "namespace": "ns",
            "pod": name,
            "vllm_urls": [f"{pages.base}/{name}"],
            "gpu_uuids": ["GPU-9"],
        }
        for name in ("a", "b")
    ]
    config = build(
        merge(
            default_document(),
            {"source": "direct", "direct": {"dcgm_urls": [f"{pages.base}/dcgm"], "pods": pods}},
        )
    )
    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            for step in range(3):
                seconds = 1000 + step * 30
                pages.pages["/dcgm"] = page.replace("MJ", str(300_000 * seconds))
                for path, text in tokens.items():
                    pages.pages[path] = text.format(n=50 * seconds)
                assert engine.run_cycle(), engine.state.errors_total
                frozen.tick(30)
            models = {f.model: f for f in engine.state.snapshot.models}
    finally:
        pages.close()
    a = models["m/a"]
    if b_serves == "m/a":
        assert a.gpus == 1 and a.power_w["gpu"] == pytest.approx(300)
        assert a.info_value("attribution") == "exclusive"
    else:
        for f in (a, models["m/b"]):
            assert f.gpus == 1 and f.power_w["gpu"] == pytest.approx(300)
            assert f.info_value("attribution") == "shared_gpu"


def test_dcgm_updating_less_often_than_the_sidecar_reads_never_reads_as_zero_power() -> None:
    # The sidecar reads every 15 s; dcgm-exporter refreshes its fields every 30 s (its
    # default), so every other read repeats the last energy value. 300 W on one GPU.
    pages = StaticPages({})
    config = sidecar(pages, "/vllm", exporter={"interval": 15})
    sources, watts = [], []
    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            for read in range(12):
                refreshed = (read * 15 + 10) // 30 * 30  # when DCGM last refreshed
                energy_mj = 10**9 + 300_000 * refreshed
                pages.pages["/dcgm"] = (
                    f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{L40S}}} {energy_mj}\n"
                    f"DCGM_FI_DEV_POWER_USAGE{{{L40S}}} 300.0\n"
                )
                pages.pages["/vllm"] = (
                    f'vllm:prompt_tokens_total{{model_name="m"}} {900 * read * 15}\n'
                    f'vllm:generation_tokens_total{{model_name="m"}} {100 * read * 15}\n'
                )
                assert engine.run_cycle(), engine.state.errors_total
                models = engine.state.snapshot.models
                if models and models[0].power_w:
                    sources.append(models[0].info_value("power_source"))
                    watts.append(models[0].power_w["gpu"])
                frozen.tick(15)
    finally:
        pages.close()
    # Until the counter has shown two refreshes the gauge stands in; never 0 W, never half.
    assert watts == pytest.approx([300.0] * len(watts)) and len(watts) == 11
    assert sources[:3] == ["power_gauge"] * 3 and set(sources[3:]) == {"energy_counter"}


def test_a_wall_clock_step_back_does_not_freeze_the_windows() -> None:
    # An NTP step sets the wall clock back 10 minutes while the model stops serving. The
    # windows run on a steady clock, so the rates follow: the model goes inactive within a
    # window, instead of reading 1000 tok/s for the next 10 minutes.
    pages = StaticPages({})
    config = sidecar(pages, "/vllm", exporter={"interval": 15})
    wall, steady = [1.8e9], [0.0]
    source = DirectSource(config, clock=lambda: wall[0], window_clock=lambda: steady[0])
    engine = Engine(config, source, clock=lambda: wall[0])
    tokens = 0.0
    try:
        for read in range(40):
            if read == 20:
                wall[0] -= 600
            tokens += 1000 * 15 if read < 20 else 0
            pages.pages["/dcgm"] = f"DCGM_FI_DEV_POWER_USAGE{{{L40S}}} 300.0\n"
            pages.pages["/vllm"] = (
                f'vllm:prompt_tokens_total{{model_name="m"}} {tokens * 0.9}\n'
                f'vllm:generation_tokens_total{{model_name="m"}} {tokens * 0.1}\n'
            )
            assert engine.run_cycle(), engine.state.errors_total
            if read == 19:
                assert engine.state.snapshot.models[0].active
            wall[0] += 15
            steady[0] += 15
    finally:
        pages.close()
    assert not engine.state.snapshot.models[0].active


def test_upstream_failures_are_reported_per_upstream(endpoints) -> None:
    glm_pod = next(p for p in endpoints.cluster.pods if p.model == GLM)
    document = sidecar_config(endpoints, glm_pod.name)
    document["direct"]["dcgm_urls"] = [f"http://127.0.0.1:{free_port()}/metrics"]
    config = build(document)
    engine = Engine(config, DirectSource(config))
    assert not engine.run_cycle()
    assert engine.state.errors_total == {("dcgm", "connect"): 1}
    assert engine.state.up == {"dcgm": False}


def test_sidecar_cli_reads_pod_identity_from_the_downward_api(endpoints, tmp_path) -> None:
    glm_pod = next(p for p in endpoints.cluster.pods if p.model == GLM)
    pages = {t.key: f"http://{endpoints.address}{t.path}" for t in targets(endpoints.cluster)}
    port = free_port()
    env = {**os.environ, "POD_NAME": glm_pod.name, "POD_NAMESPACE": glm_pod.namespace}
    log = (tmp_path / "sidecar.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "serve",
            "--vllm-url",
            pages[glm_pod.name],
            "--dcgm-url",
            pages[glm_pod.node],
            "--listen",
            f"127.0.0.1:{port}",
            "--interval",
            "1s",
        ],
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    try:

        def samples():
            return parse_samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)

        wait_until(
            lambda: pick(samples(), "llm_carbon_energy_joules_per_token"), 30, "sidecar figures"
        )
        got = samples()
        assert one(got, "llm_carbon_gpus", model=GLM, namespace="nrp-llm") == 4
        assert one(
            got,
            "llm_carbon_energy_joules_per_token",
            model=GLM,
            scope="gpu",
            accounting="amortized",
        ) == pytest.approx(1320 / 3158, rel=0.02)
        assert one(got, "llm_carbon_exporter_upstream_up", upstream="dcgm") == 1
        assert len(pick(got, "llm_carbon_model_info")) == 1
    finally:
        stop_process(process)


def test_demo_shows_figures_within_a_minute(tmp_path) -> None:
    port = free_port()
    out = tmp_path / "demo.out"
    process = start_demo(port, out)
    try:
        text = out.read_text()
        assert f"http://127.0.0.1:{port}/" in text and "zai-org/GLM-4.7-FP8" in text
        got = parse_samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        active = {lab["model"] for lab, value in pick(got, "llm_carbon_active") if value == 1}
        with_jpt = {lab["model"] for lab, _ in pick(got, "llm_carbon_energy_joules_per_token")}
        assert len(active) == 5 and with_jpt == active
        assert len(pick(got, "llm_carbon_model_info")) == 6
        # A live basis from the built-in stand-ins, labelled simulated.
        assert "SIMULATED Electricity Maps" in text and "not real data" in text
        region = pick(got, "llm_carbon_region_grid_intensity_grams_per_kwh", region="CAMX")
        assert {(lab["basis"], lab["source"]) for lab, _ in region} == {
            ("location", "electricitymaps"),
            ("marginal", "watttime"),
        }
        assert pick(got, "llm_carbon_grid_intensity_estimated", method="SIMULATED")
        glm = {"model": GLM, "scope": "gpu"}
        bases = {lab["basis"] for lab, _ in pick(got, "llm_carbon_co2_grams_per_token", **glm)}
        assert bases == {"location", "marginal"}
        # The diagnose command the demo suggests works on its pages as printed.
        (line,) = [x for x in text.splitlines() if " diagnose --vllm-url " in x]
        argv = shlex.split(line.split("llm-carbon-exporter", 1)[1])
        checked = subprocess.run(
            [sys.executable, "-m", "exporter", *argv], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "✗" not in checked.stdout and "✓ model" in checked.stdout
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        stop_process(process)


def test_epoch_is_in_the_past() -> None:
    # Simulated counters count from EPOCH; pages for earlier times would be negative.
    assert load().exporter.interval + 1.7e9 > EPOCH


def test_a_one_sided_token_page_leaves_the_model_out_and_says_so() -> None:
    pages = StaticPages({})
    base = f"http://127.0.0.1:{pages.server_address[1]}"
    config = build(
        merge(
            default_document(),
            {
                "source": "direct",
                "direct": {
                    "dcgm_urls": [f"{base}/dcgm"],
                    "pods": [{"namespace": "ns", "pod": "p", "vllm_urls": [f"{base}/vllm"]}],
                },
            },
        )
    )
    try:
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            for step in range(3):
                seconds = 1000 + step * 30
                pages.pages.update(
                    {
                        "/vllm": (
                            "# TYPE vllm:prompt_tokens_total counter\n"
                            f'vllm:prompt_tokens_total{{model_name="m"}} {900 * seconds}\n'
                        ),
                        "/dcgm": dcgm_page(250_000 * seconds),
                    }
                )
                assert engine.run_cycle()
                frozen.tick(30)
    finally:
        pages.shutdown()
        pages.server_close()
    # No generation series: not "0 generation tokens", but no figures, and a counted problem.
    assert engine.state.snapshot.models == ()
    assert engine.state.errors_total[("vllm", "missing_series")] >= 1


def test_a_new_token_series_and_a_repeated_line_leave_the_rates_right() -> None:
    # vLLM V1 with a second engine that starts counting at the third read (one sample then:
    # no rate of its own yet), and a page that prints its generation line twice.
    def pages(seconds: int) -> dict[str, str]:
        page = f'vllm:prompt_tokens_total{{model_name="m",engine="0"}} {900 * seconds}\n'
        if seconds >= 60:
            later = seconds - 60
            page += f'vllm:prompt_tokens_total{{model_name="m",engine="1"}} {600 * later}\n'
        page += f'vllm:generation_tokens_total{{model_name="m"}} {100 * seconds}\n' * 2
        return {"/vllm": page, "/dcgm": dcgm_page(10**9 + 300_000 * seconds)}

    def rates(engine: Engine) -> Mapping[str, float] | None:
        models = engine.state.snapshot.models
        return models[0].tokens_per_second if models else None

    server = StaticPages({})
    rates_read = read_sidecar(server, sidecar(server, "/vllm"), pages, 5, rates)
    assert rates_read[0] is None  # one sample of everything: no rate yet
    # The new engine's first read leaves engine 0's rate standing; from its second, both.
    prompt = [r["prompt"] for r in rates_read[1:]]  # type: ignore[index]
    assert prompt == pytest.approx([900, 900, 1500, 1500])
    generation = [r["generation"] for r in rates_read[1:]]  # type: ignore[index]
    assert generation == pytest.approx([100] * 4)


def one_dcgm_exporter_under_two_urls(
    server: StaticPages, broken_at: int | None = None
) -> tuple[Config, Callable[[int], dict[str, str]]]:
    """A sidecar listing one dcgm-exporter under two URLs (by name and by node IP), pod ns/p
    on its one 300 W GPU; the first URL answers HTTP 500 at `broken_at` seconds."""

    def pages(seconds: int) -> dict[str, str]:
        vllm = (
            f'vllm:prompt_tokens_total{{model_name="m"}} {900 * seconds}\n'
            f'vllm:generation_tokens_total{{model_name="m"}} {100 * seconds}\n'
        )
        dcgm = dcgm_page(10**9 + 300_000 * seconds)
        first: Any = (500, "internal error") if seconds == broken_at else dcgm
        return {"/vllm": vllm, "/dcgm": first, "/dcgm-by-node-ip": dcgm}

    twice = [f"{server.base}/dcgm", f"{server.base}/dcgm-by-node-ip"]
    pod = {"namespace": "ns", "pod": "p", "vllm_urls": [f"{server.base}/vllm"]}
    return sidecar(server, "/vllm", direct={"dcgm_urls": twice, "pods": [pod]}), pages


def test_one_dcgm_exporter_under_two_urls_counts_its_gpus_once() -> None:
    server = StaticPages({})
    config, pages = one_dcgm_exporter_under_two_urls(server)
    *_, (models, errors) = read_sidecar(
        server, config, pages, 3, lambda e: (e.state.snapshot.models, dict(e.state.errors_total))
    )
    (model,) = models
    assert model.gpus == 1 and model.power_w["gpu"] == pytest.approx(300)
    assert model.info_value("attribution") == "exclusive"
    assert errors[("dcgm", "implausible")] >= 1


def test_one_of_two_urls_of_a_dcgm_exporter_failing_keeps_the_power_and_says_so() -> None:
    server = StaticPages({})
    config, pages = one_dcgm_exporter_under_two_urls(server, broken_at=90)
    reads = read_sidecar(
        server,
        config,
        pages,
        5,
        lambda e: (
            e.state.snapshot.models[0].power_w if e.state.snapshot.models else {},
            [p.message for p in e.state.problems],
        ),
    )
    power, said = reads[3]
    assert power["gpu"] == pytest.approx(300)
    (failure,) = [message for message in said if "HTTP 500" in message]
    assert failure.endswith("pods ns/p read from another page, their power kept"), failure
    assert "withheld" not in failure
    power, said = reads[4]
    assert power["gpu"] == pytest.approx(300) and not [m for m in said if "HTTP 500" in m]
