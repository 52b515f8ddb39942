"""The Prometheus-query source: runs the queries of `promql.Queries` (concurrently, at one
evaluation time) and turns their rows into an `Observation`: one `PodGpus` per pod and node,
one `PodTokens` per pod and model, and a `Problem` for every row it cannot use."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from exporter.config import Config
from exporter.model.observations import (
    ENERGY_COUNTER,
    POWER_GAUGE,
    ModelHistory,
    Observation,
    PodGpus,
    PodTokens,
    SharedGpu,
    pods_serving,
)
from exporter.model.problems import (
    INVALID_VALUE,
    MISSING_SERIES,
    Problem,
    UpstreamError,
    pod_ref,
)
from exporter.sources.prometheus_api import PrometheusClient, Sample
from exporter.sources.promql import GPU_ROW, REQUIRED, TOKEN_ROW, Queries
from exporter.sources.validation import is_count, is_valid_value

UPSTREAM = "prometheus"
GpuKey = tuple[str, ...]  # GPU_ROW values: namespace, pod, node, GPU model


def _keyed(samples: list[Sample]) -> dict[GpuKey, float]:
    """Rows of a per-pod GPU query by pod key; rows of GPUs no pod holds are dropped."""
    rows: dict[GpuKey, float] = {}
    for sample in samples:
        key = tuple(sample.labels.get(label, "") for label in GPU_ROW)
        if key[0] and key[1]:
            rows[key] = sample.value
    return rows


def _invalid(query: str, value: float, key: GpuKey, consequence: str) -> Problem:
    pod = pod_ref(key[0], key[1])
    return Problem(
        UPSTREAM,
        INVALID_VALUE,
        f"query {query}: {value!r} for pod {pod}; {consequence}",
        frozenset({pod}),
    )


@dataclass(frozen=True)
class _SharedReadings:
    """The `shared_gpus` query's rows: per pod, each shared GPU's power by reading, and the
    pods holding each (node, GPU)."""

    watts: Mapping[GpuKey, Mapping[str, Mapping[str, float]]]
    holders: Mapping[tuple[str, str], frozenset[GpuKey]]

    @classmethod
    def of(cls, samples: list[Sample]) -> _SharedReadings:
        watts: dict[GpuKey, dict[str, dict[str, float]]] = defaultdict(dict)
        holders: dict[tuple[str, str], set[GpuKey]] = defaultdict(set)
        for sample in samples:
            key = tuple(sample.labels.get(label, "") for label in GPU_ROW)
            gpu_id = sample.labels.get("lce_gpu_id", "")
            if not (key[0] and key[1] and gpu_id):
                continue
            holders[(key[2], gpu_id)].add(key)
            reading = sample.labels.get("lce_reading", "")
            watts[key].setdefault(gpu_id, {})[reading] = sample.value
        return cls(watts, {k: frozenset(v) for k, v in holders.items()})

    def of_pod(
        self, key: GpuKey, source: str, problems: list[Problem]
    ) -> tuple[SharedGpu, ...] | None:
        """The pod's shared GPUs in the reading its power uses; None if one is invalid (its
        replicas could not count the GPU once: the pod's power is withheld)."""
        out = []
        for gpu_id, readings in sorted(self.watts.get(key, {}).items()):
            watts = readings.get(source, math.nan)
            if not is_valid_value(watts):
                problems.append(
                    _invalid("shared_gpus", watts, key, "its power is unknown this cycle")
                )
                return None
            out.append(SharedGpu(gpu_id, watts, len(self.holders[(key[2], gpu_id)])))
        return tuple(out)


def _pod_power(
    key: GpuKey, tables: Mapping[str, Mapping[GpuKey, float]], problems: list[Problem]
) -> tuple[float, str] | None:
    """(W, reading) of a pod: the energy counter's rate where valid, else the gauge's mean."""
    for query, kind in (("power_energy", ENERGY_COUNTER), ("power_gauge", POWER_GAUGE)):
        value = tables[query].get(key)
        if value is None:
            continue
        if is_valid_value(value):
            return value, kind
        fallback = (
            "its power is unknown this cycle" if kind == POWER_GAUGE else "trying the power gauge"
        )
        problems.append(_invalid(query, value, key, fallback))
    return None


