"""`diagnose`'s checks, on facts built by hand: each situation an operator meets gives the
line that names it, a failed check always carries a fix and a link into the troubleshooting
guide, and the exit status follows the failed checks."""

from __future__ import annotations

import re
import time
import typing
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from exporter.config import Config, build, default_document, load, merge
from exporter.diagnosis import probe
from exporter.diagnosis.checks import FAIL, OK, WARN, Check
from exporter.diagnosis.facts import Facts, GpuGroup, Inventory, LiveGrid, TokenGroup
from exporter.diagnosis.inventory import from_pages, from_prometheus
from exporter.diagnosis.verdict import Diagnosis, diagnose
from exporter.engine import Engine
from exporter.exposition import checklist
from exporter.model.join import join
from exporter.model.observations import (
    ENERGY_COUNTER,
    POWER_GAUGE,
    Observation,
    PodGpus,
    PodTokens,
)
from exporter.model.problems import (
    CONNECT,
    HTTP_STATUS,
    IMPLAUSIBLE,
    MALFORMED,
    MISSING_SERIES,
    NODE_MISMATCH,
    TIMEOUT,
    TOO_LARGE,
    Problem,
)
from exporter.sources.prometheus_api import Sample
from tests.scripted import Script

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
NODE = "gpu-a.sdsc.optiputer.net"  # CAMX by the NRP's patterns
H100 = "NVIDIA H100 80GB HBM3"
GLM = "zai-org/GLM-4.7-FP8"


def gpus(pod: str, node: str = NODE, label: str = "exported_pod", n: int = 4) -> GpuGroup:
    return GpuGroup(node, "llm", pod, label, n, frozenset({ENERGY_COUNTER}))


def tokens(pod: str, model: str = GLM, metric: str = "vllm:prompt_tokens_total") -> TokenGroup:
    return TokenGroup(metric, "llm", pod, model, 1)


def facts(
    rows: list[tuple[str, str, str]] = (),  # (pod, model, node): GPUs and tokens of a pod
    config: Config | None = None,
    inventory: Inventory | None = None,
    without_gpus: tuple[str, ...] = (),  # pods serving tokens without GPU rows
    uncounted: tuple[str, ...] = (),  # pods without a finished-request counter
    problems: tuple[Problem, ...] = (),
    **fields: object,
) -> Facts:
    """Facts as a cycle would leave them for `rows`, with the inventory those rows imply
    unless one is given."""
    config = config or load()
    now = time.time()
    gpu_rows = tuple(
        PodGpus("llm", pod, node, H100, 4, 1320.0, ENERGY_COUNTER)
        for pod, _, node in rows
        if pod not in without_gpus
    )
    token_rows = tuple(
        PodTokens("llm", pod, model, 3000.0, 158.0, requests_per_second=0.1)
        for pod, model, _ in rows
        if pod not in uncounted
    ) + tuple(
        PodTokens("llm", pod, model, 3000.0, 158.0) for pod, model, _ in rows if pod in uncounted
    )
    observation = Observation(now, gpu_rows, token_rows, problems=problems)
    engine = Engine(config, Script())
    if inventory is None:
        inventory = Inventory(
            gpus=tuple(gpus(p, n) for p, _, n in rows if p not in without_gpus),
            tokens=tuple(tokens(p, m) for p, m, _ in rows),
        )
    return Facts(
        config=config,
        settings=engine.settings,
        where="http://prometheus:9090",
        api="Prometheus 2.53.0",
        problems=problems,
        served=tuple(join(observation)),
        snapshot=engine.compute(observation),
        inventory=inventory,
        **fields,  # type: ignore[arg-type]
    )


def sidecar(pod: str = "glm", **settings: object) -> Config:
    """A sidecar's configuration (direct mode) for pod llm/`pod` on NODE."""
    served = {"pod": pod, "namespace": "llm", "vllm_urls": ["http://127.0.0.1:8000/metrics"]}
    return load(
        overrides={
            "source": "direct",
            "direct.dcgm_urls": ["http://10.0.0.7:9400/metrics"],
            "direct.pods": [{**served, **settings}],
        }
    )


