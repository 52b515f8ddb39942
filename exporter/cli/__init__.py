"""Command line: serve, report, diagnose, check-config, recording-rules, demo and docs. Bad
flags or configuration end with one line naming the problem and exit status 2, never a
traceback."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from exporter import PROG
from exporter.cli.arguments import (
    UsageError,
    build_parser,
    check_pod_flags,
    help_command,
    overrides,
    parse_args,
    pod_environment,
)
from exporter.cli.commands import (
    EXIT_FAILURE,
    EXIT_USAGE,
    cmd_check_config,
    cmd_diagnose,
    cmd_docs,
    cmd_recording_rules,
    cmd_report,
    cmd_serve,
    setup_logging,
)
from exporter.config import ConfigError, load
from exporter.demo.run import run_demo

__all__ = ["build_parser", "main"]

EXIT_SIGPIPE = 141  # what a shell reports for a process SIGPIPE ended


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run a command. A reader that leaves early (`| head`) ends it quietly with status 141,
    as a shell reports a process SIGPIPE ended: no traceback, no message at exit. Output
    that cannot be written (a full disk, a closed descriptor) is one line on stderr and
    status 1."""
    try:
        status = _run(argv, environ)
    except SystemExit:  # --help, --version: argparse has printed, and exits
        failed = _flush_failure()
        if failed is not None:
            raise SystemExit(failed) from None
        raise
    except OSError as exc:
        return _write_failure(exc)
    failed = _flush_failure()
    return status if failed is None else failed


# What a write to stdout fails with when the output cannot go where it was sent.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EBADF, errno.EIO, errno.EFBIG}


def _flush_failure() -> int | None:
    """Flush stdout now, while a failure can still be handled: None when it went out (or
    there is no stdout to flush), else the exit status to end with."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        return None
    except OSError as exc:
        return _write_failure(exc)


def _write_failure(exc: OSError) -> int:
    """The exit status for output that could not be written: a reader gone (141, quietly),
    or nowhere to write (1, one line); any other OSError is not about the output."""
    if isinstance(exc, BrokenPipeError):
        _silence(sys.stdout, sys.stderr)
        return EXIT_SIGPIPE
    if exc.errno not in UNWRITABLE:
        raise exc
    print(f"{PROG}: cannot write the output: {exc.strerror}", file=sys.stderr)
    _silence(sys.stdout)  # what is still buffered would fail again at exit
    return EXIT_FAILURE


def _silence(*streams: TextIO | None) -> None:
    """`streams` to /dev/null: the interpreter's flush at exit finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (s for s in streams if s is not None):
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
        if args.command == "docs":
            return cmd_docs(args.topic)
        config = load(
            args.config, overrides=overrides(args), environ=pod_environment(args, environ)
        )
        check_pod_flags(args, config.source)
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
        print(f"{PROG}: error: {exc} (see {help_command(argv)})", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        for line in exc.lines:
            print(f"{PROG}: config error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