def _busy(key: GpuKey, busy: Mapping[GpuKey, float], problems: list[Problem]) -> float | None:
    ratio = busy.get(key)
    if ratio is not None and not (is_valid_value(ratio) and ratio <= 1):
        problems.append(_invalid("busy", ratio, key, "busy ratio withheld"))
        return None
    return ratio


def gpu_rows(results: Mapping[str, list[Sample]], problems: list[Problem]) -> list[PodGpus]:
    """One row per pod and node with a valid GPU count and power (and, for GPUs it shares,
    valid shared readings); every row left out says why in `problems`."""
    tables = {name: _keyed(results.get(name, [])) for name in ("power_energy", "power_gauge")}
    busy = _keyed(results.get("busy", []))
    shared = _SharedReadings.of(results.get("shared_gpus", []))
    rows = []
    for key, gpus in _keyed(results.get("gpu_count", [])).items():
        if not is_count(gpus):
            problems.append(_invalid("gpu_count", gpus, key, "its GPUs are unknown this cycle"))
            continue
        power = _pod_power(key, tables, problems)
        held = shared.of_pod(key, power[1], problems) if power is not None else None
        if power is None or held is None:
            continue  # its model's power is then incomplete, and withheld
        rows.append(
            PodGpus(
                namespace=key[0],
                pod=key[1],
                node=key[2],
                gpu_model=key[3],
                gpus=int(gpus),
                power_w=power[0],
                power_source=power[1],
                shared=held,
                busy_ratio=_busy(key, busy, problems),
            )
        )
    return rows


def token_rows(
    results: Mapping[str, list[Sample]], problems: list[Problem]
) -> tuple[list[PodTokens], set[tuple[str, str]]]:
    """Token rates per pod and model, and the pods that served a model left out. A model
    with an invalid or one-sided row (a pod in one token query but not the other: a partial
    result) is left out this cycle, with a problem, rather than shown with a wrong rate."""
    rates: dict[tuple[str, ...], list[float | None]] = {}
    left_out: set[tuple[str, str]] = set()
    for index, name in enumerate(("prompt", "generation")):
        for sample in results[name]:
            key = tuple(sample.labels.get(label, "") for label in TOKEN_ROW)
            if not all(key):
                continue
            rates.setdefault(key, [None, None])[index] = sample.value
            if not is_valid_value(sample.value):
                problems.append(
                    Problem.of_pods(
                        UPSTREAM,
                        INVALID_VALUE,
                        f"query {name}: {sample.value!r} for {key[0]}/{key[1]} model "
                        f"{key[2]!r}; model left out this cycle",
                        [pod_ref(key[0], key[1])],
                    )
                )
                left_out.add((key[0], key[2]))
    for (ns, pod, model), (prompt, generation) in rates.items():
        if prompt is None or generation is None:
            missing = "prompt" if prompt is None else "generation"
            problems.append(
                Problem.of_pods(
                    UPSTREAM,
                    MISSING_SERIES,
                    f"pod {ns}/{pod} model {model!r} has no {missing} token series; model "
                    "left out this cycle",
                    [pod_ref(ns, pod)],
                )
            )
            left_out.add((ns, model))
    rows = [
        PodTokens(namespace=ns, pod=pod, model=model, prompt_tps=p, generation_tps=g)
        for (ns, pod, model), (p, g) in sorted(rates.items())
        if (ns, model) not in left_out and p is not None and g is not None
    ]
    served = [(ns, pod, model) for ns, pod, model in rates]
    return rows, pods_serving(served, left_out)


