"""The command line's shape: commands, flags and their help, and the configuration
overrides the flags make. A bad command line is a UsageError whose str() is one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from exporter import PROG, __version__
from exporter.durations import parse_duration
from exporter.exposition.guides import GUIDES


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
    "docs": "print a guide that ships with the exporter (troubleshooting, configuration, ...)",
}


def _common(sub: argparse.ArgumentParser, log_default: str = "exporter.log_level: info") -> None:
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
        help=f"log lines at this level and above, on stderr ({log_default})",
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
    _common(diagnose, log_default="error: the checklist says what the log would")
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

    docs = _command(commands, "docs")
    docs.add_argument(
        "topic",
        metavar="TOPIC",
        nargs="?",
        choices=GUIDES,
        help=f"one of {', '.join(GUIDES)} (without it: the list)",
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


def help_command(argv: Sequence[str] | None) -> str:
    """Where a usage error sends the reader: the help of the command given, if any."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in args if arg in COMMANDS), None)
    return f"{PROG} {command} --help" if command else f"{PROG} --help"


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys the flags set. --pod and --namespace name the pod of
    --vllm-url, or else the pods of a configuration file that leaves them unnamed, as
    POD_NAME and POD_NAMESPACE would (see pod_environment); without --vllm-url or a
    configuration file nothing could use them, and they are refused."""
    overrides: dict[str, Any] = {
        "prometheus.url": getattr(args, "prometheus_url", None),
        "exporter.listen": getattr(args, "listen", None),
        "exporter.interval": getattr(args, "interval", None),
        "exporter.log_level": getattr(args, "log_level", None),
    }
    vllm, dcgm = getattr(args, "vllm_url", None), getattr(args, "dcgm_url", None)
    if _pod_flags(args) and not vllm and not getattr(args, "config", None):
        if dcgm:
            raise UsageError(
                "--pod and --namespace name the pod of --vllm-url: give --vllm-url too"
            )
        raise UsageError(
            "--pod and --namespace belong to direct mode: add --vllm-url and --dcgm-url"
        )
    if vllm or dcgm:
        overrides["source"] = "direct"
        if vllm:  # named by --pod and --namespace through pod_environment
            overrides["direct.pods"] = [{"vllm_urls": vllm}]
        overrides["direct.dcgm_urls"] = dcgm
    return overrides


def _pod_flags(args: argparse.Namespace) -> dict[str, str]:
    """--pod and --namespace where given, under the variables they stand in for."""
    flags = {
        "POD_NAME": getattr(args, "pod", None),
        "POD_NAMESPACE": getattr(args, "namespace", None),
    }
    return {name: value for name, value in flags.items() if value}


def pod_environment(args: argparse.Namespace, environ: Mapping[str, str]) -> Mapping[str, str]:
    """The environment with --pod and --namespace as POD_NAME and POD_NAMESPACE: like them,
    they name a direct pod the configuration file leaves unnamed."""
    flags = _pod_flags(args)
    return {**environ, **flags} if flags else environ


def check_pod_flags(args: argparse.Namespace, source: str) -> None:
    """--pod and --namespace with a configuration file that is not in direct mode."""
    if _pod_flags(args) and source != "direct":
        raise UsageError(
            f"--pod and --namespace belong to direct mode: {args.config} reads {source} "
            "(set source: direct there, or add --vllm-url and --dcgm-url)"
        )
