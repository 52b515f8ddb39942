"""The Prometheus-query source: runs the queries of `promql.Queries` (concurrently, at one
evaluation time) and turns their rows into an `Observation`: one `PodGpus` per pod and node,
one `PodTokens` per pod and model, and a `Problem` for every row it cannot use."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from exporter.config import Config
from exporter.model.observations import ModelHistory, Observation, pods_serving
from exporter.model.problems import (
    INVALID_VALUE,
    MISSING_SERIES,
    Problem,
    UpstreamError,
)
from exporter.sources import recording
from exporter.sources.plausibility import Plausibility
from exporter.sources.prometheus_api import PrometheusClient, Sample
from exporter.sources.prometheus_rows import gpu_rows
from exporter.sources.prometheus_tokens import token_rows
from exporter.sources.promql import GLITCH, PHASE, RESETS, TOKEN_PHASES
from exporter.sources.queries import REQUIRED, Queries

UPSTREAM = "prometheus"
log = logging.getLogger("exporter")


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
        self.plausible = Plausibility(config)
        self.window = config.prometheus.window
        self._pool = ThreadPoolExecutor(
            max_workers=len(self.queries.per_cycle()), thread_name_prefix="promql"
        )
        self.clock = clock or (lambda: time.time())  # late-bound: freezegun can move it
        # prometheus.namespaces narrows the queries; rows are checked again here, as a series'
        # namespace label is only known for sure once the query has filled `lce_namespace`.
        namespaces = config.prometheus.namespaces
        self.shard = re.compile(namespaces) if namespaces else None
        self.rules_in_use = False  # reading the recording rules rather than the raw series
        self._history: dict[tuple[str, str], ModelHistory] = {}
        self._history_at: float | None = None

    @property
    def reads(self) -> str:
        """What the cycles read: the exporter's recording rules, or the raw series."""
        return "recording_rules" if self.rules_in_use else "queries"

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
        self._extra(at, results, problems)
        if self.shard is not None:
            for name, rows in results.items():
                results[name] = [s for s in rows if self._in_shard(s)]
        blind = bool(
            not results["power_energy"] and not results["power_gauge"] and results["tokens"]
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
        tokens, left_out, served = token_rows(results, self.plausible, problems)
        # A pod whose other model was left out cannot split its power honestly this cycle.
        unsure = pods_serving(served, left_out)
        gpus = [
            g
            for g in gpu_rows(results, self.plausible, problems)
            if (g.namespace, g.pod) not in unsure
        ]
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
        results: dict[str, list[Sample]] = {}
        failed: dict[str, UpstreamError] = {}
        if self.rules_in_use:
            self._ask(self.queries.recorded, at, results, failed)
            stopped = []
            for name in self.queries.recorded:
                results[name], evaluated = recording.rows(results[name])
                if not evaluated and name not in failed:
                    stopped.append(name)
            if stopped:  # the rules stopped being evaluated: the raw series, from now on
                log.warning(
                    "recording rules %s no longer evaluated: querying the raw series",
                    ",".join(stopped),
                )
                self.rules_in_use = False
                self._ask({name: queries[name] for name in stopped}, at, results, failed)
        else:
            self._ask(queries, at, results, failed)
        for name, error in failed.items():
            if name in REQUIRED:
                raise error
            problems.append(error.problem(UPSTREAM, f"query {name}: "))
        if "power_energy" in failed and "power_gauge" in failed:
            raise failed["power_gauge"]  # no power at all: nothing honest to compute
        return results

    def _ask(
        self,
        queries: Mapping[str, str],
        at: float,
        results: dict[str, list[Sample]],
        failed: dict[str, UpstreamError],
    ) -> None:
        futures = {
            name: self._pool.submit(self.client.query, promql, at)
            for name, promql in queries.items()
        }
        for name in queries:
            try:
                results[name] = futures[name].result()
                failed.pop(name, None)
            except UpstreamError as exc:
                failed[name] = exc
                results[name] = []

    def _extra(self, at: float, results: dict[str, list[Sample]], problems: list[Problem]) -> None:
        """At most one request after the per-cycle queries: the follow-up their rows call
        for (MIG instances, GPUs more than one pod holds, counters that went backwards), and
        every utilization.refresh the look-back (with the recording rules' detection), its
        rows put where they belong. Should the follow-up fail, a counter that went backwards
        counts as one that stepped back and shared GPUs' power is unknown: those figures are
        withheld this cycle rather than risked. Should the look-back fail, the previous
        history stays until the next refresh."""
        mig = any("lce_gpu_id" in sample.labels for sample in results["mig"])
        energy = [s for s in results["power_energy"] if RESETS in s.labels]
        tokens = [s for s in results["tokens"] if RESETS in s.labels]
        phases = sorted({s.labels.get(PHASE, "") for s in tokens} & set(TOKEN_PHASES))
        follow_up = self.queries.follow_up(mig, bool(results["gpu_holders"]), bool(energy), phases)
        last = self._history_at
        refresh = last is None or at - last >= self.config.utilization.refresh
        parts = [follow_up] if follow_up else []
        parts += [self.queries.refresh] if refresh else []
        promql = " or ".join(parts)
        results["shared_gpus"] = []
        if not promql:
            return
        if refresh:
            self._history_at = at
        try:
            rows = self.client.query(promql, at)
        except UpstreamError as exc:
            what = "query follow_up" if follow_up else "look-back query peak_tokens"
            problems.append(exc.problem(UPSTREAM, f"{what}: "))
            rows = [Sample({**s.labels, GLITCH: "1"}, 1.0) for s in (*energy, *tokens)]
            rows += _unknown_shared(results["gpu_holders"], results["gpu_count"])
            refresh = False
        peaks, found = [], []
        for sample in rows:
            labels = sample.labels
            if recording.HASH in labels:
                found.append(sample)
            elif "lce_reading" in labels:
                results["shared_gpus" if labels.get("lce_pod") else "mig"].append(sample)
            elif PHASE in labels:
                results["tokens"].append(sample)
            elif "lce_model" in labels:
                peaks.append(sample)
            else:
                results["power_energy"].append(sample)
        if refresh:
            self._take_history(peaks, problems)
            self._take_rules(found)

    def _take_rules(self, found: list[Sample]) -> None:
        """Whether the exporter's recording rules, with today's expressions, are loaded
        (said when it changes; with recording_rules off nothing is found)."""
        now = recording.in_force(found, self.queries.per_cycle())
        if now != self.rules_in_use:
            log.info(
                "recording rules %s: %s",
                "found" if now else "absent or for another configuration",
                "reading them" if now else "querying the raw series",
            )
        self.rules_in_use = now

    def _in_shard(self, sample: Sample) -> bool:
        namespace = sample.labels.get("lce_namespace")
        return namespace is None or bool(self.shard and self.shard.fullmatch(namespace))

    def _take_history(self, samples: list[Sample], problems: list[Problem]) -> None:
        history: dict[tuple[str, str], float] = {}
        for sample in samples:
            key = (sample.labels.get("lce_namespace", ""), sample.labels.get("lce_model", ""))
            if not all(key):
                continue
            if self.plausible.token_rate(sample.value) is None:
                history[key] = sample.value
            else:
                problems.append(
                    Problem(
                        UPSTREAM,
                        INVALID_VALUE,
                        f"look-back query peak_tokens: {sample.value!r} for {key[0]} model "
                        f"{key[1]!r}; ignored",
                    )
                )
        self._history = {
            key: ModelHistory(peak_tokens_per_second=peak) for key, peak in history.items()
        }


def _unknown_shared(holders: list[Sample], gpu_count: list[Sample]) -> list[Sample]:
    """For each GPU more than one pod holds, a row of unknown power for every pod on its
    node (which of them hold it is the follow-up's to say): their power is withheld."""
    pods = [s.labels for s in gpu_count if s.labels.get("lce_pod")]
    return [
        Sample({**pod, "lce_gpu_id": gpu.labels["lce_gpu_id"], "lce_reading": "unknown"}, math.nan)
        for gpu in holders
        for pod in pods
        if pod.get("lce_node") == gpu.labels.get("lce_node") and gpu.labels.get("lce_gpu_id")
    ]
