"""The fault matrix, against real parts: a real Prometheus scraping the simulated
cluster (its pages served from a child process, swapped at run time for faults Prometheus
itself carries), the fault-injecting proxy (tests/fault_proxy.py) between Prometheus and the
exporter for faults of the query API, and the exporter's real source, engine and collector
(in-process: cycles on demand, the engine's clock under the test's control), plus a real
`serve` subprocess kept serving through faults.

Every render is checked: all values finite, no *_total sample ever lower than before. For
every fault: the cycle never raises; upstream_up and upstream_errors_total{reason} say what
happened, with one single-line log record (per failed cycle; a problem that persists through
successful cycles is logged once); per-model series are current, withheld, or the last good
cycle's flagged by upstream_up 0 and withdrawn after stale_after intervals, never wrong; and
once the fault clears (and Prometheus's window has caught up, for faults in the data), at most
two cycles bring upstream_up back to 1 and the models back to what the cluster implies.

Each broken promise raises its own exception class (WrongFigure, NotReported, ...), so a
failure names the kind of bug it shows.
"""

from __future__ import annotations

import dataclasses
import gc
import html
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from exporter.config import Config, load
from exporter.demo.nrp import nrp_cluster
from exporter.demo.simulation import (
    GPU_PRODUCTS,
    SimCluster,
    SimNode,
    SimPod,
    Target,
    targets,
)
from exporter.engine import Engine
from exporter.exposition import server as http_server
from exporter.sources.prometheus import PrometheusSource
from tests.fault_proxy import (
    Delay,
    EachQuery,
    Fault,
    FaultProxy,
    Oversized,
    Reply,
    Reset,
    Rewrite,
    SimProcess,
    Trickle,
    Truncate,
    error_envelope,
    html_reply,
    json_reply,
)
from tests.harness import (
    ExporterProcess,
    PrometheusServer,
    one,
    parse_samples,
    pick,
    wait_until,
)
from tests.live import wait_for_live_scrapes

pytestmark = pytest.mark.integration

Samples = list[tuple[str, dict[str, str], float]]
ModelKey = tuple[str, str]


# Failures of the exporter's promises, by kind, so a failure names the bug it shows.
class WrongFigure(AssertionError):
    """A figure on the page that the simulated cluster contradicts."""


class NotReported(AssertionError):
    """A fault neither counted in the self-metrics nor logged."""


class MultiLineLog(AssertionError):
    """A log record spanning several lines."""


class SlowCycle(AssertionError):
    """A cycle held far longer than prometheus.timeout allows."""


class StalePage(AssertionError):
    """/metrics showing an earlier state than the engine's."""


class MissingModel(AssertionError):
    """A model served upstream (with GPU and token series) absent from the page."""


SCRAPE_SECONDS = 1
WINDOW = "3s"  # prometheus.window: short, so appearing and vanishing series settle fast
WINDOW_SECONDS = 3
TIMEOUT = 1.5  # prometheus.timeout of the in-process exporter (slack for a loaded machine)
INTERVAL = 3.0  # engine seconds between in-process cycles (no longer than the window)
STALE_AFTER = 3
MAX_RESPONSE_BYTES = 1 << 20
UPSTREAM = "prometheus"

# ---- the simulated cluster: the NRP review's models, plus a node holding a model whose name
# has quotes, a backslash and non-ASCII, and GPUs for models that come and go (one of them
# with a newline in its name).

NODE_E = SimNode("gpu-e.sdsc.optiputer.net", GPU_PRODUCTS["H100"], 8)
WEIRD = 'acme/"quoted" back\\slash ünïcødé 模型'
WEIRD_POD = SimPod(
    "nrp-llm", "weird-0a1b2c-we1rd", WEIRD, NODE_E.hostname, (0, 1), 300.0, 500.0, 50.0
)
NEWLINE = "acme/two\nlines ⏎"
NEWLINE_POD = SimPod(
    "nrp-llm", "newline-6f7a8b-n3wl1", NEWLINE, NODE_E.hostname, (3,), 120.0, 300.0, 30.0
)
TRANSIENT_POD = SimPod(
    "nrp-llm",
    "transient-3c4d5e-tr4ns",
    "acme/Transient-7B",
    NODE_E.hostname,
    (2,),
    150.0,
    200.0,
    20.0,
)
GLM = "zai-org/GLM-4.7-FP8"
QWEN = "Qwen/Qwen3.5-397B-A17B-FP8"
MINIMAX = "MiniMaxAI/MiniMax-M2.5"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def base_cluster() -> SimCluster:
    nrp = nrp_cluster()
    return dataclasses.replace(nrp, nodes=(*nrp.nodes, NODE_E), pods=(*nrp.pods, WEIRD_POD))


def prometheus_targets() -> list[Target]:
    """Every page Prometheus scrapes: the base cluster's and those of the pods that come and
    go (404 while a pod is absent, like a pod that is not scheduled)."""
    cluster = base_cluster()
    return targets(with_pods(cluster, (*cluster.pods, TRANSIENT_POD, NEWLINE_POD)))


def pod_of(cluster: SimCluster, model: str, index: int = 0) -> SimPod:
    return [p for p in cluster.pods if p.model == model][index]


def with_pods(cluster: SimCluster, pods: tuple[SimPod, ...]) -> SimCluster:
    return dataclasses.replace(cluster, pods=pods)


# ---- what the cluster implies


@dataclass(frozen=True)
class Truth:
    power_w: float
    tokens_per_second: float
    prompt_tps: float
    gpus: int


def truth(cluster: SimCluster) -> dict[ModelKey, Truth]:
    rows: dict[ModelKey, list[float]] = {}
    for pod in cluster.pods:
        row = rows.setdefault((pod.namespace, pod.model), [0.0, 0.0, 0.0, 0.0])
        row[0] += pod.power_w
        row[1] += pod.prompt_tps + pod.generation_tps
        row[2] += pod.prompt_tps
        row[3] += len(pod.gpus)
    return {key: Truth(r[0], r[1], r[2], int(r[3])) for key, r in rows.items()}


def key_of(cluster: SimCluster, model: str) -> ModelKey:
    return (pod_of(cluster, model).namespace, model)


def approx(value: float, rel: float = 0.03) -> object:
    return pytest.approx(value, rel=rel, abs=1e-6)


def model_keys(samples: Samples) -> set[ModelKey]:
    return {(lab["namespace"], lab["model"]) for lab, _ in pick(samples, "llm_carbon_model_info")}


def of_model(samples: Samples, key: ModelKey, name: str, **labels: str) -> list[float]:
    return [v for _, v in pick(samples, name, namespace=key[0], model=key[1], **labels)]


def info(samples: Samples, key: ModelKey) -> dict[str, str]:
    found = pick(samples, "llm_carbon_model_info", namespace=key[0], model=key[1])
    assert len(found) == 1, f"model_info of {key}: {found}"
    return found[0][0]


