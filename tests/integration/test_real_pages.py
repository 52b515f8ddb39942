"""Real /metrics pages (tests/fixtures/pages, sources in SOURCES.md) read by the sidecar: each
page served twice, 30 s apart, with its counters moved forward by known amounts so rates can
be checked, and everything else as published."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import build, default_document, merge
from exporter.demo.simulation import Target, format_labels, format_value
from exporter.engine import Engine
from exporter.model.figures import ModelFigures
from exporter.sources.direct import DirectSource
from exporter.sources.prometheus import PrometheusSource
from tests.harness import PrometheusServer, StaticPages
from tests.simulated import stored

pytestmark = pytest.mark.integration

PAGES = Path(__file__).resolve().parents[1] / "fixtures" / "pages"
START = "2026-11-26 12:00:00"
STEP = 30.0


def page(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


def advance(text: str, steps: Mapping[str, float]) -> str:
    """`text` with the value of every sample of each metric in `steps` increased by its step
    (a sample line is `name{labels} value` or `name value`); every other line as it was."""

    def moved(line: str) -> str:
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{.*\})?\s+(\S+)(.*)$", line)
        if not match or match.group(1) not in steps:
            return line
        value = float(match.group(3)) + steps[match.group(1)]
        return f"{match.group(1)}{match.group(2) or ''} {value!r}{match.group(4)}"

    return "\n".join(moved(line) for line in text.split("\n"))


def replace_sample(text: str, name: str, selector: str, value: str) -> str:
    """`text` with the value of the sample of `name` whose labels contain `selector` set to
    `value` (a real page with one reading changed, for a fault no published capture shows)."""
    pattern = re.compile(rf"^({re.escape(name)}\{{[^}}]*{re.escape(selector)}[^}}]*\}}) \S+$", re.M)
    changed, count = pattern.subn(rf"\g<1> {value}", text)
    assert count == 1, (name, selector, count)
    return changed


def read_twice(
    dcgm: Callable[[int], str],
    server_page: Callable[[int], str],
    pod: dict[str, object],
    **document: object,
) -> Engine:
    """A sidecar for `pod` reading `dcgm(i)` and `server_page(i)` at cycles i = 0, 1, 30 s
    apart; the engine after the second cycle."""
    pages = StaticPages({})
    try:
        base = {
            "source": "direct",
            "direct": {
                "dcgm_urls": [f"{pages.base}/dcgm"],
                "pods": [{**pod, "vllm_urls": [f"{pages.base}/server"]}],
                **document.pop("direct", {}),  # type: ignore[dict-item]
            },
        }
        config = build(merge(merge(default_document(), base), document))
        with freeze_time(START) as frozen:
            engine = Engine(config, DirectSource(config))
            for i in range(2):
                pages.pages = {"/dcgm": dcgm(i), "/server": server_page(i)}
                assert engine.run_cycle(), engine.state.errors_total
                if i == 0:
                    frozen.tick(STEP)
        return engine
    finally:
        pages.close()


def only_model(engine: Engine) -> ModelFigures:
    snapshot = engine.state.snapshot
    assert snapshot is not None and len(snapshot.models) == 1, snapshot
    return snapshot.models[0]


def errors(engine: Engine, reason: str) -> int:
    return sum(n for (_, r), n in engine.state.errors_total.items() if r == reason)


VLLM_V0 = "vllm-v0-qwen3-0.6b.prom"
AICR = "dcgm-k8s-h100-podlabels-aicr.prom"
AICR_POD = {"namespace": "dynamo-workload", "pod": "vllm-agg-0-vllmdecodeworker-s65j5"}


def vllm_v0(i: int) -> str:
    """The vLLM V0 page, serving 100 prompt and 10 generated tokens per second, and finishing
    half a request per second."""
    steps = {
        "vllm:prompt_tokens_total": 100 * STEP * i,
        "vllm:generation_tokens_total": 10 * STEP * i,
        "vllm:request_success_total": 0.5 * STEP * i,
    }
    return advance(page(VLLM_V0), steps)


def test_a_kubernetes_h100_page_gives_the_pod_its_one_gpu() -> None:
    engine = read_twice(lambda i: page(AICR), vllm_v0, AICR_POD)
    f = only_model(engine)
    assert f.model == "Qwen/Qwen3-0.6B"
    # Of the eight H100s only GPU 0 carries the pod's labels (the others none at all).
    gpu0 = re.search(r'^DCGM_FI_DEV_POWER_USAGE\{gpu="0",[^}]*\} (\S+)$', page(AICR), re.M)
    assert gpu0 is not None
    assert f.gpus == 1 and f.power_w["gpu"] == pytest.approx(float(gpu0.group(1)))
    assert f.info_value("power_source") == "power_gauge"  # the page has no energy counter
    assert f.info_value("gpu_type") == "H100 SXM" and f.info_value("attribution") == "exclusive"
    assert f.tokens_per_second == {"prompt": pytest.approx(100), "generation": pytest.approx(10)}
    # vLLM V0 counts finished requests as V1 does, under finished_reason.
    assert f.per_request.requests_per_second == pytest.approx(0.5)
    joules = f.per_request.joules_per_request[("gpu", "amortized")]
    assert joules == pytest.approx(float(gpu0.group(1)) / 0.5)
    assert f.per_request.tokens_per_request == {
        "prompt": pytest.approx(200),
        "generation": pytest.approx(20),
    }
    # An H100's embodied emissions and its server share over five years (164 + 375 kg).
    assert f.footprint.embodied_grams_per_hour == pytest.approx(539_000 / (5 * 8766))


def test_a_blank_power_reading_is_withheld_and_counted() -> None:
    """DCGM's FP64 blank (2^47) in place of GPU 0's power, in the real H100 page."""
    blank = replace_sample(page(AICR), "DCGM_FI_DEV_POWER_USAGE", 'gpu="0"', "140737488355328")
    engine = read_twice(lambda i: blank, vllm_v0, AICR_POD)
    f = only_model(engine)
    assert f.power_w == {} and f.tokens_per_second["prompt"] == pytest.approx(100)
    assert errors(engine, "implausible") == 2  # both cycles
    assert engine.state.up["dcgm"] is True  # the pod's problem, not the upstream's


def test_an_energy_counter_stepping_back_is_a_glitch_not_a_reset() -> None:
    """The T4 page's energy counter going back by 1 kJ: withheld (the gauge stands in),
    where a reset reading would have added the whole counter (1.5e15 W)."""
    t4 = page("dcgm-datadog-t4-fixture.prom")
    uuid = re.search(r'UUID="(GPU-[0-9a-f-]+)"', t4).group(1)  # type: ignore[union-attr]
    energy = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
    pod = {"namespace": "ns", "pod": "p", "gpu_uuids": [uuid]}
    engine = read_twice(lambda i: advance(t4, {energy: -1e6 * i}), vllm_v0, pod)
    f = only_model(engine)
    assert f.info_value("power_source") == "power_gauge"
    assert f.power_w["gpu"] < 100  # a T4's 70 W board, read from the gauge
    assert errors(engine, "implausible") == 1


def test_a_hostname_that_is_a_container_id_loses_to_node_name() -> None:
    """The T4 page's Hostname is a Docker container id; NODE_NAME names the real node, in
    another grid region than the default: the region follows NODE_NAME, and the
    disagreement is counted."""
    t4 = page("dcgm-datadog-t4-fixture.prom")
    uuid = re.search(r'UUID="(GPU-[0-9a-f-]+)"', t4).group(1)  # type: ignore[union-attr]
    pod = {"namespace": "ns", "pod": "p", "gpu_uuids": [uuid]}
    steps = {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 30_000.0 * STEP}  # 30 W
    engine = read_twice(
        lambda i: advance(t4, {k: v * i for k, v in steps.items()}),
        vllm_v0,
        pod,
        direct={"node": "hcc-gpu-7.unl.edu"},
    )
    f = only_model(engine)
    assert f.info_value("nodes") == "hcc-gpu-7.unl.edu" and f.info_value("regions") == "MROW"
    assert f.power_w["gpu"] == pytest.approx(30)
    assert errors(engine, "node_mismatch") == 2


def test_a30_mig_instances_claimed_by_uuid_are_never_exclusive() -> None:
    """Four 1g.6gb instances of one A30 on the page, no pod labels, the pod claiming the GPU
    by its UUID: the instances count as sharing, so the whole GPU's power is an upper bound
    and says so."""
    a30 = page("dcgm-mig-a30-issue317-partial.prom")
    uuid = "GPU-265c9814-6156-355b-e589-ff2064894f16"
    steps = {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 52_000.0 * STEP}  # 52 W
    pod = {"namespace": "ns", "pod": "p", "gpu_uuids": [uuid]}
    engine = read_twice(lambda i: advance(a30, {k: v * i for k, v in steps.items()}), vllm_v0, pod)
    f = only_model(engine)
    assert f.gpus == 1 and f.info_value("attribution") == "shared_gpu"
    assert f.power_w["gpu"] == pytest.approx(52, rel=0.01)
    assert f.info_value("gpu_type") == "A30"


def test_a_mig_instance_on_a_page_without_power_is_said_plainly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An A30 instance with the pod's labels, on a page (lower-case `hostname`) that
    publishes no power for it: not "yet", which would never come."""
    mixed = page("dcgm-mixed-mig-lowercase-hostname-pr736-partial.prom")
    pod = {"namespace": "default", "pod": "triton-server-f7cb5d77-95xcf"}
    engine = read_twice(lambda i: mixed, vllm_v0, pod)
    f = only_model(engine)
    assert f.power_w == {} and f.info_value("power_source") == "missing"
    said = [
        r.getMessage() for r in caplog.records if "has no DCGM_FI_DEV_POWER_USAGE" in r.getMessage()
    ]
    assert len(said) == 1 and "yet" not in said[0]


