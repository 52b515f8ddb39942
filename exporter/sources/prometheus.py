"""The Prometheus-query source: runs the queries of `promql.Queries` (concurrently, at one
evaluation time) and turns their rows into an `Observation`: one `PodGpus` per pod and node,
one `PodTokens` per pod and model, and a `Problem` for every row it cannot use."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from exporter.config import Config
from exporter.model.observations import ModelHistory, Observation, pods_serving
from exporter.model.problems import (
    INVALID_VALUE,
    MISSING_SERIES,
    Problem,
    UpstreamError,
)
from exporter.sources.plausibility import Plausibility
from exporter.sources.prometheus_api import PrometheusClient, Sample
from exporter.sources.prometheus_rows import gpu_rows, token_rows
from exporter.sources.promql import REQUIRED, Queries

UPSTREAM = "prometheus"


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
        self._refresh_history(at, problems)
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
                if self.plausible.token_rate(sample.value) is None:
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