def assert_matches(samples: Samples, cluster: SimCluster) -> None:
    """Every served model of `cluster` is on the page with its power and token rates."""
    want = truth(cluster)
    assert model_keys(samples) == set(want)
    for key, row in want.items():
        assert of_model(samples, key, "llm_carbon_power_watts", scope="gpu") == [
            approx(row.power_w)
        ], key
        tokens = of_model(samples, key, "llm_carbon_tokens_per_second")
        assert sum(tokens) == approx(row.tokens_per_second), key
        assert of_model(samples, key, "llm_carbon_gpus") == [row.gpus], key
    assert one(samples, "llm_carbon_exporter_models") == len(want)
    assert one(samples, "llm_carbon_exporter_pods_without_gpu_series") == 0


def figure(ok: bool, what: object) -> None:
    if not ok:
        raise WrongFigure(what)


def assert_consistent(samples: Samples, cluster: SimCluster) -> None:
    """Whatever per-model figure is exported agrees with the cluster: a fault may withhold a
    figure, never make it wrong."""
    want = truth(cluster)
    for key in model_keys(samples):
        row = want[key]
        for watts in of_model(samples, key, "llm_carbon_power_watts", scope="gpu"):
            figure(watts == approx(row.power_w), (key, "power W", watts, row.power_w))
        tokens = sum(of_model(samples, key, "llm_carbon_tokens_per_second"))
        if tokens:
            figure(
                tokens == approx(row.tokens_per_second),
                (key, "tokens/s", tokens, row.tokens_per_second),
            )
        for jpt in of_model(
            samples,
            key,
            "llm_carbon_energy_joules_per_token",
            scope="gpu",
            accounting="amortized",
        ):
            want_jpt = row.power_w / row.tokens_per_second
            figure(jpt == approx(want_jpt), (key, "J/token", jpt, want_jpt))
        for ratio in of_model(samples, key, "llm_carbon_prompt_token_ratio"):
            want_ratio = row.prompt_tps / row.tokens_per_second
            figure(ratio == approx(want_ratio), (key, "prompt ratio", ratio, want_ratio))
        for ratio in of_model(samples, key, "llm_carbon_utilization_ratio"):
            figure(0 <= ratio <= 1, (key, "utilization", ratio))


def per_model_series(samples: Samples) -> list[tuple[str, tuple, float]]:
    return sorted(
        (name, tuple(sorted(labels.items())), value)
        for name, labels, value in samples
        if "model" in labels
    )


def errors(samples: Samples) -> dict[str, float]:
    return {
        lab["reason"]: value
        for lab, value in pick(
            samples, "llm_carbon_exporter_upstream_errors_total", upstream=UPSTREAM
        )
    }


def error_delta(after: Samples, before: Samples) -> dict[str, float]:
    old, new = errors(before), errors(after)
    return {k: v - old.get(k, 0) for k, v in new.items() if v != old.get(k, 0)}


def up(samples: Samples) -> float:
    return one(samples, "llm_carbon_exporter_upstream_up", upstream=UPSTREAM)


class Totals:
    """Every *_total sample seen, to check none ever decreases within one process."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, tuple], float] = {}

    def check(self, samples: Samples) -> None:
        for name, labels, value in samples:
            if not name.endswith("_total"):
                continue
            key = (name, tuple(sorted(labels.items())))
            previous = self.seen.get(key)
            assert previous is None or value >= previous, f"{key} went from {previous} to {value}"
            self.seen[key] = value


def assert_finite(samples: Samples) -> None:
    bad = [(name, labels, value) for name, labels, value in samples if not math.isfinite(value)]
    assert not bad, f"non-finite values exported: {bad[:5]}"


# ---- Prometheus, its settling, and the in-process exporter


def page_power(cluster: SimCluster, energy_only: bool) -> float:
    """Sum of the DCGM power the pages show (every GPU, held or idle)."""
    now = time.time()
    return sum(
        value
        for node in cluster.nodes
        if node.energy_counter or not energy_only
        for name, _, value in cluster.dcgm_series(node, now)
        if name == "DCGM_FI_DEV_POWER_USAGE"
    )


def prometheus_agrees(server: PrometheusServer, cluster: SimCluster, window: str) -> bool:
    """True when Prometheus's window rates add up to what `cluster` implies: every series of
    the cluster has a full window and nothing gone still lingers in it."""

    def total(expr: str) -> float:
        result = server.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    w = window
    checks = (
        (
            total(f"sum(rate(vllm:prompt_tokens_total[{w}]))"),
            sum(p.prompt_tps for p in cluster.pods),
        ),
        (
            total(f"sum(rate(vllm:generation_tokens_total[{w}]))"),
            sum(p.generation_tps for p in cluster.pods),
        ),
        (total(f"sum(avg_over_time(DCGM_FI_DEV_POWER_USAGE[{w}]))"), page_power(cluster, False)),
        (
            total(f"sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[{w}])) / 1000"),
            page_power(cluster, True),
        ),
    )
    return all(math.isclose(got, want, rel_tol=0.01) for got, want in checks)


def wait_for_prometheus(
    server: PrometheusServer, cluster: SimCluster, what: str, window: str = WINDOW
) -> None:
    wait_until(lambda: prometheus_agrees(server, cluster, window), 20, what, interval=0.25)


def in_process_config(url: str, **overrides: object) -> Config:
    return load(
        overrides={
            "prometheus.url": url,
            "prometheus.window": WINDOW,
            "prometheus.timeout": TIMEOUT,
            "prometheus.max_response_bytes": MAX_RESPONSE_BYTES,
            "exporter.interval": INTERVAL,
            "exporter.stale_after": STALE_AFTER,
            "utilization.lookback": "10m",
            "utilization.refresh": "1ms",  # the look-back queries run every cycle
            **overrides,
        }
    )


class Driver:
    """The exporter in-process: its real source, engine and collector (through the server's
    MetricsCache). Cycles run on demand; the engine's clock moves one interval per cycle. Every
    render is checked: finite values, counters never decreasing."""

    def __init__(self, url: str, **overrides: object) -> None:
        self.config = in_process_config(url, **overrides)
        self.now = time.time()
        self.source = PrometheusSource(self.config)
        self.queries = self.source.queries
        self.engine = Engine(self.config, self.source, clock=lambda: self.now)
        self.cache = http_server.MetricsCache(self.engine)
        self.totals = Totals()

    def promql(self, *names: str) -> list[str]:
        every = {**self.queries.per_cycle(), **self.queries.lookback()}
        # Asked when GPUs are shared, with the look-back (due every cycle here).
        every["shared_gpus"] = f"{self.queries.follow_up(shared=True)} or {self.queries.refresh}"
        return [every[name] for name in names]

    def cycle(self) -> bool:
        self.now += self.config.exporter.interval
        return self.engine.run_cycle()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def next_at_present(self) -> None:
        """The next cycle evaluates at the present, not one interval past the last cycle."""
        self.now = time.time() - self.config.exporter.interval

    def scrape(self) -> Samples:
        samples = parse_samples(self.cache.body("")[0].decode("utf-8"))
        assert_finite(samples)
        self.totals.check(samples)
        return samples

    def settle(self, cluster: SimCluster) -> Samples:
        """One good cycle whose figures match `cluster`."""
        assert self.cycle(), self.engine.state.errors_total
        samples = self.scrape()
        assert up(samples) == 1
        assert_matches(samples, cluster)
        return samples

    def recover(self, check: Callable[[Samples], None]) -> int:
        """Cycles (at most two) until upstream_up is 1 and `check` passes; how many it took."""
        problem: BaseException | None = None
        for cycles in (1, 2):
            self.cycle()
            samples = self.scrape()
            try:
                assert up(samples) == 1, "upstream_up is still 0"
                check(samples)
                return cycles
            except AssertionError as exc:
                problem = exc
        raise AssertionError(f"not recovered within two cycles: {problem}")

    def close(self) -> None:
        self.source.close()


class LogWatch:
    """The exporter's log records since the last look."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="exporter")
        self.caplog = caplog
        self.mark = 0

    def new(self, level: int = logging.INFO) -> list[logging.LogRecord]:
        records = self.caplog.records[self.mark :]
        self.mark = len(self.caplog.records)
        return [r for r in records if r.name.startswith("exporter") and r.levelno >= level]