def test_vllm_v1_engines_are_summed_and_created_gauges_ignored() -> None:
    v1 = page("vllm-v1-engine-label-created-gauges-head40.prom")
    steps = {"vllm:prompt_tokens_total": 50 * STEP, "vllm:generation_tokens_total": 5 * STEP}
    engine = read_twice(
        lambda i: page(AICR),
        lambda i: advance(v1, {k: v * i for k, v in steps.items()}),
        AICR_POD,
    )
    f = only_model(engine)
    assert f.model == "llama-vllm-single"
    assert f.tokens_per_second == {"prompt": pytest.approx(50), "generation": pytest.approx(5)}


@pytest.mark.parametrize(
    ("name", "labels", "requests"),
    [
        ("sglang-docs-production-metrics-model_name.prom", ["model_name"], None),
        ("sglang-datadog-fixture-v0.5.10-tp_rank.prom", ["model_name"], 0.2),
    ],
)
def test_sglang_pages(name: str, labels: list[str], requests: float | None) -> None:
    sglang = page(name)
    steps = {
        "sglang:prompt_tokens_total": 40 * STEP,
        "sglang:generation_tokens_total": 4 * STEP,
        "sglang:num_requests_total": 0.2 * STEP,
    }
    engine = read_twice(
        lambda i: page(AICR),
        lambda i: advance(sglang, {k: v * i for k, v in steps.items()}),
        AICR_POD,
        upstream={
            "metrics": {
                "prompt_tokens": "sglang:prompt_tokens_total",
                "generation_tokens": "sglang:generation_tokens_total",
                "requests": "sglang:num_requests_total",
            },
            "token_labels": {"model": labels},
        },
    )
    f = only_model(engine)
    assert f.tokens_per_second == {"prompt": pytest.approx(40), "generation": pytest.approx(4)}
    # The documentation's page shows no request counter: no per-request figures, not 0.
    if requests is None:
        assert f.per_request.requests_per_second is None
        assert f.per_request.joules_per_request == {}
    else:
        assert f.per_request.requests_per_second == pytest.approx(requests)
    assert engine.source.upstreams == ("sglang", "dcgm")


