"""What each command does, once the command line and the configuration are read."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping

import yaml

from exporter import PROG
from exporter.config import Config, ConfigError, load, rules
from exporter.diagnosis import probe
from exporter.diagnosis.verdict import diagnose
from exporter.engine import Engine
from exporter.exposition import checklist, guides, report, server
from exporter.gc_tuning import tune_for_cycles
from exporter.malloc_tuning import limit_arenas
from exporter.signals import stop_on_signals
from exporter.sources import recording
from exporter.sources.direct import DirectSource
from exporter.sources.grid_live import LiveGridFeed, live_grid
from exporter.sources.prometheus import PrometheusSource
from exporter.sources.queries import Queries
from exporter.text import plural

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s",
        stream=sys.stderr,
        force=True,
    )


def _require_upstream(config: Config) -> None:
    if config.source == "prometheus" and not config.prometheus.url:
        raise ConfigError(
            "prometheus.url: not set (use --prometheus-url, PROMETHEUS_URL or a config file)"
        )


def _make_engine(config: Config, grid: LiveGridFeed | None) -> Engine:
    """The engine for `config`'s source, reading the live grid feed `grid` if any."""
    source = DirectSource(config) if config.source == "direct" else PrometheusSource(config)
    return Engine(config, source, grid=grid)


def cmd_serve(config: Config) -> int:
    _require_upstream(config)
    limit_arenas()  # before the first thread starts
    grid = live_grid(config)
    engine = _make_engine(config, grid)
    try:
        http = server.start(engine, config.exporter.listen)
    except OSError as exc:
        print(f"{PROG}: cannot listen on {config.exporter.listen}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    log = logging.getLogger("exporter")
    tune_for_cycles()
    host, port = http.server_address[:2]
    log.info(
        "listening on %s:%s (source %s, interval %gs)",
        host,
        port,
        engine.source.name,
        config.exporter.interval,
    )
    stop = stop_on_signals(log)
    if grid is not None:
        log.info("live grid intensity: %s", grid.describe())
        grid.start()  # fetches in the background from now on
    try:
        engine.run_forever(stop)
    finally:
        http.shutdown()
        http.server_close()
        engine.close()
    return EXIT_OK


def cmd_report(config: Config, fmt: str) -> int:
    _require_upstream(config)
    grid = live_grid(config)
    engine = _make_engine(config, grid)
    try:
        if grid is not None:
            grid.refresh_now()  # one report: fetch the live intensities once, first
        ok = engine.run_cycle()
        if ok and config.source == "direct":  # rates need a second sample
            time.sleep(min(config.exporter.interval, 5.0))
            ok = engine.run_cycle()
    finally:
        engine.close()
    snapshot = engine.state.snapshot
    if not ok or snapshot is None:
        why = "; ".join(
            p.message if p.message.startswith(p.upstream) else f"{p.upstream}: {p.message}"
            for p in engine.state.failure
        )
        print(
            f"{PROG}: no report: the upstream could not be read: {why or 'see the log'}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if fmt == "json":
        print(json.dumps(report.to_dict(snapshot, engine.settings), indent=2, sort_keys=True))
    else:
        print(report.table(snapshot, engine.settings))
    return EXIT_OK


def cmd_diagnose(config: Config, fmt: str) -> int:
    _require_upstream(config)
    try:
        if config.source == "direct":
            facts = probe.read_direct(config, pause=min(config.exporter.interval, 5.0))
        else:
            facts = probe.read_prometheus(config)
        diagnosis = diagnose(facts)
    except Exception as exc:  # a bug: one line here, the traceback at --log-level debug
        logging.getLogger("exporter").debug("diagnose failed", exc_info=True)
        print(f"{PROG}: diagnose failed unexpectedly: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if fmt == "json":
        print(json.dumps(checklist.to_dict(diagnosis), indent=2, ensure_ascii=False))
    else:
        print(checklist.text(diagnosis))
    return diagnosis.exit_status


def cmd_recording_rules(config: Config) -> int:
    if config.source == "direct":  # sidecars read pages, never a Prometheus
        raise ConfigError(
            "source: direct reads the pages themselves; recording rules serve only the "
            "Prometheus source (source: prometheus)"
        )
    groups = recording.rule_groups(Queries.build(config).per_cycle(), config.exporter.interval)
    print(RULES_HEADER + yaml.safe_dump(groups, sort_keys=False, width=1_000_000), end="")
    return EXIT_OK


RULES_HEADER = (
    "# Recording rules for llm-carbon-exporter's per-cycle queries, made by\n"
    "# `llm-carbon-exporter recording-rules`. Optional: with them loaded the exporter reads\n"
    "# the recorded series (shown as upstream_reads on llm_carbon_methodology_info), without\n"
    "# them the raw ones; the figures are the same. See docs/scaling.md.\n"
)


def cmd_check_config(path: str, environ: Mapping[str, str]) -> int:
    config = load(path, environ=environ)
    _require_upstream(config)  # what serve would refuse, check-config refuses too
    window = config.direct.window if config.source == "direct" else config.prometheus.window
    print(
        f"{path}: OK (source {config.source}, window {window:g}s, "
        f"{plural(len(config.grid.nodes), 'node rule')}, default region "
        f"{config.grid.default_region}, {plural(len(config.baselines), 'baseline')}, "
        f"preset {config.workload.default_preset})"
    )
    for key, named in rules.named_files(config):
        if not os.path.isfile(named):
            print(
                f"{PROG}: warning: {key}: {named!r} is not a file here; serve would fail every "
                "request that needs it (fine if it is mounted only where serve runs)",
                file=sys.stderr,
            )
    return EXIT_OK


def cmd_docs(topic: str | None) -> int:
    """The packaged guide `topic`, or the list of them."""
    print(guides.text(topic) if topic else guides.listing() + "\n", end="")
    return EXIT_OK