class PrometheusSource:
    """Fetches one `Observation` per call from a Prometheus-compatible query API."""

    name = "prometheus"
    upstreams = ("prometheus",)
    gpu_upstream = "prometheus"

    def __init__(
        self,
        config: Config,
        client: PrometheusClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.client = client or PrometheusClient(config.prometheus)
        self.queries = Queries.build(config)
        self.window = config.prometheus.window
        self._pool = ThreadPoolExecutor(
            max_workers=len(self.queries.per_cycle()), thread_name_prefix="promql"
        )
        self.clock = clock or (lambda: time.time())  # late-bound: freezegun can move it
        self._history: dict[tuple[str, str], ModelHistory] = {}
        self._history_at: float | None = None

    @property
    def requests_by_upstream(self) -> dict[str, int]:
        return {UPSTREAM: self.client.requests_made}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    def fetch(self) -> Observation:
        at = self.clock()
        problems: list[Problem] = []
        results = self._run_queries(at, problems)
        blind = bool(
            not results["power_energy"] and not results["power_gauge"] and results["prompt"]
        )
        if blind:
            problems.append(
                Problem(
                    UPSTREAM,
                    MISSING_SERIES,
                    "no GPU power series (energy counter or power gauge) matched; check "
                    "upstream.metrics and prometheus.gpu_selector",
                )
            )
        self._refresh_history(at, problems)
        tokens, unsure_pods = token_rows(results, problems)
        # A pod whose other model was left out cannot split its power honestly this cycle.
        gpus = [g for g in gpu_rows(results, problems) if (g.namespace, g.pod) not in unsure_pods]
        return Observation(
            time=at,
            gpus=tuple(gpus),
            tokens=tuple(tokens),
            history=dict(self._history),
            problems=tuple(problems),
            blind=frozenset({UPSTREAM} if blind else ()),
        )

    def _run_queries(self, at: float, problems: list[Problem]) -> dict[str, list[Sample]]:
        """Every per-cycle query's rows. The queries run concurrently (all at the same
        evaluation time), so a cycle takes about as long as its slowest query, not their
        sum: a slow upstream cannot push a cycle past the staleness limit. A required
        query's failure, or both power queries', fails the cycle; another's is a problem."""
        queries = self.queries.per_cycle()
        futures = {
            name: self._pool.submit(self.client.query, promql, at)
            for name, promql in queries.items()
        }
        results: dict[str, list[Sample]] = {}
        failed: dict[str, UpstreamError] = {}
        for name in queries:
            try:
                results[name] = futures[name].result()
            except UpstreamError as exc:
                failed[name] = exc
                results[name] = []
        for name, error in failed.items():
            if name in REQUIRED:
                raise error
            problems.append(error.problem(UPSTREAM, f"query {name}: "))
        if "power_energy" in failed and "power_gauge" in failed:
            raise failed["power_gauge"]  # no power at all: nothing honest to compute
        return results

    # ---- look-back history, refreshed every utilization.refresh

    def _refresh_history(self, at: float, problems: list[Problem]) -> None:
        due = self._history_at is None or at - self._history_at >= self.config.utilization.refresh
        if not due:
            return
        history: dict[tuple[str, str], dict[str, float]] = {}
        for name, promql in self.queries.lookback().items():
            try:
                samples = self.client.query(promql, at)
            except UpstreamError as exc:
                problems.append(exc.problem(UPSTREAM, f"look-back query {name}: "))
                self._history_at = at  # keep the previous history; retry at the next refresh
                return
            for sample in samples:
                key = (sample.labels.get("lce_namespace", ""), sample.labels.get("lce_model", ""))
                if not all(key):
                    continue
                if is_valid_value(sample.value):
                    history.setdefault(key, {})[name] = sample.value
                else:
                    problems.append(
                        Problem(
                            UPSTREAM,
                            INVALID_VALUE,
                            f"look-back query {name}: {sample.value!r} for {key[0]} model "
                            f"{key[1]!r}; ignored",
                        )
                    )
        self._history = {
            key: ModelHistory(peak_tokens_per_second=values.get("peak_tokens"))
            for key, values in history.items()
        }
        self._history_at = at