def find(diagnosis: Diagnosis, name: str, status: str | None = None) -> list[Check]:
    return [
        c for c in diagnosis.checks if c.name == name and (status is None or c.status == status)
    ]


def anchors() -> set[str]:
    headings = re.findall(r"^#+ (.+)$", GUIDE.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def is_config_key(key: str) -> bool:
    """Whether a dotted key (`direct.pods[].gpu_uuids`) is one the configuration has."""
    kind: object = Config
    for part in key.replace("[]", "").split("."):
        if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
            return False
        fields = typing.get_type_hints(kind)
        if part not in fields:
            return False
        kind = fields[part]
        while typing.get_origin(kind) is not None:  # list[X], X | None: X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return True


def config_keys(text: str) -> list[str]:
    sections = "|".join(Config.__struct_fields__)
    return re.findall(rf"\b(?:{sections})\.[\w.\[\]]*\w", text)


def assert_every_failure_says_what_to_do(diagnosis: Diagnosis) -> None:
    """Every failure has a fix, in one sentence, naming only configuration keys that exist,
    and a link to a section of the guide that exists."""
    known = anchors()
    for check in diagnosis.checks:
        if check.status == FAIL:
            assert check.fix and check.doc, check
        if check.doc:
            assert check.doc in known, f"{check.doc}: no such section in the guide"
        sentences = re.split(r"(?<!e\.g)\. ", check.fix)
        assert len(sentences) == 1 and not check.fix.endswith("."), f"not one sentence: {check}"
        unknown = [key for key in config_keys(check.fix) if not is_config_key(key)]
        assert not unknown, f"{check.name}: the fix names keys that do not exist: {unknown}"


# ---- the whole checklist


def test_a_healthy_cluster_names_every_model_and_exits_0() -> None:
    found = diagnose(facts([("glm", GLM, NODE), ("kimi", "moonshotai/Kimi-K2.5", NODE)]))
    assert found.exit_status == 0 and not found.blocked
    lines = [c.summary for c in find(found, "model", OK)]
    assert len(lines) == 2 and any(GLM in line for line in lines)
    assert "1320 W (energy counter)" in lines[-1] and "CAMX" in lines[-1]
    assert find(found, "upstream", OK)[0].summary.endswith("Prometheus 2.53.0")
    assert "every served model (2)" in found.conclusion
    assert_every_failure_says_what_to_do(found)
    text = checklist.text(found)  # the guide is named where a line points into it, only there
    assert (checklist.GUIDE_WHERE in text) == ("see: " in text)
    assert checklist.GUIDE_WHERE not in checklist.text(replace(found, checks=found.checks[:1]))


def test_a_shard_says_which_namespaces_it_reads() -> None:
    sharded = build(merge(default_document(), {"prometheus": {"namespaces": "team-a|team-b"}}))
    found = diagnose(facts([("glm", GLM, NODE)], config=sharded))
    summary = find(found, "upstream", OK)[0].summary
    assert "reading only namespaces matching 'team-a|team-b' (prometheus.namespaces)" in summary
    whole = find(diagnose(facts([("glm", GLM, NODE)])), "upstream", OK)[0].summary
    assert "namespaces" not in whole


def test_an_empty_upstream_names_what_is_missing_in_a_few_lines() -> None:
    found = diagnose(facts([]))
    assert found.exit_status == 1
    failed = [c.name for c in found.blocked]
    assert failed == ["dcgm", "tokens", "models"]
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" in find(found, "dcgm")[0].summary
    assert "vllm:prompt_tokens_total" in find(found, "tokens")[0].summary
    assert len(checklist.text(found).splitlines()) <= 16
    assert_every_failure_says_what_to_do(found)


@pytest.mark.parametrize(
    ("problem", "doc"),
    [
        (
            Problem("prometheus", HTTP_STATUS, "HTTP 401 from http://p/api/v1/query", status=401),
            "401-or-403-from-the-upstream",
        ),
        (
            Problem("prometheus", CONNECT, "cannot connect to http://p: refused"),
            "the-upstream-cannot-be-read",
        ),
        (
            Problem("prometheus", HTTP_STATUS, "HTTP 404 from http://p/api/v1/query", status=404),
            "the-upstream-cannot-be-read",
        ),
    ],
)
def test_an_unreadable_upstream_is_the_only_line_with_its_fix(problem: Problem, doc: str) -> None:
    found = diagnose(replace(facts([]), failure=(problem,), served=(), snapshot=None))
    (only,) = found.checks
    assert only.status == FAIL and only.doc == doc and problem.message in only.summary
    assert found.exit_status == 1 and "could not be read" in found.conclusion


# Pages a sidecar could not read: the fix is about the page and its flag, never the query
# API's settings (a base URL, credentials, TLS or selectors the direct source does not have).
PAGE_FAILURES = [
    Problem("vllm", CONNECT, "vllm cannot connect to http://127.0.0.1:8000/metrics: refused"),
    Problem("vllm", HTTP_STATUS, "vllm HTTP 404 from http://127.0.0.1:8000/metric: ", status=404),
    Problem("vllm", TIMEOUT, "vllm did not answer within 5s"),
    Problem("vllm", TOO_LARGE, "vllm page larger than 16777216 bytes"),
    Problem("dcgm", CONNECT, "dcgm cannot connect to http://10.0.0.7:9400/metrics: refused"),
    Problem("dcgm", HTTP_STATUS, "dcgm HTTP 401 from http://10.0.0.7:9400/metrics", status=401),
    Problem("dcgm", MALFORMED, "dcgm page http://10.0.0.7:9400/metrics is HTML"),
]
QUERY_API_ADVICE = ("ca_file", "/api/v1/query", "Mimir", "selector", "prometheus.", "bearer_token")


@pytest.mark.parametrize("problem", PAGE_FAILURES, ids=lambda p: f"{p.upstream}-{p.reason}")
def test_a_page_a_sidecar_cannot_read_gets_a_fix_for_pages(problem: Problem) -> None:
    found = diagnose(replace(facts([], config=sidecar()), failure=(problem,), served=()))
    (only,) = found.checks
    assert only.status == FAIL and problem.message in only.summary
    assert not [advice for advice in QUERY_API_ADVICE if advice in only.fix], only.fix
    if problem.reason in (CONNECT, HTTP_STATUS, MALFORMED):
        flag = "--dcgm-url (direct.dcgm_urls)" if problem.upstream == "dcgm" else "--vllm-url"
        assert flag in only.fix
    assert_every_failure_says_what_to_do(found)


def test_a_query_api_that_cannot_be_read_keeps_its_fixes() -> None:
    def fix(problem: Problem) -> str:
        found = diagnose(replace(facts([]), failure=(problem,), served=(), snapshot=None))
        return found.checks[0].fix

    assert "TLS: prometheus.ca_file" in fix(Problem("prometheus", CONNECT, "refused"))
    assert "/api/v1/query is appended" in fix(Problem("prometheus", HTTP_STATUS, "404", status=404))
    assert "prometheus.bearer_token_file" in fix(Problem("prometheus", HTTP_STATUS, "", status=403))


# ---- DCGM and its pod labels


def test_gpus_labelled_only_with_dcgm_exporters_own_pod_name_that_cause() -> None:
    own = GpuGroup(
        NODE, "gpu-operator", "nvidia-dcgm-exporter-x1", "pod", 8, frozenset({POWER_GAUGE})
    )
    found = diagnose(
        facts(
            [("glm", GLM, NODE)],
            without_gpus=("glm",),
            inventory=Inventory(gpus=(own,), tokens=(tokens("glm"),)),
        )
    )
    (pods,) = find(found, "gpu pods", FAIL)
    assert "dcgm-exporter's own pod" in pods.summary and "honorLabels" in pods.summary
    assert pods.examples == ("gpu-operator/nvidia-dcgm-exporter-x1 on gpu-a.sdsc.optiputer.net",)
    assert find(found, "model", FAIL) and find(found, "joins", FAIL)
    assert_every_failure_says_what_to_do(found)


def test_which_label_names_the_pods_is_said() -> None:
    inventory = Inventory(
        gpus=(
            gpus("a", label="exported_pod"),
            gpus("b", node="hcc-nrp-b.unl.edu", label="pod", n=2),
            GpuGroup(NODE, "gpu-operator", "nvidia-dcgm-exporter-x1", "pod", 3, frozenset()),
        ),
        tokens=(tokens("a"), tokens("b", "m/b")),
    )
    found = diagnose(
        facts([("a", GLM, NODE), ("b", "m/b", "hcc-nrp-b.unl.edu")], inventory=inventory)
    )
    (pods,) = find(found, "gpu pods")
    assert pods.status == OK
    assert "exported_pod on 4 GPUs, pod on 2 GPUs; 3 GPUs allocated to no pod" in pods.summary


def test_a_sidecar_without_dcgm_series_is_pointed_at_dcgm_exporters_page() -> None:
    inventory = Inventory(tokens=(tokens("glm"),))
    rows = [("glm", GLM, NODE)]
    found = diagnose(facts(rows, sidecar(), inventory, without_gpus=("glm",)))
    (dcgm,) = find(found, "dcgm", FAIL)
    assert "--dcgm-url (direct.dcgm_urls)" in dcgm.fix and ":9400/metrics" in dcgm.fix
    assert "ServiceMonitor" not in dcgm.fix and "gpu_selector" not in dcgm.fix
    assert_every_failure_says_what_to_do(found)
    (scraped,) = find(diagnose(facts(rows, inventory=inventory, without_gpus=("glm",))), "dcgm")
    assert "ServiceMonitor" in scraped.fix and "prometheus.gpu_selector" in scraped.fix


def test_a_sidecar_given_the_wrong_pod_is_told_which_pods_the_dcgm_page_labels() -> None:
    serving = "glm-4-7-fp8-6b9c7d-x2k4p"
    inventory = Inventory(gpus=(gpus(serving, label="pod", n=8),), tokens=(tokens("other"),))
    rows = [("other", GLM, NODE)]
    found = diagnose(facts(rows, sidecar("other"), inventory, without_gpus=("other",)))
    assert find(found, "gpu pods", OK)
    (joins,) = find(found, "joins", FAIL)
    assert f"labels its GPUs with the pod llm/{serving}, not with llm/other:" in joins.fix
    assert "--pod" in joins.fix and "POD_NAME" in joins.fix
    assert find(found, "model", FAIL)[0].fix == joins.fix  # printed once, under both
    assert_every_failure_says_what_to_do(found)
    # Only where the page labels other pods: not where the pod claims its GPUs by id, nor
    # through a query API.
    claimed = diagnose(facts(rows, sidecar("other", gpu_uuids=["GPU-1"]), inventory, ("other",)))
    assert "--pod" not in find(claimed, "joins", FAIL)[0].fix
    scraped = diagnose(facts(rows, inventory=inventory, without_gpus=("other",)))
    assert "--pod" not in find(scraped, "joins", FAIL)[0].fix


def test_a_wrong_pod_names_a_few_of_the_pods_the_page_labels() -> None:
    held = tuple(gpus(f"p{n}", label="pod", n=1) for n in range(5))
    inventory = Inventory(gpus=held, tokens=(tokens("other"),))
    found = diagnose(facts([("other", GLM, NODE)], sidecar("other"), inventory, ("other",)))
    (joins,) = find(found, "joins", FAIL)
    assert "with the pods llm/p0, llm/p1, llm/p2 and 2 more, not with llm/other" in joins.fix


def test_no_pod_labels_at_all_is_dcgm_exporters_kubernetes_mapping() -> None:
    inventory = Inventory(gpus=(GpuGroup(NODE, "", "", "", 8, frozenset({ENERGY_COUNTER})),))
    (pods,) = find(diagnose(facts([], inventory=inventory)), "gpu pods")
    assert pods.status == FAIL and "DCGM_EXPORTER_KUBERNETES" in pods.fix


def test_nodes_without_an_energy_counter_are_named() -> None:
    inventory = Inventory(
        gpus=(
            gpus("a"),
            replace(gpus("b", node="gpu-d.hsrn.nyu.edu"), readings=frozenset({POWER_GAUGE})),
        )
    )
    (power,) = find(diagnose(facts([], inventory=inventory)), "power")
    assert "energy counter on 1 node" in power.summary and power.examples == ("gpu-d.hsrn.nyu.edu",)


# ---- token series


def test_another_servers_series_are_named_with_the_fix() -> None:
    inventory = Inventory(tokens=(tokens("s", metric="sglang:prompt_tokens_total"),))
    (missing,) = find(diagnose(facts([], inventory=inventory)), "tokens")
    assert missing.status == FAIL and "SGLang (sglang:prompt_tokens_total)" in missing.fix


def test_a_sidecar_without_token_series_is_pointed_at_the_servers_page() -> None:
    inventory = Inventory(gpus=(gpus("glm", label="pod"),))
    found = diagnose(facts([], sidecar(), inventory))
    (missing,) = find(found, "tokens", FAIL)
    assert "--vllm-url (direct.pods[].vllm_urls)" in missing.fix and "/metrics" in missing.fix
    assert "PodMonitor" not in missing.fix and "token_selector" not in missing.fix
    assert_every_failure_says_what_to_do(found)
    (scraped,) = find(diagnose(facts([], inventory=inventory)), "tokens", FAIL)
    assert "PodMonitor" in scraped.fix and "prometheus.token_selector" in scraped.fix
    # A sidecar names the pod itself: only the model label can be missing.
    unnamed = Inventory(tokens=(tokens("glm", model=""),))
    (unlabelled,) = find(diagnose(facts([], sidecar(), unnamed)), "tokens", FAIL)
    assert "upstream.token_labels.model" in unlabelled.fix and "PodMonitor" not in unlabelled.fix


def test_token_series_without_a_model_label_fail() -> None:
    inventory = Inventory(tokens=(tokens("p", model=""),))
    (check,) = find(diagnose(facts([], inventory=inventory)), "tokens")
    assert check.status == FAIL and "without model_name" in check.summary
    config = load(overrides={"upstream.default_model": "tgi-model"})
    (check,) = find(diagnose(facts([], config=config, inventory=inventory)), "tokens")
    assert check.status == OK


def test_series_an_ha_pair_stores_twice_are_flagged() -> None:
    inventory = Inventory(replicas={"prometheus_replica": 2})
    (check,) = find(diagnose(facts([], inventory=inventory)), "replicas")
    assert check.status == WARN and check.doc == "doubled-figures-behind-thanos"


# ---- served models


def test_a_pod_without_gpu_series_blocks_its_model_with_examples() -> None:
    found = diagnose(facts([("glm", GLM, NODE), ("b", "m/b", NODE)], without_gpus=("b",)))
    (model,) = find(found, "model", FAIL)
    assert "m/b in llm" in model.summary and "no GPU series for pod(s) b" in model.summary
    assert find(found, "joins", FAIL)[0].examples == ("llm/b (m/b)",)
    assert "1 of 2 served models have figures" in found.conclusion
    assert_every_failure_says_what_to_do(found)


def test_gpus_of_a_pod_serving_no_tokens_are_pointed_out() -> None:
    inventory = Inventory(gpus=(gpus("glm"), gpus("idle", n=2)), tokens=(tokens("glm"),))
    found = diagnose(facts([("glm", GLM, NODE)], inventory=inventory))
    (idle,) = find(found, "joins", WARN)
    assert idle.examples == ("llm/idle on gpu-a.sdsc.optiputer.net (2 GPUs)",)
    assert found.exit_status == 0


def test_a_model_or_gpu_the_tables_do_not_know_warns_of_no_mfu() -> None:
    (model,) = find(diagnose(facts([("x", "acme/Unheard-Of-7B", NODE)])), "model")
    assert model.status == WARN and "the model not in the tables: no MFU" in model.summary


def test_nodes_that_fell_to_the_default_region_are_named() -> None:
    found = diagnose(facts([("glm", GLM, NODE), ("b", "m/b", "gpu-7.example.org")]))
    (regions,) = find(found, "regions")
    assert regions.status == WARN and "default region CAMX" in regions.summary
    assert regions.examples == ("gpu-7.example.org",)


# ---- what the figures rest on


def test_the_nrp_defaults_in_force_are_flagged_and_where_they_do_not_fit() -> None:
    (nrp,) = find(diagnose(facts([("b", GLM, "gpu-7.example.org")])), "defaults")
    assert nrp.status == WARN and "PUE 1.4" in nrp.summary and "this is not the NRP" in nrp.summary
    mine = load(
        overrides={
            "grid.nodes": [],
            "grid.default_region": "US",
            "facility.pue": 1.3,
            "facility.host_overhead": 1.1,
        }
    )
    (ours,) = find(diagnose(facts([("b", GLM, "gpu-7.example.org")], config=mine)), "defaults")
    assert ours.status == OK and "default region US" in ours.summary


def test_implausible_readings_and_node_mismatches_are_listed() -> None:
    problems = (
        Problem(
            "prometheus", IMPLAUSIBLE, "query power_gauge: pod llm/x is above what 4 GPUs draw"
        ),
        Problem("prometheus", NODE_MISMATCH, "dcgm-exporter calls node 'a' 'dcgm-pod-1'"),
        Problem("prometheus", MISSING_SERIES, "pod llm/y model 'm' has no generation series"),
    )
    found = diagnose(facts([("glm", GLM, NODE)], problems=problems))
    assert find(found, "readings", WARN)[0].doc == "implausible-readings"
    assert find(found, "nodes", WARN)[0].doc == "node-name-mismatch"
    assert "no generation series" in find(found, "problems", WARN)[0].examples[0]
    assert found.exit_status == 0


def test_models_without_a_request_counter_are_named() -> None:
    (counted,) = find(diagnose(facts([("glm", GLM, NODE)])), "requests", OK)
    assert "prompt tokens by source for 0 of 1 model" in counted.summary
    found = diagnose(facts([("glm", GLM, NODE), ("kimi", "k", NODE)], uncounted=("kimi",)))
    (warned,) = find(found, "requests", WARN)
    assert warned.examples == ("k in llm",) and warned.doc == "no-request-counter"
    assert "sglang:num_requests_total" in warned.fix and found.exit_status == 0
    off = build(merge(default_document(), {"upstream": {"metrics": {"requests": None}}}))
    (quiet,) = find(diagnose(facts([("glm", GLM, NODE)], config=off)), "requests", OK)
    assert "off" in quiet.summary


def test_live_grid_feeds_are_reported_where_given() -> None:
    assert find(diagnose(facts([("glm", GLM, NODE)])), "grid")[0].summary.startswith("annual")
    stale = LiveGrid("CAMX", "location", "electricitymaps", None, 3600.0)
    (grid,) = find(diagnose(facts([("glm", GLM, NODE)], live_grid=(stale,))), "grid")
    assert grid.status == WARN and grid.examples == ("CAMX location from electricitymaps",)


# ---- reading the upstream


def test_which_api_answers() -> None:
    prometheus = {"version": "2.53.0", "revision": "abc", "goVersion": "go1.22"}
    assert probe.api_name(prometheus, False) == "Prometheus 2.53.0"
    assert probe.api_name(prometheus, True) == "Thanos Querier 2.53.0"
    assert probe.api_name({}, False) == probe.api_name({"version": "2.24.0"}, False)
    assert probe.api_name({}, False) == "VictoriaMetrics"
    assert probe.api_name({"application": "Grafana Mimir", "version": "2.14.0"}, False) == (
        "Grafana Mimir 2.14.0"
    )
    assert probe.api_name(None, False) == ""


def test_inventory_from_the_prometheus_queries() -> None:
    base = {"lce_node": NODE, "lce_namespace": "llm", "lce_pod": "p", "lce_pod_label": "pod"}
    rows = {
        "gpus": [
            Sample({**base, "lce_reading": ENERGY_COUNTER}, 4),
            Sample({**base, "lce_reading": POWER_GAUGE}, 4),
            Sample({"lce_node": NODE, "lce_reading": POWER_GAUGE}, 2),
        ],
        "tokens": [Sample({"lce_metric": "vllm:prompt_tokens_total", "lce_pod": "p"}, 2)],
        "replicas": [
            Sample({"prometheus_replica": "a"}, 1),
            Sample({"prometheus_replica": "b"}, 1),
        ],
    }
    found = from_prometheus(rows)
    assert found.gpus == (
        GpuGroup(NODE, "", "", "", 2, frozenset({POWER_GAUGE})),
        GpuGroup(NODE, "llm", "p", "pod", 4, frozenset({ENERGY_COUNTER, POWER_GAUGE})),
    )
    assert found.tokens == (TokenGroup("vllm:prompt_tokens_total", "", "p", "", 2),)
    assert found.replicas == {"prometheus_replica": 2}


def test_inventory_from_the_pages_a_sidecar_read() -> None:
    config = load(
        overrides={
            "source": "direct",
            "direct.dcgm_urls": ["http://n:9400/metrics"],
            "direct.pods": [{"pod": "p", "namespace": "ns", "vllm_urls": ["http://v/metrics"]}],
        }
    )
    gpu = (("Hostname", NODE), ("UUID", "GPU-1"), ("pod", "p"), ("namespace", "ns"))
    series = [
        ("http://n:9400/metrics", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu),
        ("http://n:9400/metrics", "DCGM_FI_DEV_POWER_USAGE", gpu),
        ("http://v/metrics", "vllm:prompt_tokens", (("model_name", "m"), ("engine", "0"))),
        ("http://v/metrics", "vllm:prompt_tokens", (("model_name", "m"), ("engine", "1"))),
    ]
    found = from_pages(series, config, {"http://v/metrics": config.direct.pods[0]})
    assert found.gpus == (
        GpuGroup(NODE, "ns", "p", "pod", 1, frozenset({ENERGY_COUNTER, POWER_GAUGE})),
    )
    assert found.tokens == (TokenGroup("vllm:prompt_tokens_total", "ns", "p", "m", 2),)


def test_pages_read_per_upstream() -> None:
    unread = Problem("dcgm", CONNECT, "dcgm cannot connect")
    assert probe.pages_read({"vllm": 2, "dcgm": 3}, (), (unread,)) == {
        "vllm": (2, 2),
        "dcgm": (2, 3),
    }
    assert probe.pages_read({"vllm": 2}, (Problem("vllm", CONNECT, "down"),), ())["vllm"] == (0, 2)


# ---- the printed checklist


def test_the_text_shares_one_fix_among_checks_in_a_row_and_json_has_the_same() -> None:
    found = diagnose(facts([("a", GLM, NODE), ("b", "m/b", NODE)], without_gpus=("a", "b")))
    text = checklist.text(found)
    assert text.count("✗ model") == 2
    assert text.count("see: docs/troubleshooting.md#pods-with-tokens-but-no-gpu-series") == 1
    # After the conclusion: where the guide those lines name is, without the source tree.
    assert text.splitlines()[-2:] == [found.conclusion, checklist.GUIDE_WHERE]
    assert "llm-carbon-exporter docs troubleshooting" in checklist.GUIDE_WHERE
    document = checklist.to_dict(found)
    assert document["exit_status"] == 1
    assert [c["status"] for c in document["checks"]] == [c.status for c in found.checks]
    assert {m["model"] for m in document["models"]} == {GLM, "m/b"}