TGI_STEPS = {
    "tgi_request_input_length_sum": 60 * STEP,
    "tgi_request_generated_tokens_sum": 6 * STEP,
    "tgi_request_success": 0.3 * STEP,
}
TGI_UPSTREAM = {
    "metrics": {
        "prompt_tokens": "tgi_request_input_length_sum",
        "generation_tokens": "tgi_request_generated_tokens_sum",
        "requests": "tgi_request_success",
    },
    "default_model": "acme/served-by-tgi",
}


def tgi(i: int) -> str:
    """The TGI page (no model label on any series) at step i."""
    text = page("tgi-datadog-payload-excerpt-head.prom") + page(
        "tgi-datadog-payload-excerpt-generated-tokens.prom"
    )
    return advance(text, {k: v * i for k, v in TGI_STEPS.items()})


def test_tgi_page_names_its_model_from_the_configuration() -> None:
    engine = read_twice(lambda i: page(AICR), tgi, AICR_POD, upstream=TGI_UPSTREAM)
    f = only_model(engine)
    assert f.model == "acme/served-by-tgi"
    assert f.tokens_per_second == {"prompt": pytest.approx(60), "generation": pytest.approx(6)}
    assert f.per_request.tokens_per_request["prompt"] == pytest.approx(200)


def test_the_readme_page_with_elisions_and_a_blank_reads_as_no_gpu_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dcgm-exporter's README page: `...` lines, a "not supported" value on a field the
    exporter does not read, and none of the fields it does. Only the wanted families are
    parsed, so the page is not refused: it has no GPU series, which is said once."""
    pages = StaticPages(
        {"/dcgm": page("dcgm-readme-blank-int64-partial.prom"), "/server": vllm_v0(0)}
    )
    try:
        document = {
            "source": "direct",
            "direct": {
                "dcgm_urls": [f"{pages.base}/dcgm"],
                "pods": [{**AICR_POD, "vllm_urls": [f"{pages.base}/server"]}],
            },
        }
        config = build(merge(default_document(), document))
        engine = Engine(config, DirectSource(config))
        assert engine.run_cycle()
    finally:
        pages.close()
    assert engine.state.errors_total[("dcgm", "missing_series")] == 1
    assert engine.state.up == {"vllm": True, "dcgm": False}
    said = [r.getMessage() for r in caplog.records if "no GPU series" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]


# ---- the same pages through a real Prometheus


def om_history(scrapes: list[tuple[Target, Callable[[int], str]]], end: float, steps: int) -> str:
    """OpenMetrics history of each target's page (as `page(i)` at step i, STEP seconds
    apart, ending at `end`), stored as Prometheus would store the scrape."""
    lines = []
    for target, page_at in scrapes:
        for i in range(steps):
            t = end - (steps - 1 - i) * STEP
            series = [
                (sample.name, dict(sample.labels), float(sample.value))
                for family in text_string_to_metric_families(page_at(i))
                for sample in family.samples
            ]
            for name, labels, value in stored(target, series, "10.0.0.1:9400"):
                lines.append(f"{name}{{{format_labels(labels)}}} {format_value(value)} {t:.3f}")
    return "\n".join([*lines, "# EOF"]) + "\n"


def dcgm_target(**extra: str) -> Target:
    """dcgm-exporter scraped with honorLabels false: the workload's pod labels become
    exported_*; `extra` are labels a relabeling adds."""
    labels = {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-7xk2p", **extra}
    return Target("dcgm-exporter", "/dcgm", labels, False, "dcgm", "n")


SERVER = Target("vllm", "/vllm", AICR_POD, False, "vllm", AICR_POD["pod"])


def prometheus_figures(
    tmp_path: Path,
    scrapes: list[tuple[Target, Callable[[int], str]]],
    upstream: Mapping[str, object] | None = None,
) -> Engine:
    end = time.time() - 1
    steps = 15  # 7 minutes at STEP: a full 5-minute window
    server = PrometheusServer(
        tmp_path / "prometheus", "127.0.0.1:9", [], backfill=om_history(scrapes, end, steps)
    ).start()
    try:
        document = {"prometheus": {"url": server.url}, "upstream": dict(upstream or {})}
        config = build(merge(default_document(), document))
        source = PrometheusSource(config, clock=lambda: end)
        engine = Engine(config, source, clock=lambda: end)
        assert engine.run_cycle(), engine.state.errors_total
        source.close()
        return engine
    finally:
        server.stop()


def test_real_pages_through_prometheus(tmp_path: Path) -> None:
    """The H100 page with a Kubernetes node label from the scrape's relabeling (so
    `Hostname`, here "gpu-node-1", is not the node) and the vLLM V0 page: the pod's GPU,
    its power and tokens, the node label's grid region, and the disagreement counted."""
    engine = prometheus_figures(
        tmp_path, [(dcgm_target(node="gpu-7.unl.edu"), lambda i: page(AICR)), (SERVER, vllm_v0)]
    )
    f = only_model(engine)
    gpu0 = re.search(r'^DCGM_FI_DEV_POWER_USAGE\{gpu="0",[^}]*\} (\S+)$', page(AICR), re.M)
    assert gpu0 is not None
    assert f.gpus == 1 and f.power_w["gpu"] == pytest.approx(float(gpu0.group(1)))
    assert f.tokens_per_second["prompt"] == pytest.approx(100, rel=0.02)
    assert f.info_value("nodes") == "gpu-7.unl.edu" and f.info_value("regions") == "MROW"
    assert errors(engine, "node_mismatch") == 1


