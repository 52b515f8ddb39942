"""Reading the upstream for `diagnose`: one cycle of the configured source (two in direct
mode, as a rate needs two samples), run by an engine as `serve` would, plus what the checks
need that a cycle does not keep: the inventory of series and, for a query API, which API it
is. The only I/O of the diagnosis; never raises for upstream trouble."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace

from exporter.config import Config
from exporter.diagnosis import inventory
from exporter.diagnosis.checks import NETWORK
from exporter.diagnosis.facts import Facts, Inventory, LiveGrid
from exporter.engine import Engine
from exporter.model.interfaces import Source
from exporter.model.join import join
from exporter.model.observations import Observation
from exporter.model.problems import Problem, UpstreamError
from exporter.sources.direct import DirectSource
from exporter.sources.grid_live import LiveGridFeed, live_grid
from exporter.sources.prometheus import PrometheusSource
from exporter.sources.prometheus_api import PrometheusClient, Sample
from exporter.sources.promql_inventory import inventory as inventory_queries
from exporter.sources.servers import SERVERS
from exporter.text import redact

BUILD_INFO = "/api/v1/status/buildinfo"
THANOS_STORES = "/api/v1/stores"  # Thanos Querier's own endpoint


class Recording:
    """A source that keeps the last observation it handed to the engine."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.last: Observation | None = None

    name = property(lambda self: self.source.name)
    upstreams = property(lambda self: self.source.upstreams)
    gpu_upstream = property(lambda self: self.source.gpu_upstream)
    window = property(lambda self: self.source.window)
    reads = property(lambda self: self.source.reads)
    requests_by_upstream = property(lambda self: self.source.requests_by_upstream)

    def fetch(self) -> Observation:
        self.last = self.source.fetch()
        return self.last

    def close(self) -> None:
        self.source.close()


def api_name(build: object, thanos: bool) -> str:
    """Which Prometheus-compatible API answers, from its build information ("" where it
    cannot be told): Mimir names itself, VictoriaMetrics answers with (next to) nothing, a
    Thanos Querier has /api/v1/stores."""
    if not isinstance(build, Mapping):
        return "Thanos Querier" if thanos else ""
    version = str(build.get("version", "")).strip()
    application = str(build.get("application", "")).lower()
    if "mimir" in application or "cortex" in application:
        return f"Grafana Mimir {version}".strip()
    if thanos:
        return f"Thanos Querier {version}".strip()
    if not build.get("revision") and not build.get("goVersion"):
        return "VictoriaMetrics"  # its `version` is the Prometheus API version it emulates
    return f"Prometheus {version}".strip()


def _api(client: PrometheusClient) -> str:
    try:
        build = client.status_data(BUILD_INFO)
        mimir_or_vm = api_name(build, False).startswith(("Grafana Mimir", "VictoriaMetrics"))
        thanos = not mimir_or_vm and client.status_data(THANOS_STORES) is not None
    except UpstreamError:
        return ""  # the cycle says why
    return api_name(build, thanos)


def _live_grid(config: Config) -> LiveGridFeed | None:
    """The configured live grid feed, asked once now (in this thread), or None."""
    feed = live_grid(config)
    if feed is not None:
        feed.refresh_now()
    return feed


def _live_facts(feed: LiveGridFeed | None) -> tuple[LiveGrid, ...]:
    if feed is None:
        return ()
    now = time.time()
    return tuple(
        LiveGrid(
            slot.region,
            slot.basis,
            slot.source,
            None if slot.value is None else slot.age(now),
            slot.max_age,
        )
        for slot in feed.slots()
    )


def _facts(
    config: Config, engine: Engine, recording: Recording, where: str, grid: LiveGridFeed | None
) -> Facts:
    """What the engine made of the last read; the caller adds what only it knows."""
    state = engine.state
    observation = None if state.failure else recording.last
    return Facts(
        live_grid=_live_facts(grid),
        config=config,
        settings=engine.settings,
        where=where,
        failure=state.failure,
        problems=observation.problems if observation else (),
        served=tuple(join(observation)) if observation else (),
        snapshot=state.snapshot if observation else None,
    )


def read_prometheus(config: Config) -> Facts:
    source = PrometheusSource(config)
    recording = Recording(source)
    grid = _live_grid(config)
    engine = Engine(config, recording, grid=grid)
    try:
        api = _api(source.client)
        engine.run_cycle()
        found = Inventory(complete=False)
        if not engine.state.failure:
            found = _inventory(source.client, config)
    finally:
        source.close()
        if grid is not None:
            grid.close()
    facts = _facts(config, engine, recording, redact(config.prometheus.url or ""), grid)
    return replace(facts, api=api, inventory=found)


def _inventory(client: PrometheusClient, config: Config) -> Inventory:
    metrics = [config.upstream.metrics.prompt_tokens, *(s.prompt_tokens for s in SERVERS)]
    rows: dict[str, list[Sample]] = {}
    at = time.time()
    try:
        for name, promql in inventory_queries(config, metrics).items():
            rows[name] = client.query(promql, at)
    except UpstreamError:
        return Inventory(complete=False)
    return inventory.from_prometheus(rows)


def read_direct(config: Config, pause: float, sleep: Callable[[float], None] = time.sleep) -> Facts:
    """Two reads of the pages, `pause` seconds apart (a rate needs two samples)."""
    source = DirectSource(config)
    recording = Recording(source)
    grid = _live_grid(config)
    engine = Engine(config, recording, grid=grid)
    try:
        if engine.run_cycle():
            sleep(pause)
            engine.run_cycle()
    finally:
        source.close()
        if grid is not None:
            grid.close()
    pods_of_page = {str(url): pod for pod in config.direct.pods for url in pod.vllm_urls}
    series = [*source.store.windows, *source.store.refused]
    dcgm_pages = len(set(config.direct.dcgm_urls))
    where = f"{len(pods_of_page)} inference-server and {dcgm_pages} dcgm-exporter page(s)"
    facts = _facts(config, engine, recording, where, grid)
    total = {source.server: len(pods_of_page), "dcgm": dcgm_pages}
    return replace(
        facts,
        inventory=inventory.from_pages(series, config, pods_of_page),
        pages=pages_read(total, facts.failure, facts.problems),
    )


def pages_read(
    total: Mapping[str, int], failure: tuple[Problem, ...], problems: tuple[Problem, ...]
) -> dict[str, tuple[int, int]]:
    """Per upstream, (pages read in the last cycle, pages configured): each page that could
    not be read is one problem, and an upstream none of whose pages could be read failed the
    cycle."""
    failed = {p.upstream for p in failure}
    unread = Counter(p.upstream for p in problems if p.reason in NETWORK)
    return {
        upstream: (0 if upstream in failed else max(count - unread[upstream], 0), count)
        for upstream, count in total.items()
    }