def assert_single_line(record: logging.LogRecord) -> None:
    if "\n" in record.getMessage() or record.exc_info is not None:
        raise MultiLineLog(record.getMessage())


# ---- fixtures


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    server = SimProcess(base_cluster())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory, sim: SimProcess) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        tmp_path_factory.mktemp("faults-prometheus"),
        sim.address,
        prometheus_targets(),
        scrape_interval=SCRAPE_SECONDS,
    )
    try:
        server.start()
        wait_for_live_scrapes(server, len(targets(sim.cluster)))
        wait_for_prometheus(server, sim.cluster, "Prometheus to hold a full window")
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(prom: PrometheusServer) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(prom.url).listen()
    yield fault_proxy
    fault_proxy.close()


@pytest.fixture
def make_driver(proxy: FaultProxy) -> Iterator[Callable[..., Driver]]:
    made: list[Driver] = []

    def make(url: str | None = None, **overrides: object) -> Driver:
        driver = Driver(url or proxy.url, **overrides)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> LogWatch:
    return LogWatch(caplog)


# ---- upstream faults that fail the cycle


@dataclass(frozen=True)
class FailCase:
    make: Callable[[], Fault] | None  # None: the proxy stops listening (connection refused)
    reason: str
    only: tuple[str, ...] | None = None  # query names the fault applies to (None: all)


MULTILINE_ERROR = (
    "rpc error: code = Unavailable desc = store gateway 10.0.3.7:10901 unavailable\n"
    "while fetching series for query"
)
FAIL_CASES = [
    pytest.param(FailCase(None, "connect"), id="refused"),
    pytest.param(FailCase(Reset, "connect"), id="connection-reset"),
    pytest.param(FailCase(Truncate, "connect"), id="dies-mid-response"),
    pytest.param(FailCase(lambda: Delay(3 * TIMEOUT), "timeout"), id="slower-than-timeout"),
    pytest.param(
        FailCase(lambda: Reply(500, "internal server error\n", "text/plain"), "http_status"),
        id="http-500",
    ),
    pytest.param(
        FailCase(
            lambda: error_envelope(422, "execution", "expanding series: too many samples"),
            "query_error",
        ),
        id="http-422-error-envelope",
    ),
    pytest.param(
        FailCase(lambda: error_envelope(503, "timeout", "query timed out"), "http_status"),
        id="http-503-error-envelope",
    ),
    pytest.param(
        FailCase(lambda: html_reply(503, "503 Service Temporarily Unavailable"), "http_status"),
        id="http-503-html",
    ),
    pytest.param(FailCase(lambda: html_reply(200, "Sign in"), "malformed_response"), id="html-200"),
    pytest.param(
        FailCase(lambda: error_envelope(200, "internal", "ruler unavailable"), "query_error"),
        id="status-error-200",
    ),
    pytest.param(
        FailCase(lambda: error_envelope(422, "execution", MULTILINE_ERROR), "query_error"),
        id="multiline-error-text",
    ),
    pytest.param(
        FailCase(
            lambda: json_reply(200, {"status": "success", "data": {"resultType": "matrix"}}),
            "malformed_response",
        ),
        id="not-a-vector",
    ),
    pytest.param(
        FailCase(
            lambda: Reply(200, '{"status":"success","data":{"resultType":"vector","result":[{'),
            "malformed_response",
        ),
        id="truncated-json",
    ),
    pytest.param(
        FailCase(
            lambda: json_reply(
                200,
                {
                    "status": "success",
                    "data": {
                        "resultType": "vector",
                        "result": [
                            {
                                "metric": {
                                    "lce_namespace": "nrp-llm",
                                    "lce_pod": "glm-4-7-fp8-6b9c7d-x2k4p",
                                    "lce_model": 42,
                                },
                                "value": [1, "1"],
                            }
                        ],
                    },
                },
            ),
            "malformed_response",
            only=("tokens",),
        ),
        id="label-value-not-a-string",
    ),
    pytest.param(
        FailCase(lambda: Oversized(64 << 20), "response_too_large"), id="oversized-response"
    ),
    pytest.param(
        FailCase(
            lambda: Reply(500, "internal server error\n", "text/plain"),
            "http_status",
            only=("power_energy", "power_gauge"),
        ),
        id="no-power-query-answers",
    ),
    pytest.param(
        FailCase(
            lambda: error_envelope(
                422, "execution", "query processing would load too many samples"
            ),
            "query_error",
            only=("tokens",),
        ),
        id="required-query-422",
    ),
]


@pytest.mark.parametrize("case", FAIL_CASES)
def test_upstream_fault_fails_the_cycle_cleanly_then_recovers(
    case: FailCase,
    proxy: FaultProxy,
    make_driver: Callable[..., Driver],
    sim: SimProcess,
    logs: LogWatch,
) -> None:
    driver = make_driver()
    good = driver.settle(sim.cluster)
    last_success = one(good, "llm_carbon_exporter_last_success_timestamp_seconds")
    logs.new()
    fault = None if case.make is None else case.make()
    started = time.monotonic()
    if fault is None:
        proxy.refuse()
    else:
        proxy.inject(fault, None if case.only is None else driver.promql(*case.only))

    for failed in (1, 2):
        began = time.monotonic()
        assert not driver.cycle()
        # A failing cycle is bounded: at most three requests (two optional power queries,
        # then a required one) each within prometheus.timeout.
        assert time.monotonic() - began < 3 * TIMEOUT + 1.0
        samples = driver.scrape()
        assert up(samples) == 0
        assert error_delta(samples, good) == {case.reason: failed}  # a failed cycle counts once
        # Not current, so flagged: the last good cycle's series, unchanged, with up 0.
        assert per_model_series(samples) == per_model_series(good)
        assert one(samples, "llm_carbon_exporter_last_success_timestamp_seconds") == last_success
        records = logs.new(logging.WARNING)
        if failed == 2:  # the same failure again: not news (a reminder comes much later)
            assert records == [], [r.getMessage() for r in records]
            continue
        assert len(records) == 1, [r.getMessage() for r in records]
        message = records[0].getMessage()
        assert f"reason={case.reason}" in message and f"{failed} in a row" in message
        assert_single_line(records[0])
    if fault is not None:
        assert proxy.faulted(started), "the fault was never applied"
    if isinstance(fault, Oversized):
        assert fault.sent and max(fault.sent) < fault.size, "the whole oversized body was read"

    # Three intervals and a second after the last good cycle: stale, so withdrawn.
    driver.advance(STALE_AFTER * INTERVAL - 2 * INTERVAL + 1)
    samples = driver.scrape()
    assert per_model_series(samples) == []
    assert one(samples, "llm_carbon_exporter_models") == 0
    assert up(samples) == 0
    assert pick(samples, "llm_carbon_methodology_info")  # the page itself is still served

    if fault is None:
        proxy.listen()
    else:
        proxy.clear()
    driver.recover(lambda s: assert_matches(s, sim.cluster))
    records = logs.new()
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert any("recovered after 2 failed cycle(s)" in r.getMessage() for r in records)