def test_a_blank_power_reading_through_prometheus_is_withheld(tmp_path: Path) -> None:
    """DCGM's FP64 blank in GPU 0's power for part of the window: the window mean is
    implausible, so the power is withheld and counted, never shown."""
    blank = replace_sample(page(AICR), "DCGM_FI_DEV_POWER_USAGE", 'gpu="0"', "140737488355328")
    engine = prometheus_figures(
        tmp_path,
        [(dcgm_target(), lambda i: blank if i % 5 == 0 else page(AICR)), (SERVER, vllm_v0)],
    )
    f = only_model(engine)
    assert f.power_w == {} and f.tokens_per_second["prompt"] == pytest.approx(100, rel=0.02)
    assert errors(engine, "implausible") == 1


def test_a_tgi_page_through_prometheus_names_its_model_from_the_configuration(
    tmp_path: Path,
) -> None:
    """TGI's series name no model: the Prometheus source gives them upstream.default_model,
    as the direct source does; without it the pod is left out and the reason said."""
    server = Target("tgi", "/tgi", AICR_POD, False, "vllm", AICR_POD["pod"])
    scrapes = [(dcgm_target(), lambda i: page(AICR)), (server, tgi)]
    f = only_model(prometheus_figures(tmp_path / "named", scrapes, TGI_UPSTREAM))
    assert f.model == "acme/served-by-tgi" and f.power_w
    assert f.tokens_per_second == {
        "prompt": pytest.approx(60, rel=0.02),
        "generation": pytest.approx(6, rel=0.02),
    }

    unnamed = {**TGI_UPSTREAM, "default_model": ""}
    engine = prometheus_figures(tmp_path / "unnamed", scrapes, unnamed)
    assert engine.state.snapshot is not None and engine.state.snapshot.models == ()
    assert errors(engine, "missing_series") == 1
