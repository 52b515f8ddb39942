"""The Prometheus-query source: a constant number of PromQL instant queries per cycle, each
aggregated on the server to one row per pod, turned into an `Observation`.

Label handling happens in PromQL: each canonical label (`lce_pod`, ...) is filled from the
first configured upstream label that is present, so `exported_pod` (dcgm-exporter scraped with
honorLabels false) wins over `pod`, and `Hostname` and `hostname` both work.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from exporter.config import Config, as_dict
from exporter.durations import promql_duration
from exporter.observations import (
    ENERGY_COUNTER,
    POWER_GAUGE,
    ModelHistory,
    Observation,
    PodGpus,
    PodTokens,
    SharedGpu,
    pods_serving,
)
from exporter.sources.http_api import (
    INVALID_VALUE,
    MISSING_SERIES,
    PrometheusClient,
    Sample,
    UpstreamError,
    is_count,
    is_valid_value,
)

log = logging.getLogger(__name__)

UPSTREAM = "prometheus"
POD = ("lce_namespace", "lce_pod")
GPU_ROW = (*POD, "lce_node", "lce_gpu_model")
TOKEN_ROW = (*POD, "lce_model")
MODEL = ("lce_namespace", "lce_model")
# Labels that tell apart series of one GPU that run at the same time (dcgm-exporter's MIG
# instance and shared-GPU copy labels, and the scrape job); `instance` and the dcgm-exporter's
# own `pod` are left out, as they change when its pod is replaced.
SIDE_BY_SIDE = ("GPU_I_ID", "vgpu", "job")


def _by(labels: tuple[str, ...]) -> str:
    return ", ".join(labels)


def _normalize(expr: str, choices: Mapping[str, list[str]]) -> str:
    """Wrap `expr` in label_replace calls so `lce_<key>` holds the first present label of
    each `choices[key]` (the least preferred is applied first, the preferred last)."""
    for key, labels in choices.items():
        for label in reversed(labels):
            expr = f'label_replace({expr}, "lce_{key}", "$1", "{label}", "(?s)(.+)")'
    return expr


@dataclass(frozen=True)
class Queries:
    """Every PromQL expression the source runs, built once from the configuration."""

    power_energy: str
    power_gauge: str
    gpu_count: str
    shared_gpus: str
    busy: str
    prompt: str
    generation: str
    peak_tokens: str

    @classmethod
    def build(cls, config: Config) -> Queries:
        names = config.upstream.metrics
        window = promql_duration(config.prometheus.window)
        window_seconds = config.prometheus.window
        lookback = promql_duration(config.utilization.lookback)
        gpu_sel = config.prometheus.gpu_selector.strip().strip("{}")
        tok_sel = config.prometheus.token_selector.strip().strip("{}")
        gpu_labels = as_dict(config.upstream.gpu_labels)
        tok_labels = as_dict(config.upstream.token_labels)

        def gpu(fn: str, metric: str) -> str:
            return _normalize(f"{fn}({metric}{{{gpu_sel}}}[{window}])", gpu_labels)

        def tok(metric: str) -> str:
            return _normalize(f"rate({metric}{{{tok_sel}}}[{window}])", tok_labels)

        def one_gpu(fn: str, metric: str) -> str:
            # One value per physical GPU: copies side by side (MIG instances, vgpu copies,
            # another scrape job) repeat their GPU's energy and power, so take the largest.
            series = gpu(fn, metric)
            if fn == "increase":
                # A counter's series also follow each other: a replaced dcgm-exporter pod is
                # scraped at a new address, so each series covers part of the window and only
                # their increases added up cover all of it. (Not rate(): VictoriaMetrics
                # divides each series' increase by the time its own samples span.)
                series = (
                    f"sum by ({_by((*GPU_ROW, 'lce_gpu_id', *SIDE_BY_SIDE))}) ({series}) "
                    f"/ {window_seconds:g}"
                )
            return f"max by ({_by((*GPU_ROW, 'lce_gpu_id'))}) ({series})"

        def per_gpu(agg: str, fn: str, metric: str) -> str:
            return f"{agg} by ({_by(GPU_ROW)}) ({one_gpu(fn, metric)})"

        def seen(row: tuple[str, ...]) -> str:
            return " or ".join(
                f"max by ({_by((*row, 'lce_gpu_id'))}) ({gpu('last_over_time', metric)})"
                for metric in (names.gpu_power, names.gpu_energy)
            )

        def reading(expr: str, kind: str) -> str:
            # Which reading a row holds, so each pod's shared GPUs use its own power source.
            return f'label_replace({expr}, "lce_reading", "{kind}", "", "")'

        energy_w = f"{one_gpu('increase', names.gpu_energy)} / 1000"
        gauge_w = one_gpu("avg_over_time", names.gpu_power)

        model_tps = (
            f"sum by ({_by(MODEL)}) ({tok(names.prompt_tokens)}) "
            f"+ sum by ({_by(MODEL)}) ({tok(names.generation_tokens)})"
        )

        return cls(
            power_energy=f"{per_gpu('sum', 'increase', names.gpu_energy)} / 1000",
            power_gauge=per_gpu("sum", "avg_over_time", names.gpu_power),
            gpu_count=f"count by ({_by(GPU_ROW)}) ({seen(GPU_ROW)})",
            # One row per (pod, GPU) for GPUs that more than one pod holds (MIG slices,
            # time-sliced copies), with the GPU's power: few rows, and what lets a model whose
            # replicas share a GPU count it once.
            shared_gpus=(
                f"({reading(energy_w, ENERGY_COUNTER)} or {reading(gauge_w, POWER_GAUGE)}) "
                f"and on (lce_node, lce_gpu_id) "
                f"(count by (lce_node, lce_gpu_id) ({seen(GPU_ROW)}) > 1)"
            ),
            busy=(
                f"{per_gpu('avg', 'avg_over_time', names.gpu_engine_active)} "
                f"or {per_gpu('avg', 'avg_over_time', names.gpu_util)} / 100"
            ),
            prompt=f"sum by ({_by(TOKEN_ROW)}) ({tok(names.prompt_tokens)})",
            generation=f"sum by ({_by(TOKEN_ROW)}) ({tok(names.generation_tokens)})",
            peak_tokens=f"max_over_time(({model_tps})[{lookback}:{window}])",
        )

    def per_cycle(self) -> dict[str, str]:
        return {
            "power_energy": self.power_energy,
            "power_gauge": self.power_gauge,
            "gpu_count": self.gpu_count,
            "shared_gpus": self.shared_gpus,
            "busy": self.busy,
            "prompt": self.prompt,
            "generation": self.generation,
        }

    def lookback(self) -> dict[str, str]:
        return {"peak_tokens": self.peak_tokens}


# Queries whose failure fails the cycle; the others degrade one figure.
REQUIRED = ("gpu_count", "prompt", "generation")


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
        problems: list[tuple[str, str, str]] = []
        results: dict[str, list[Sample]] = {}
        failed: dict[str, UpstreamError] = {}
        # The queries run concurrently (all at the same evaluation time), so a cycle takes
        # about as long as its slowest query, not their sum: a slow upstream cannot push a
        # cycle past the staleness limit.
        queries = self.queries.per_cycle()
        futures = {
            name: self._pool.submit(self.client.query, promql, at)
            for name, promql in queries.items()
        }
        for name in queries:
            try:
                results[name] = futures[name].result()
            except UpstreamError as exc:
                failed[name] = exc
                results[name] = []
        for name, exc in failed.items():
            if name in REQUIRED:
                raise exc
            problems.append((UPSTREAM, exc.reason, f"query {name}: {exc}"))
        if "power_energy" in failed and "power_gauge" in failed:
            raise failed["power_gauge"]  # no power at all: nothing honest to compute
        blind = not results["power_energy"] and not results["power_gauge"] and results["prompt"]
        if blind:
            problems.append(
                (
                    UPSTREAM,
                    MISSING_SERIES,
                    "no GPU power series (energy counter or power "
                    "gauge) matched; check upstream.metrics and prometheus.gpu_selector",
                )
            )
        self._refresh_history(at, problems)
        tokens, unsure_pods = self._token_rows(results, problems)
        # A pod whose other model was left out cannot split its power honestly this cycle.
        gpus = [
            g for g in self._gpu_rows(results, problems) if (g.namespace, g.pod) not in unsure_pods
        ]
        return Observation(
            time=at,
            gpus=tuple(gpus),
            tokens=tuple(tokens),
            history=dict(self._history),
            problems=tuple(problems),
            blind=frozenset({UPSTREAM} if blind else ()),
        )

    # ---- per-cycle rows

    def _gpu_rows(self, results: dict[str, list[Sample]], problems: list) -> list[PodGpus]:
        def keyed(name: str) -> dict[tuple[str, ...], float]:
            rows: dict[tuple[str, ...], float] = {}
            for sample in results.get(name, []):
                key = tuple(sample.labels.get(label, "") for label in GPU_ROW)
                if key[0] and key[1]:  # else a GPU no pod holds
                    rows[key] = sample.value
            return rows

        def invalid(name: str, value: float, key: tuple[str, ...], consequence: str) -> None:
            problems.append(
                (
                    UPSTREAM,
                    INVALID_VALUE,
                    f"query {name}: {value!r} for pod {key[0]}/{key[1]}; {consequence}",
                )
            )

        power_tables = (
            ("power_energy", keyed("power_energy"), ENERGY_COUNTER),
            ("power_gauge", keyed("power_gauge"), POWER_GAUGE),
        )
        busy = keyed("busy")
        # (pod row) -> GPU id -> reading -> W, for GPUs more than one pod holds
        shared: dict[tuple[str, ...], dict[str, dict[str, float]]] = defaultdict(dict)
        holders: dict[tuple[str, str], set[tuple[str, ...]]] = defaultdict(set)
        for sample in results.get("shared_gpus", []):
            key = tuple(sample.labels.get(label, "") for label in GPU_ROW)
            gpu_id = sample.labels.get("lce_gpu_id", "")
            if not (key[0] and key[1] and gpu_id):
                continue
            holders[(key[2], gpu_id)].add(key)
            shared[key].setdefault(gpu_id, {})[sample.labels.get("lce_reading", "")] = sample.value

        def shared_gpus(key: tuple[str, ...], source: str) -> tuple[SharedGpu, ...] | None:
            """The pod's shared GPUs in the reading its power uses; None if one is invalid
            (its replicas could not count the GPU once: the pod's power is withheld)."""
            out = []
            for gpu_id, readings in sorted(shared.get(key, {}).items()):
                watts = readings.get(source, math.nan)
                if not is_valid_value(watts):
                    invalid("shared_gpus", watts, key, "its power is unknown this cycle")
                    return None
                out.append(SharedGpu(gpu_id, watts, len(holders[(key[2], gpu_id)])))
            return tuple(out)

        rows = []
        for key, gpus in keyed("gpu_count").items():
            if not is_count(gpus):
                invalid("gpu_count", gpus, key, "its GPUs are unknown this cycle")
                continue
            power, source = None, ""
            for name, table, kind in power_tables:
                if key not in table:
                    continue
                if is_valid_value(table[key]):
                    power, source = table[key], kind
                    break
                invalid(
                    name,
                    table[key],
                    key,
                    "its power is unknown this cycle"
                    if name == "power_gauge"
                    else "trying the power gauge",
                )
            held = shared_gpus(key, source) if power is not None else None
            if power is None or held is None:
                continue  # its model's power is then incomplete, and withheld
            ratio = busy.get(key)
            if ratio is not None and not (is_valid_value(ratio) and ratio <= 1):
                invalid("busy", ratio, key, "busy ratio withheld")
                ratio = None
            rows.append(
                PodGpus(
                    namespace=key[0],
                    pod=key[1],
                    node=key[2],
                    gpu_model=key[3],
                    gpus=int(gpus),
                    power_w=power,
                    power_source=source,
                    shared=held,
                    busy_ratio=ratio,
                )
            )
        return rows

    def _token_rows(
        self, results: dict[str, list[Sample]], problems: list
    ) -> tuple[list[PodTokens], set[tuple[str, str]]]:
        """Token rates per pod and model, and the pods that served a model left out. A model
        with an invalid or one-sided row (a pod in one token query but not the other: a
        partial result) is left out this cycle, with a problem, rather than shown with a wrong
        rate."""
        rates: dict[tuple[str, str, str], list[float | None]] = {}
        left_out: set[tuple[str, str]] = set()
        for index, name in enumerate(("prompt", "generation")):
            for sample in results[name]:
                key = tuple(sample.labels.get(label, "") for label in TOKEN_ROW)
                if not all(key):
                    continue
                rates.setdefault(key, [None, None])[index] = sample.value
                if not is_valid_value(sample.value):
                    problems.append(
                        (
                            UPSTREAM,
                            INVALID_VALUE,
                            f"query {name}: {sample.value!r} "
                            f"for {key[0]}/{key[1]} model {key[2]!r}; model left out "
                            "this cycle",
                        )
                    )
                    left_out.add((key[0], key[2]))
        for (ns, pod, model), (prompt, generation) in rates.items():
            if prompt is None or generation is None:
                missing = "prompt" if prompt is None else "generation"
                problems.append(
                    (
                        UPSTREAM,
                        MISSING_SERIES,
                        f"pod {ns}/{pod} model {model!r} has "
                        f"no {missing} token series; model left out this cycle",
                    )
                )
                left_out.add((ns, model))
        rows = [
            PodTokens(namespace=ns, pod=pod, model=model, prompt_tps=p, generation_tps=g)
            for (ns, pod, model), (p, g) in sorted(rates.items())
            if (ns, model) not in left_out and p is not None and g is not None
        ]
        return rows, pods_serving(rates, left_out)

    # ---- look-back history, refreshed every utilization.refresh

    def _refresh_history(self, at: float, problems: list) -> None:
        due = self._history_at is None or at - self._history_at >= self.config.utilization.refresh
        if not due:
            return
        history: dict[tuple[str, str], dict[str, float]] = {}
        for name, promql in self.queries.lookback().items():
            try:
                samples = self.client.query(promql, at)
            except UpstreamError as exc:
                problems.append((UPSTREAM, exc.reason, f"look-back query {name}: {exc}"))
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
                        (
                            UPSTREAM,
                            INVALID_VALUE,
                            f"look-back query {name}: "
                            f"{sample.value!r} for {key[0]} model {key[1]!r}; ignored",
                        )
                    )
        self._history = {
            key: ModelHistory(peak_tokens_per_second=values.get("peak_tokens"))
            for key, values in history.items()
        }
        self._history_at = at