def test_refused_at_start_then_upstream_appears(
    proxy: FaultProxy, make_driver: Callable[..., Driver], sim: SimProcess, logs: LogWatch
) -> None:
    proxy.refuse()
    driver = make_driver()
    assert not driver.cycle()
    samples = driver.scrape()
    assert up(samples) == 0
    assert error_delta(samples, []) == {"connect": 1}
    assert per_model_series(samples) == []
    assert pick(samples, "llm_carbon_exporter_last_success_timestamp_seconds") == []
    assert not driver.engine.ready.is_set()
    records = logs.new(logging.WARNING)
    assert len(records) == 1 and "reason=connect" in records[0].getMessage()
    assert_single_line(records[0])

    proxy.listen()
    assert driver.recover(lambda s: assert_matches(s, sim.cluster)) == 1
    assert driver.engine.ready.is_set()


def test_trickled_response_is_cut_off_at_the_timeout(
    proxy: FaultProxy, make_driver: Callable[..., Driver], sim: SimProcess
) -> None:
    """An upstream that answers at once, then drips its body, must not hold a cycle much
    longer than the timeout (three requests at most, as for a plain delay)."""
    driver = make_driver()
    driver.settle(sim.cluster)
    proxy.inject(Trickle(0.1))
    finished = threading.Event()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(driver.cycle())
        except BaseException as exc:  # re-raised below, in the test's thread
            outcome.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=run, name="trickle-cycle", daemon=True)
    bound = 3 * TIMEOUT + 1.5
    began = time.monotonic()
    thread.start()
    try:
        finished.wait(bound)
        took = time.monotonic() - began
    finally:
        proxy.clear()  # the trickle ends at once, so the cycle (and the thread) ends too
        thread.join(10)
    assert not thread.is_alive()
    assert proxy.faulted(), "the fault was never applied"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    if took >= bound:
        raise SlowCycle(f"a cycle against a trickling upstream still ran after {took:.1f}s")
    assert outcome[0] is False  # the cycle failed, and says why
    assert driver.engine.state.errors_total.get(("prometheus", "timeout"), 0) >= 1


# ---- upstream faults that degrade one figure


def test_a_failed_follow_up_withholds_what_it_would_have_completed(
    proxy: FaultProxy, make_driver: Callable[..., Driver], sim: SimProcess, logs: LogWatch
) -> None:
    # gpu_holders says one of GLM's GPUs has a second holder; the follow-up that would give
    # the shared GPU's power fails: GLM's power is withheld (never charged as if exclusive),
    # the other models stay, and the failure is said once.
    cluster = sim.cluster
    driver = make_driver()
    good = driver.settle(cluster)
    glm = key_of(cluster, GLM)
    logs.new()
    holders, shared = driver.promql("gpu_holders", "shared_gpus")
    gpu = row_labels(cluster, ValueTarget(GLM, "gpu-id", "power"))
    fault = EachQuery(
        {
            holders: Rewrite(AddHolder(gpu)),
            shared: Reply(500, "internal server error\n", "text/plain"),
        },
        "shared GPU, follow-up fails",
    )
    proxy.inject(fault, [holders, shared])

    assert driver.cycle()
    samples = driver.scrape()
    assert up(samples) == 1
    assert error_delta(samples, good).get("http_status", 0) >= 1
    assert of_model(samples, glm, "llm_carbon_power_watts") == []
    assert model_keys(samples) == model_keys(good)
    # Which pods on that node hold the GPU is the follow-up's to say: all of theirs are
    # withheld; models on other nodes keep their power.
    node = pod_of(cluster, GLM).node
    elsewhere = {
        key
        for key in model_keys(good) - {glm}
        if of_model(good, key, "llm_carbon_power_watts")
        and all(p.node != node for p in cluster.pods if (p.namespace, p.model) == key)
    }
    assert elsewhere
    assert all(of_model(samples, key, "llm_carbon_power_watts") for key in elsewhere)
    records = [r.getMessage() for r in logs.new(logging.WARNING)]
    assert any("query follow_up" in r for r in records), records

    proxy.clear()
    driver.recover(lambda s: assert_matches(s, cluster))


def test_fault_on_an_optional_query_degrades_one_figure(
    proxy: FaultProxy, make_driver: Callable[..., Driver], sim: SimProcess, logs: LogWatch
) -> None:
    driver = make_driver()
    good = driver.settle(sim.cluster)
    glm = key_of(sim.cluster, GLM)
    assert info(good, glm)["power_source"] == "energy_counter"
    logs.new()
    proxy.inject(Reply(500, "internal server error\n", "text/plain"), driver.promql("power_energy"))

    assert driver.cycle()
    samples = driver.scrape()
    assert up(samples) == 1
    assert error_delta(samples, good) == {"http_status": 1}
    records = logs.new(logging.WARNING)
    assert len(records) == 1 and "query power_energy" in records[0].getMessage()
    assert_single_line(records[0])
    # The power gauge stands in: same power, the label says where it came from.
    assert info(samples, glm)["power_source"] == "power_gauge"
    assert_matches(samples, sim.cluster)

    assert driver.cycle()  # the same problem again: counted again, not logged again
    samples = driver.scrape()
    assert error_delta(samples, good) == {"http_status": 2}
    assert logs.new(logging.WARNING) == []

    proxy.clear()
    driver.recover(lambda s: assert_matches(s, sim.cluster))
    assert info(driver.scrape(), glm)["power_source"] == "energy_counter"


def test_fault_on_the_lookback_queries_keeps_the_previous_history(
    prom: PrometheusServer,
    proxy: FaultProxy,
    make_driver: Callable[..., Driver],
    sim: SimProcess,
    logs: LogWatch,
) -> None:
    driver = make_driver()
    glm = key_of(sim.cluster, GLM)
    wait_until(
        lambda: any(
            row["metric"].get("lce_model") == GLM for row in prom.query(driver.queries.peak_tokens)
        ),
        10,
        "a look-back peak for GLM",
    )
    good = driver.settle(sim.cluster)
    assert info(good, glm)["capacity_source"] == "observed_peak"
    logs.new()
    proxy.inject(
        error_envelope(503, "unavailable", "query queue full"),
        driver.promql("peak_tokens"),
    )

    assert driver.cycle()
    samples = driver.scrape()
    assert up(samples) == 1
    assert error_delta(samples, good) == {"http_status": 1}
    records = logs.new(logging.WARNING)
    assert len(records) == 1 and "look-back query peak_tokens" in records[0].getMessage()
    assert info(samples, glm)["capacity_source"] == "observed_peak"
    # the peak found before the fault still divides: utilization as it was, not dropped
    before = of_model(good, glm, "llm_carbon_utilization_ratio")
    assert before and of_model(samples, glm, "llm_carbon_utilization_ratio") == approx(
        before, rel=0.02
    )
    assert_matches(samples, sim.cluster)

    proxy.clear()
    driver.recover(lambda s: assert_matches(s, sim.cluster))


