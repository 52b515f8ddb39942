"""Command line: serve, report, diagnose, check-config (and demo). Bad flags or configuration
end with one line naming the problem and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import yaml

from exporter import PROG, __version__
from exporter.config import Config, ConfigError, load
from exporter.demo.run import run_demo
from exporter.diagnosis import probe
from exporter.diagnosis.verdict import diagnose
from exporter.durations import parse_duration
from exporter.engine import Engine
from exporter.exposition import checklist, report, server
from exporter.gc_tuning import tune_for_cycles
from exporter.malloc_tuning import limit_arenas
from exporter.signals import stop_on_signals
from exporter.sources import recording
from exporter.sources.direct import DirectSource
from exporter.sources.grid_live import LiveGridFeed, live_grid
from exporter.sources.prometheus import PrometheusSource
from exporter.sources.queries import Queries

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_SIGPIPE = 141  # what a shell reports for a process SIGPIPE ended


class UsageError(Exception):
    """A bad command line; str() is one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _duration_flag(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Each command: its one-line description (shown in `--help` and under its own `--help`).
COMMANDS = {
    "serve": "run the exporter: read the upstream every interval, serve /metrics and /",
    "report": "read the upstream once and print the per-model table (or JSON)",
    "diagnose": "read the upstream once and check what the figures need from it, one line each",
    "check-config": "validate a configuration file (with the environment, as serve reads it)",
    "recording-rules": "print Prometheus recording rules for this configuration's queries",
    "demo": "run a simulated cluster and the exporter reading it, to look around",
}


def _common(sub: argparse.ArgumentParser) -> None:
    """The upstream flags every command that reads an upstream takes."""
    sub.add_argument("--config", metavar="FILE", help="YAML configuration file")
    sub.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="Prometheus-compatible query API (also PROMETHEUS_URL)",
    )
    sub.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log lines at this level and above, on stderr (exporter.log_level: info)",
    )
    direct = sub.add_argument_group(
        "direct-scrape (sidecar) mode", "read the pages directly, no Prometheus needed"
    )
    direct.add_argument(
        "--vllm-url",
        metavar="URL",
        action="append",
        help="inference server /metrics of this pod (repeatable; replaces direct.pods)",
    )
    direct.add_argument(
        "--dcgm-url",
        metavar="URL",
        action="append",
        help="dcgm-exporter /metrics of this node (repeatable)",
    )
    direct.add_argument("--pod", metavar="NAME", help="this pod's name (also POD_NAME)")
    direct.add_argument(
        "--namespace", metavar="NS", help="this pod's namespace (also POD_NAMESPACE)"
    )


def _command(commands: Any, name: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=COMMANDS[name], description=f"{PROG} {name}: {COMMANDS[name]}."
    )
    return parser