# ---- invalid values in results


@dataclass(frozen=True)
class ValueTarget:
    model: str
    row: str  # gpu | gpu-id | token | model: the labels of the query's rows
    withheld: str  # the figure of `model` an invalid sample must withhold (or leave right)
    phase: str = ""  # a token row's lce_phase (the tokens query holds every counter's rate)

    def query(self, name: str) -> str:
        return "tokens" if self.phase else name


VALUE_TARGETS = {
    "power_energy": ValueTarget(GLM, "gpu", "gauge"),
    "power_gauge": ValueTarget(MINIMAX, "gpu", "power"),
    "gpu_count": ValueTarget(GLM, "gpu", "power"),
    "shared_gpus": ValueTarget(GLM, "gpu-id", "power"),
    "busy": ValueTarget(GLM, "gpu", "busy"),
    "prompt-tokens": ValueTarget(GLM, "token", "model", phase="prompt"),
    "generation-tokens": ValueTarget(GLM, "token", "model", phase="generation"),
    "requests": ValueTarget(GLM, "token", "requests", phase="requests"),
    "peak_tokens": ValueTarget(GLM, "model", "utilization"),
}
BAD_VALUES = {"NaN": "nan", "+Inf": "plus-inf", "-Inf": "minus-inf", "-1": "negative"}


def row_labels(cluster: SimCluster, target: ValueTarget) -> dict[str, str]:
    pod = pod_of(cluster, target.model)
    gpu = {
        "lce_namespace": pod.namespace,
        "lce_pod": pod.name,
        "lce_node": pod.node,
        "lce_gpu_model": cluster.node(pod.node).product,
    }
    if target.row == "gpu":
        return gpu
    if target.row == "gpu-id":  # one of the pod's GPUs, as if another pod held it too
        gpu_id = cluster.node(pod.node).uuid(pod.gpus[0])
        return {**gpu, "lce_gpu_id": gpu_id, "lce_reading": "energy_counter"}
    if target.row == "token":
        return {
            "lce_namespace": pod.namespace,
            "lce_pod": pod.name,
            "lce_model": pod.model,
            "lce_phase": target.phase,
        }
    return {"lce_namespace": pod.namespace, "lce_model": pod.model}


class SetValue:
    """Rewrites the sample of one row to `value` (adding the row where the result has none);
    `applied` counts the rewritten responses."""

    def __init__(self, labels: Mapping[str, str], value: str) -> None:
        self.labels = dict(labels)
        self.value = value
        self.applied = 0

    def __call__(self, document: dict) -> None:
        result = document["data"]["result"]
        matched = [
            item
            for item in result
            if all(item["metric"].get(k) == v for k, v in self.labels.items())
        ]
        if not matched:
            result.append({"metric": dict(self.labels), "value": [time.time(), self.value]})
        for item in matched:
            item["value"][1] = self.value
        self.applied += 1


class AddHolder:
    """Adds a `gpu_holders` row: the GPU of `labels` has more than one holder."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.row = {"lce_node": labels["lce_node"], "lce_gpu_id": labels["lce_gpu_id"]}

    def __call__(self, document: dict) -> None:
        metric = {**self.row, "lce_shared": "1"}
        document["data"]["result"].append({"metric": metric, "value": [time.time(), "1"]})


def value_params() -> list:
    params = []
    for query in VALUE_TARGETS:
        for value, name in BAD_VALUES.items():
            params.append(pytest.param(query, value, id=f"{query}-{name}"))
    return params


@pytest.mark.parametrize(("query", "value"), value_params())
def test_invalid_value_is_never_exported_and_is_reported(
    query: str,
    value: str,
    proxy: FaultProxy,
    make_driver: Callable[..., Driver],
    sim: SimProcess,
    logs: LogWatch,
) -> None:
    target = VALUE_TARGETS[query]
    cluster = sim.cluster
    key = key_of(cluster, target.model)
    driver = make_driver()
    good = driver.settle(cluster)
    logs.new()
    change = SetValue(row_labels(cluster, target), value)
    fault = Rewrite(change, f"{query}={value}")
    if query == "shared_gpus":  # a second holder of the GPU makes the exporter ask for it
        holders, shared = driver.promql("gpu_holders", "shared_gpus")
        fault = EachQuery(
            {holders: Rewrite(AddHolder(row_labels(cluster, target))), shared: fault},
            f"{query}={value}",
        )
        proxy.inject(fault, driver.promql("gpu_holders", "shared_gpus"))
    else:
        proxy.inject(fault, driver.promql(target.query(query)))

    assert driver.cycle()  # a bad sample is the pod's problem, not the cycle's
    assert change.applied, "the fault was never applied"
    samples = driver.scrape()  # (finite values and counters are checked on every render)
    assert up(samples) == 1
    assert_consistent(samples, cluster)
    assert model_keys(samples) <= model_keys(good)
    if target.withheld == "model":
        figure(key not in model_keys(samples), (key, "still on the page"))
    elif target.withheld == "power":
        figure(of_model(samples, key, "llm_carbon_power_watts") == [], (key, "power"))
    elif target.withheld == "gauge":  # a bad energy-counter rate: the power gauge stands in
        figure(info(samples, key)["power_source"] == "power_gauge", info(samples, key))
        power = of_model(samples, key, "llm_carbon_power_watts", scope="gpu")
        expected = of_model(good, key, "llm_carbon_power_watts", scope="gpu")
        figure(
            len(power) == 1 and abs(power[0] - expected[0]) <= 0.02 * expected[0],
            (key, "power", power, expected),
        )
    elif target.withheld == "requests":  # only what divides by requests
        figure(key in model_keys(samples), (key, "left out"))
        per_request = of_model(samples, key, "llm_carbon_energy_joules_per_request")
        figure(per_request == [], (key, "per request", per_request))
    elif target.withheld == "busy":
        busy = of_model(samples, key, "llm_carbon_gpu_busy_ratio")
        figure(all(0 <= v <= 1 for v in busy), (key, "busy", busy))
    elif target.withheld == "utilization":
        utilization = of_model(samples, key, "llm_carbon_utilization_ratio")
        figure(all(0 <= v <= 1 for v in utilization), (key, "utilization", utilization))
    # Said once: counted, and one single-line log record naming the query.
    if error_delta(samples, good).get("invalid_value", 0) < 1:
        raise NotReported(f"{query}={value}: upstream_errors_total{{reason=invalid_value}} flat")
    records = logs.new(logging.WARNING)
    if not records:
        raise NotReported(f"{query}={value}: nothing logged")
    assert len(records) == 1, [r.getMessage() for r in records]
    assert target.query(query) in records[0].getMessage()
    assert_single_line(records[0])

    assert driver.cycle()  # the same fault again: counted again, not logged again
    again = driver.scrape()
    assert error_delta(again, samples).get("invalid_value", 0) >= 1
    assert logs.new(logging.WARNING) == []

    proxy.clear()
    driver.recover(lambda s: assert_matches(s, cluster))


# ---- partial results


GAP = "pods_without_gpu_series"  # a serving pod with no GPU row: its model's power withheld


@dataclass(frozen=True)
class PartialCase:
    queries: tuple[str, ...]
    model: str
    replica: int = 0
    said_by: str = GAP  # the gauge, or else the error reason, that must report the gap
    phase: str = ""  # only the pod's token rows of this phase go missing


def drop_pod(pod: str, phase: str = "") -> Callable[[dict], None]:
    def change(document: dict) -> None:
        result = document["data"]["result"]
        result[:] = [
            item
            for item in result
            if item["metric"].get("lce_pod") != pod
            or (phase and item["metric"].get("lce_phase") != phase)
        ]

    return change


PARTIAL_CASES = [
    pytest.param(PartialCase(("gpu_count",), GLM), id="gpu-count-misses-a-pod"),
    pytest.param(PartialCase(("gpu_count",), QWEN, replica=1), id="gpu-count-misses-a-replica"),
    pytest.param(PartialCase(("power_energy", "power_gauge"), GLM), id="power-queries-miss-a-pod"),
    pytest.param(
        PartialCase(("tokens",), GLM, said_by="missing_series", phase="prompt"),
        id="prompt-misses-a-pod",
    ),
    pytest.param(
        PartialCase(("tokens",), GLM, said_by="missing_series", phase="generation"),
        id="generation-misses-a-pod",
    ),
]


@pytest.mark.parametrize("case", PARTIAL_CASES)
def test_partial_results_withhold_figures_and_say_so(
    case: PartialCase,
    proxy: FaultProxy,
    make_driver: Callable[..., Driver],
    sim: SimProcess,
    logs: LogWatch,
) -> None:
    cluster = sim.cluster
    key = key_of(cluster, case.model)
    pod = pod_of(cluster, case.model, case.replica).name
    driver = make_driver()
    good = driver.settle(cluster)
    logs.new()
    proxy.inject(Rewrite(drop_pod(pod, case.phase), f"drop {pod}"), driver.promql(*case.queries))

    assert driver.cycle()
    assert proxy.faulted(), "the fault was never applied"
    samples = driver.scrape()
    assert up(samples) == 1
    assert_consistent(samples, cluster)  # withheld where incomplete, never wrong
    if case.said_by == GAP:
        said = one(samples, f"llm_carbon_exporter_{GAP}") >= 1
    else:
        said = error_delta(samples, good).get(case.said_by, 0) >= 1
    if not said:
        raise NotReported(f"{case.said_by} does not report the incomplete result")
    records = [r.getMessage() for r in logs.new(logging.WARNING)]
    assert len(records) == 1 and pod in records[0], records  # one line, naming the pod
    if case.queries[0] in ("gpu_count", "power_energy"):
        assert of_model(samples, key, "llm_carbon_power_watts") == []
        assert info(samples, key)["power_source"] in ("missing", "incomplete")

    proxy.clear()
    driver.recover(lambda s: assert_matches(s, cluster))


def test_no_power_series_at_all_reads_as_upstream_down(
    proxy: FaultProxy, make_driver: Callable[..., Driver], sim: SimProcess, logs: LogWatch
) -> None:
    # Prometheus answers, but no GPU power series match (a renamed metric, a wrong selector):
    # no model has power figures, and that is the upstream's failure to say, not a quiet page.
    cluster = sim.cluster
    driver = make_driver()
    good = driver.settle(cluster)
    logs.new()
    proxy.inject(
        Rewrite(lambda document: document["data"]["result"].clear(), "no power series"),
        driver.promql("power_energy", "power_gauge"),
    )

    assert driver.cycle()
    samples = driver.scrape()
    assert up(samples) == 0
    assert error_delta(samples, good).get("missing_series", 0) >= 1
    records = logs.new(logging.WARNING)
    assert len(records) == 1 and "no GPU power series" in records[0].getMessage()
    assert pick(samples, "llm_carbon_power_watts") == []  # nothing made up
    assert model_keys(samples) == model_keys(good)  # token figures stay

    proxy.clear()
    driver.recover(lambda s: assert_matches(s, cluster))


def test_a_replica_without_gpu_series_gives_no_partial_gpu_figures(
    proxy: FaultProxy, make_driver: Callable[..., Driver], sim: SimProcess
) -> None:
    cluster = sim.cluster
    key = key_of(cluster, QWEN)
    driver = make_driver()
    good = driver.settle(cluster)
    intensity = {"basis": "location"}
    gpus = of_model(good, key, "llm_carbon_gpus")
    grid = of_model(good, key, "llm_carbon_grid_intensity_grams_per_kwh", **intensity)
    assert gpus == [8] and info(good, key)["regions"] == "CAMX,MROW"
    proxy.inject(Rewrite(drop_pod(pod_of(cluster, QWEN, 1).name)), driver.promql("gpu_count"))

    assert driver.cycle()
    samples = driver.scrape()
    assert info(samples, key)["power_source"] == "incomplete"
    assert of_model(samples, key, "llm_carbon_power_watts") == []  # withheld, rightly
    got_gpus = of_model(samples, key, "llm_carbon_gpus")
    figure(got_gpus in ([], gpus), ("gpus", got_gpus, gpus))
    got_grid = of_model(samples, key, "llm_carbon_grid_intensity_grams_per_kwh", **intensity)
    figure(got_grid in ([], [approx(grid[0], rel=0.01)]), ("grid intensity", got_grid, grid))


# ---- faults Prometheus itself carries: swapped clusters


def test_label_values_with_quotes_backslashes_and_non_ascii(
    make_driver: Callable[..., Driver], sim: SimProcess
) -> None:
    driver = make_driver()
    samples = driver.settle(sim.cluster)  # the weird model is part of the base cluster
    key = key_of(sim.cluster, WEIRD)
    # Exactly the model_name vLLM reported, on every per-model family.
    names = {name for name, labels, _ in samples if labels.get("model") == WEIRD}
    assert {
        "llm_carbon_model_info",
        "llm_carbon_power_watts",
        "llm_carbon_energy_joules_per_token",
        "llm_carbon_energy_joules_total",
        "llm_carbon_last_seen_timestamp_seconds",
    } <= names
    assert of_model(samples, key, "llm_carbon_power_watts", scope="gpu") == [approx(300.0)]

    # Served over real HTTP: the exposition escapes it, the landing page HTML-escapes it.
    server = http_server.start(driver.engine, "127.0.0.1:0")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert 'model="acme/\\"quoted\\" back\\\\slash ünïcødé 模型"' in text
        assert WEIRD in {labels.get("model") for _, labels, _ in parse_samples(text)}
        page = requests.get(f"{base}/", timeout=5)
        assert page.status_code == 200
        assert html.escape(WEIRD) in page.text and '"quoted"' not in page.text
    finally:
        server.shutdown()
        server.server_close()


def test_label_value_with_a_newline(
    prom: PrometheusServer, make_driver: Callable[..., Driver], sim: SimProcess
) -> None:
    driver = make_driver()
    before = sim.cluster
    driver.settle(before)
    served = with_pods(before, (*before.pods, NEWLINE_POD))
    sim.set_cluster(served)
    try:
        wait_for_prometheus(prom, served, "the model's series")
        assert prom.query(f'vllm:prompt_tokens_total{{pod="{NEWLINE_POD.name}"}}')
        assert driver.cycle()
        samples = driver.scrape()
        if (NEWLINE_POD.namespace, NEWLINE) not in model_keys(samples):
            raise MissingModel(f"{NEWLINE!r} is not on the page; errors: {errors(samples)}")
        assert_matches(samples, served)
    finally:
        sim.set_cluster(before)
        wait_for_prometheus(prom, before, "the model's series to leave the window")


def test_a_model_appears_then_vanishes(
    prom: PrometheusServer,
    make_driver: Callable[..., Driver],
    sim: SimProcess,
) -> None:
    driver = make_driver()
    before = sim.cluster
    driver.settle(before)
    key = (TRANSIENT_POD.namespace, TRANSIENT_POD.model)

    appeared = with_pods(before, (*before.pods, TRANSIENT_POD))
    sim.set_cluster(appeared)
    try:
        wait_for_prometheus(prom, appeared, "the new model's series")
        driver.recover(lambda s: assert_matches(s, appeared))
        energy = of_model(driver.scrape(), key, "llm_carbon_energy_joules_total", scope="gpu")
        assert energy
    finally:
        sim.set_cluster(before)
    wait_for_prometheus(prom, before, "the model's series to leave the window")
    driver.recover(lambda s: assert_matches(s, before))
    samples = driver.scrape()
    assert key not in model_keys(samples)
    assert [s for s in samples if s[1].get("model") == TRANSIENT_POD.model] == []


def test_a_gpu_series_vanishes_then_returns(
    prom: PrometheusServer,
    make_driver: Callable[..., Driver],
    sim: SimProcess,
    logs: LogWatch,
) -> None:
    """The NYU node's dcgm-exporter disappears: its models keep their token figures, lose
    their power figures (not keep stale ones), and the page counts the pods left without
    GPU series."""
    driver = make_driver()
    before = sim.cluster
    driver.settle(before)
    gone = "gpu-d.hsrn.nyu.edu"
    without = dataclasses.replace(
        before, nodes=tuple(n for n in before.nodes if n.hostname != gone)
    )
    affected = {(p.namespace, p.model) for p in before.pods if p.node == gone}
    logs.new()
    sim.set_cluster(without)
    try:
        wait_for_prometheus(prom, without, "the node's GPU series to leave the window")

        def withheld(samples: Samples) -> None:
            assert one(samples, "llm_carbon_exporter_pods_without_gpu_series") == len(affected)
            for key in affected:
                assert of_model(samples, key, "llm_carbon_power_watts") == []
                assert info(samples, key)["power_source"] == "missing"
            assert_consistent(samples, before)
            assert model_keys(samples) == set(truth(before))

        driver.recover(withheld)
        # Said once per model while it lasts, naming the model, however many cycles.
        records = [r.getMessage() for r in logs.new(logging.WARNING)]
        assert len(records) == len(affected), records
        assert all(any(f"{ns}/{model}" in r for r in records) for ns, model in affected)
    finally:
        sim.set_cluster(before)
    wait_for_prometheus(prom, before, "the node's GPU series to return")
    driver.recover(lambda s: assert_matches(s, before))


def restart_vllm(cluster: SimCluster) -> SimCluster:
    glm = pod_of(cluster, GLM)
    restarted = dataclasses.replace(glm, started_at=time.time())
    return with_pods(cluster, tuple(restarted if p is glm else p for p in cluster.pods))


def reload_driver(cluster: SimCluster) -> SimCluster:
    node = cluster.node(pod_of(cluster, GLM).node)
    reloaded = dataclasses.replace(node, driver_loaded_at=time.time())
    return dataclasses.replace(
        cluster, nodes=tuple(reloaded if n is node else n for n in cluster.nodes)
    )


def assert_plausible_after_reset(samples: Samples, cluster: SimCluster) -> None:
    """Every model's power and tokens while an upstream counter reset is inside the window:
    never negative, never a spike; low by at most what a rate over a reset loses (the increase
    between the last scrape before the reset and the reset, up to one scrape interval, out of
    the sampled span, the window less one scrape interval)."""
    low = 1 - SCRAPE_SECONDS / (WINDOW_SECONDS - SCRAPE_SECONDS) - 0.05
    want = truth(cluster)
    assert model_keys(samples) == set(want)
    for key, row in want.items():
        figures = (
            (of_model(samples, key, "llm_carbon_power_watts", scope="gpu"), row.power_w),
            ([sum(of_model(samples, key, "llm_carbon_tokens_per_second"))], row.tokens_per_second),
        )
        for values, expected in figures:
            for value in values:
                figure(low * expected <= value <= 1.03 * expected, (key, value, expected))


@pytest.mark.parametrize(
    ("change", "counter"),
    [
        pytest.param(restart_vllm, "vllm:prompt_tokens_total", id="vllm-restart"),
        pytest.param(reload_driver, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", id="driver-reload"),
    ],
)
def test_upstream_counters_going_backwards(
    change: Callable[[SimCluster], SimCluster],
    counter: str,
    prom: PrometheusServer,
    make_driver: Callable[..., Driver],
    sim: SimProcess,
) -> None:
    """A counter reset upstream (the new state stays: going back would be a jump forward)."""
    driver = make_driver()
    driver.settle(sim.cluster)
    sim.set_cluster(change(sim.cluster))
    in_window = f"sum(resets({counter}[{WINDOW}])) > 0"
    wait_until(lambda: prom.query(in_window), 10, f"{counter} to go backwards", interval=0.1)
    assert driver.cycle()  # while the reset is inside the window
    samples = driver.scrape()
    assert prom.query(in_window), "the reset left the window before the cycle ran"
    assert up(samples) == 1
    assert_plausible_after_reset(samples, sim.cluster)
    assert "invalid_value" not in error_delta(samples, [])
    # Once the reset has left the window, the figures are exact again.
    wait_until(lambda: not prom.query(in_window), 10, "the reset to leave the window")
    wait_for_prometheus(prom, sim.cluster, "a full window after the reset")
    driver.recover(lambda s: assert_matches(s, sim.cluster))


# ---- a model-count explosion, on its own cluster and Prometheus


def crowded_cluster(models: int, per_node: int = 50) -> SimCluster:
    nodes = tuple(
        SimNode(f"gpu-{i:02d}.sdsc.optiputer.net", GPU_PRODUCTS["H100"], per_node)
        for i in range(-(-models // per_node))
    )
    pods = tuple(
        SimPod(
            "crowd",
            f"model-{i:03d}-0a1b2-c3d4e",
            f"acme/model-{i:03d}",
            nodes[i // per_node].hostname,
            (i % per_node,),
            100.0 + i,  # distinct power: the cap keeps the most power-hungry models
            50.0,
            5.0,
        )
        for i in range(models)
    )
    return SimCluster(nodes=nodes, pods=pods)


def figures_agree(driver: Driver, samples: Samples, cluster: SimCluster) -> None:
    """`assert_consistent`, allowing one more cycle, at the present, a second later: with 200
    targets on a 6 s window, a scrape the loaded machine delays can leave the end of the
    window without a sample, and Prometheus's extrapolation of that cycle's rates falls short
    of it. A wrong figure stays wrong in the next cycle too."""
    try:
        assert_consistent(samples, cluster)
    except WrongFigure:
        time.sleep(1.0)
        driver.next_at_present()
        assert driver.cycle()
        assert_consistent(driver.scrape(), cluster)


def test_model_count_explosion_is_capped_and_counted(
    tmp_path: Path, logs: LogWatch, make_driver: Callable[..., Driver]
) -> None:
    models, cap = 200, 20
    crowded = crowded_cluster(models)
    few = with_pods(crowded, crowded.pods[:10])
    window = "6s"  # 200 targets: scraped every 2s, so that none misses a scrape under load
    endpoints = SimProcess(crowded)
    prometheus = PrometheusServer(
        tmp_path / "prom", endpoints.address, targets(crowded), scrape_interval=2
    )
    try:
        prometheus.start()
        wait_for_prometheus(prometheus, crowded, f"{models} models in Prometheus", window)
        capped = make_driver(
            prometheus.url, **{"exporter.max_models": cap, "prometheus.window": window}
        )
        # A size cap below what a real answer for this many models takes.
        small = make_driver(
            prometheus.url,
            **{"prometheus.max_response_bytes": 16384, "prometheus.window": window},
        )
        logs.new()

        capped.next_at_present()
        assert capped.cycle()
        samples = capped.scrape()
        kept = {f"acme/model-{i:03d}" for i in range(models - cap, models)}
        assert {model for _, model in model_keys(samples)} == kept
        assert one(samples, "llm_carbon_exporter_models") == cap
        assert one(samples, "llm_carbon_exporter_models_dropped") == models - cap
        assert up(samples) == 1
        figures_agree(capped, samples, crowded)
        records = logs.new(logging.WARNING)
        assert len(records) == 1 and f"exporter.max_models={cap}" in records[0].getMessage()

        assert not small.cycle()
        samples = small.scrape()
        assert up(samples) == 0 and error_delta(samples, []) == {"response_too_large": 1}
        records = logs.new(logging.WARNING)
        assert len(records) == 1 and "reason=response_too_large" in records[0].getMessage()

        endpoints.set_cluster(few)
        wait_for_prometheus(prometheus, few, "the crowd to leave the window", window)
        capped.recover(lambda s: assert_matches(s, few))
        assert one(capped.scrape(), "llm_carbon_exporter_models_dropped") == 0
        small.recover(lambda s: assert_matches(s, few))
    finally:
        prometheus.stop()
        endpoints.stop()


# ---- never a previous state's page


def test_metrics_cache_never_serves_a_previous_states_page(
    make_driver: Callable[..., Driver], sim: SimProcess
) -> None:
    """The engine swaps in a new state every cycle and frees the old one; a new state may land
    at a freed state's address (CPython reuses memory). /metrics must still show the newest
    state: here one whose upstream failed, so upstream_up must read 0.

    The reuse is made deterministic (a placeholder state frees the rendered one before the
    next is built); in a running exporter it happens by chance, the more often the more
    cycles pass between two scrapes."""
    driver = make_driver()
    driver.settle(sim.cluster)
    engine = driver.engine
    kind = type(engine.state)
    good = {f.name: getattr(engine.state, f.name) for f in dataclasses.fields(kind)}
    # As the engine publishes it: a failed cycle's state, with the next version number.
    failed = {
        **good,
        "last_cycle_ok": False,
        "up": {UPSTREAM: False},
        "version": good["version"] + 1,
    }
    reused = False
    for _ in range(20):
        engine.state = kind(**good)
        assert up(driver.scrape()) == 1  # the cache now holds this state's page
        rendered = id(engine.state)
        placeholder = kind()
        gc.disable()  # no collection may hand out the freed memory first
        try:
            engine.state = placeholder  # the rendered state is freed here...
            fresh = kind.__new__(kind)  # ...and its memory is the next handed out
        finally:
            gc.enable()
        for name, value in failed.items():
            object.__setattr__(fresh, name, value)
        engine.state = fresh
        if id(fresh) == rendered:
            reused = True
            break
    if not reused:
        raise RuntimeError("no state landed at the rendered state's address")
    samples = parse_samples(driver.cache.body("")[0].decode("utf-8"))
    if up(samples) != 0:
        raise StalePage("upstream_up reads 1 for a state whose upstream failed")


# ---- the real process keeps serving through faults


def test_serve_process_keeps_serving_through_faults(
    proxy: FaultProxy, sim: SimProcess, tmp_path: Path
) -> None:
    interval, stale_after = 1.0, 2
    recover_within = 2 * interval + 1.0  # two intervals, plus a scrape's slack
    proxy.refuse()  # refused at start
    process = ExporterProcess(
        tmp_path,
        {
            "prometheus": {"url": proxy.url, "window": WINDOW, "timeout": "1s"},
            "exporter": {"interval": f"{interval:g}s", "stale_after": stale_after},
            "utilization": {"lookback": "10m"},
        },
    )
    totals = Totals()

    def scrape() -> Samples:
        samples = process.samples()
        assert_finite(samples)
        totals.check(samples)
        return samples

    def current() -> bool:
        samples = scrape()
        if up(samples) != 1:
            return False
        assert_matches(samples, sim.cluster)
        return True

    try:
        process.start(wait_ready=False)
        wait_until(lambda: errors(scrape()).get("connect", 0) >= 1, 10, "a refused cycle")
        samples = scrape()
        assert up(samples) == 0 and per_model_series(samples) == []
        assert requests.get(f"{process.url}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{process.url}/readyz", timeout=5).status_code == 503
        assert "upstream prometheus failed (reason=connect" in process.log()

        proxy.listen()
        wait_until(current, recover_within, "the first good cycle")
        assert process.ready()

        proxy.inject(Reply(500, "internal server error\n", "text/plain"))
        wait_until(lambda: up(scrape()) == 0, recover_within, "upstream_up 0 on HTTP 500")
        assert errors(scrape()).get("http_status", 0) >= 1
        assert per_model_series(scrape())  # within stale_after: the last good cycle's, flagged
        proxy.clear()
        wait_until(current, recover_within, "recovery from HTTP 500")

        proxy.refuse()  # dies mid-run
        wait_until(
            lambda: per_model_series(scrape()) == [],
            stale_after * interval + recover_within,
            "per-model series withdrawn once stale",
        )
        samples = scrape()
        assert up(samples) == 0 and one(samples, "llm_carbon_exporter_models") == 0
        proxy.listen()  # and returns
        wait_until(current, recover_within, "recovery after the upstream returned")

        assert process.process is not None and process.process.poll() is None
        log = process.log()
        assert "Traceback" not in log
        assert "recovered after" in log
    finally:
        process.stop()