def _format(sub: argparse.ArgumentParser, human: str, shows: str, json_shows: str) -> None:
    sub.add_argument(
        "--format",
        choices=(human, "json"),
        default=human,
        help=f"{human}: {shows}; json: {json_shows} (default: {human})",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Per-model energy and carbon metrics for LLM serving (vLLM + DCGM).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=Parser, title="commands"
    )
    commands.required = True

    serve = _command(commands, "serve")
    _common(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to serve on (:29877)")
    serve.add_argument(
        "--interval", metavar="SECONDS", type=_duration_flag, help="seconds between cycles (30)"
    )

    report = _command(commands, "report")
    _common(report)
    _format(report, "table", "the per-model table", "every per-model figure")

    diagnose = _command(commands, "diagnose")
    _common(diagnose)
    _format(diagnose, "text", "the checklist", "the checks and the served models")
    diagnose.epilog = (
        "Exit status: 0 when figures can be computed for every served model, 1 when something "
        "blocks them, 2 for a bad command line or configuration."
    )

    rules = _command(commands, "recording-rules")
    rules.add_argument("--config", metavar="FILE", help="YAML configuration file")
    rules.epilog = (
        "Load the output into the Prometheus the exporter reads (or wrap it in a "
        "PrometheusRule); the exporter then reads the recorded series instead of the raw ones, "
        "with the same figures. Regenerate it after changing the configuration: rules for "
        "other queries are ignored."
    )

    check = _command(commands, "check-config")
    check.add_argument("file", metavar="FILE", help="the YAML configuration file to check")

    demo = _command(commands, "demo")
    demo.add_argument(
        "--listen", metavar="HOST:PORT", default=":29877", help="address of the exporter (:29877)"
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, or UsageError naming what is wrong with it: an unknown flag given
    before any command is named (argparse would only say a COMMAND is required)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg in COMMANDS for arg in args):
        unknown = [a for a in args if a.startswith("-") and a not in ("-h", "--help", "--version")]
        if unknown:
            raise UsageError(
                f"unrecognized arguments: {' '.join(unknown)} (flags go after a COMMAND: "
                f"{', '.join(COMMANDS)})"
            )
        if not args:
            raise UsageError(f"a COMMAND is required: {', '.join(COMMANDS)}")
    return build_parser().parse_args(args)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "prometheus.url": getattr(args, "prometheus_url", None),
        "exporter.listen": getattr(args, "listen", None),
        "exporter.interval": getattr(args, "interval", None),
        "exporter.log_level": getattr(args, "log_level", None),
    }
    vllm, dcgm = getattr(args, "vllm_url", None), getattr(args, "dcgm_url", None)
    pod_flags = getattr(args, "pod", None) or getattr(args, "namespace", None)
    if pod_flags and dcgm and not vllm:
        # They name the pod of --vllm-url; without it they would quietly do nothing.
        raise UsageError("--pod and --namespace name the pod of --vllm-url: give --vllm-url too")
    if vllm or dcgm:
        overrides["source"] = "direct"
        if vllm:
            overrides["direct.pods"] = [
                {"vllm_urls": vllm, "pod": args.pod, "namespace": args.namespace}
            ]
        overrides["direct.dcgm_urls"] = dcgm
    elif getattr(args, "pod", None) or getattr(args, "namespace", None):
        raise UsageError(
            "--pod and --namespace belong to direct mode: add --vllm-url and --dcgm-url"
        )
    return overrides


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
        print(
            f"{PROG}: no report: the upstream could not be read (see the log line above)",
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
    rules = recording.rule_groups(Queries.build(config).per_cycle(), config.exporter.interval)
    print(RULES_HEADER + yaml.safe_dump(rules, sort_keys=False, width=1_000_000), end="")
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
        f"{len(config.grid.nodes)} node rules, default region {config.grid.default_region}, "
        f"{len(config.baselines)} baselines, preset {config.workload.default_preset})"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run a command. A reader that leaves early (`| head`) ends it quietly with status 141,
    as a shell reports a process SIGPIPE ended: no traceback, no message at exit."""
    try:
        status = _run(argv, environ)
    except SystemExit:  # --help, --version: argparse has printed, and exits
        if not _flushed():
            raise SystemExit(EXIT_SIGPIPE) from None
        raise
    except BrokenPipeError:
        _silence()
        return EXIT_SIGPIPE
    return status if _flushed() else EXIT_SIGPIPE


def _flushed() -> bool:
    """Flush stdout now, while a closed pipe can still be handled; False if it was closed."""
    try:
        sys.stdout.flush()
        return True
    except BrokenPipeError:
        _silence()
        return False


def _silence() -> None:
    """stdout and stderr to /dev/null: the interpreter's flush at exit finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


def _run(argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> int:
    environ = os.environ if environ is None else environ
    try:
        args = parse_args(argv)
        if args.command == "check-config":
            return cmd_check_config(args.file, environ)
        if args.command == "demo":
            setup_logging("warning")
            return run_demo(args.listen)
        config = load(args.config, overrides=_overrides(args), environ=environ)
        if args.command == "recording-rules":
            return cmd_recording_rules(config)
        if args.command == "diagnose":  # the checklist says what the log would
            setup_logging(args.log_level or "error")
            return cmd_diagnose(config, args.format)
        setup_logging(config.exporter.log_level)
        if args.command == "serve":
            return cmd_serve(config)
        return cmd_report(config, args.format)
    except UsageError as exc:
        print(f"{PROG}: error: {exc} (see {PROG} --help)", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        for line in exc.lines:
            print(f"{PROG}: config error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
