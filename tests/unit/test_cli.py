"""The command line: one-line errors with exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.cli import build_parser, main
from exporter.cli.arguments import COMMANDS, overrides, parse_args, pod_environment
from exporter.config import load
from exporter.exposition.guides import GUIDES


def run(capsys, *argv: str, environ: dict | None = None) -> tuple[int, str, str]:
    code = main(list(argv), environ=environ or {})
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["serve", "--listen", "nowhere"],
            "exporter.listen (from the command line): invalid listen address",
        ),
        (["serve", "--interval", "0"], "argument --interval: duration must be positive"),
        (["serve", "--interval", "fast"], "argument --interval: invalid duration 'fast'"),
        (
            ["serve", "--prometheus-url", "prom:9090"],
            "prometheus.url (from the command line): invalid URL",
        ),
        (["serve"], "prometheus.url: not set"),
        (["report", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
        (["serve", "--bogus"], "unrecognized arguments: --bogus"),
        (["launch"], "argument COMMAND: invalid choice: 'launch'"),
        ([], "a COMMAND is required: serve, report"),
        (["--bogus"], "unrecognized arguments: --bogus (flags go after a COMMAND"),
        (["-x", "--prometheus-url=http://p:9090"], "unrecognized arguments: -x --prometheus-url"),
        (["--bogus", "serve"], "unrecognized arguments: --bogus"),
        (["serve", "--prometheus-url", "http://"], "invalid URL 'http://': no host"),
        (["check-config"], "the following arguments are required: FILE"),
        (["docs", "install"], "argument TOPIC: invalid choice: 'install'"),
        (["check-config", "/nonexistent/config.yaml"], "/nonexistent/config.yaml: file not found"),
        (["serve", "--pod", "p"], "--pod and --namespace belong to direct mode"),
        (
            ["serve", "--dcgm-url", "http://n:9400/metrics", "--pod", "p"],
            "--pod and --namespace name the pod of --vllm-url: give --vllm-url too",
        ),
    ],
)
def test_bad_invocations_exit_2_with_one_line(capsys, argv: list[str], expected: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and "Traceback" not in err
    if "config error" not in err:  # a usage error points at the help of the command given
        command = next((f" {a}" for a in argv if a in COMMANDS), "")
        assert err.rstrip().endswith(f"(see llm-carbon-exporter{command} --help)")


def test_every_command_and_flag_says_what_it_is_for() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = {choice.dest: choice.help for choice in commands._choices_actions}
    assert set(listed) == set(commands.choices)
    for name, sub in commands.choices.items():
        assert listed[name], f"{name} has no one-line help in the command list"
        assert sub.description and name in sub.description, f"{name} has no description"
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


DIRECT_FILE = (
    "source: direct\ndirect:\n  dcgm_urls: [http://127.0.0.1:9/metrics]\n"
    "  pods: [{vllm_urls: [http://127.0.0.1:9/vllm]}]\n"
)


def test_pod_flags_name_the_pods_a_direct_configuration_file_leaves_unnamed(
    capsys, tmp_path: Path
) -> None:
    path = tmp_path / "direct.yaml"
    path.write_text(DIRECT_FILE)
    args = parse_args(["report", "--config", str(path), "--pod", "vllm-0", "--namespace", "llm"])
    config = load(str(path), overrides=overrides(args), environ=pod_environment(args, {}))
    assert (config.direct.pods[0].pod, config.direct.pods[0].namespace) == ("vllm-0", "llm")
    # The flags win over the variables they stand in for, the file over both.
    environ = {"POD_NAME": "other", "POD_NAMESPACE": "elsewhere"}
    config = load(str(path), environ=pod_environment(args, environ))
    assert config.direct.pods[0].pod == "vllm-0"
    # Accepted on the command line: the report fails on the unreachable page (1), not usage (2).
    code, _, err = run(capsys, "report", "--config", str(path), "--pod", "vllm-0")
    assert code == 1, err
    path.write_text(DIRECT_FILE.replace("{vllm_urls", "{pod: named, vllm_urls"))
    assert load(str(path), environ=pod_environment(args, {})).direct.pods[0].pod == "named"


def test_pod_flags_with_a_configuration_file_not_in_direct_mode_are_refused(
    capsys, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("prometheus:\n  url: http://prom:9090\n")
    code, _, err = run(capsys, "report", "--config", str(path), "--pod", "p")
    assert (
        code == 2 and f"--pod and --namespace belong to direct mode: {path} reads prometheus" in err
    )


def test_recording_rules_are_refused_for_a_direct_configuration(capsys, tmp_path: Path) -> None:
    path = tmp_path / "direct.yaml"
    path.write_text(DIRECT_FILE.replace("{vllm_urls", "{pod: p, vllm_urls"))
    code, out, err = run(capsys, "recording-rules", "--config", str(path))
    assert code == 2 and out == "" and "recording rules serve only the Prometheus source" in err


def test_check_config_ok(capsys, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("prometheus:\n  url: http://prom:9090\n")
    code, out, _ = run(capsys, "check-config", str(path))
    assert code == 0 and "OK" in out and "default region CAMX" in out


def test_check_config_warns_of_named_files_missing_here(capsys, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("t\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"prometheus:\n  url: http://prom:9090\n  ca_file: {tmp_path}/missing.crt\n"
        f"  bearer_token_file: {secret}\n"
    )
    code, out, err = run(capsys, "check-config", str(path))
    assert code == 0 and "OK" in out
    assert err.count("\n") == 1
    assert f"warning: prometheus.ca_file: '{tmp_path}/missing.crt' is not a file here" in err


def test_check_config_shows_the_window_of_the_source_in_use(capsys, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "source: direct\ndirect:\n  window: 2m\n  dcgm_urls: [http://n:9400/metrics]\n"
        "  pods: [{pod: p, namespace: ns, vllm_urls: [http://127.0.0.1:8000/metrics]}]\n"
    )
    code, out, _ = run(capsys, "check-config", str(path))
    assert code == 0 and "source direct, window 120s" in out


def test_check_config_refuses_what_serve_would(capsys, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("grid:\n  default_region: CAMX\n")
    code, _, err = run(capsys, "check-config", str(path))
    assert code == 2 and "prometheus.url: not set" in err


def test_environment_supplies_the_url(capsys, tmp_path: Path) -> None:
    # A refused connection proves the URL from PROMETHEUS_URL was used: exit 1, not 2.
    code, _, err = run(capsys, "report", environ={"PROMETHEUS_URL": "http://127.0.0.1:9"})
    assert code == 1 and "127.0.0.1:9" in err


def test_docs_lists_the_packaged_guides_and_prints_each(capsys) -> None:
    code, out, _ = run(capsys, "docs")
    assert code == 0
    for topic in GUIDES:
        assert f"  {topic}  " in out
    repository = Path(__file__).resolve().parents[2] / "docs"
    for topic in GUIDES:
        code, out, _ = run(capsys, "docs", topic)
        note, _, body = out.partition("\n\n")
        assert code == 0 and f"docs/{topic}.md of llm-carbon-exporter" in note
        assert body == (repository / f"{topic}.md").read_text(encoding="utf-8")


def test_a_failed_report_says_why_even_with_the_log_quiet(capsys) -> None:
    code, _, err = run(
        capsys, "report", "--prometheus-url", "http://127.0.0.1:9", "--log-level", "error"
    )
    assert code == 1 and err.count("\n") == 1
    assert "could not be read: prometheus: cannot connect to http://127.0.0.1:9" in err


def test_diagnose_help_gives_its_own_log_level_default() -> None:
    commands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    level = {
        name: next(a.help for a in sub._actions if "--log-level" in a.option_strings)
        for name, sub in commands.items()
        if name in ("serve", "report", "diagnose")
    }
    assert "exporter.log_level: info" in level["serve"] and level["serve"] == level["report"]
    assert "(error:" in level["diagnose"]


def test_a_bad_value_from_the_environment_says_so(capsys, tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text("prometheus:\n  url: http://p:9090\n")
    code, _, err = run(capsys, "check-config", str(path), environ={"PROMETHEUS_URL": "prom:9090"})
    assert code == 2 and "prometheus.url (from PROMETHEUS_URL): invalid URL 'prom:9090'" in err
    path.write_text("prometheus:\n  url: prom:9090\n")  # from the file: no origin to name
    code, _, err = run(capsys, "check-config", str(path))
    assert code == 2 and "config error: prometheus.url: invalid URL 'prom:9090'" in err


def test_version_and_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout.startswith("llm-carbon-exporter ")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "--prometheus-url" in result.stdout and "--listen" in result.stdout


def exporter_writing_to(
    stdout: Any, argv: list[str], environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The exporter run with `argv`, its output to `stdout` (a descriptor or a file)."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *argv],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        env=environ,
    )


@pytest.mark.parametrize(
    "argv",
    [["recording-rules"], ["--version"], ["check-config", "CONFIG"], ["serve", "--help"]],
    ids=["long-output", "version", "short-output", "help"],
)
def test_a_reader_that_leaves_early_gets_no_traceback(argv: list[str], tmp_path: Path) -> None:
    """`... | head -1`: the pipe closes before the output is written, whether the write
    fails at once (a long output) or when stdout is flushed (a short one, buffered)."""
    reader, writer = os.pipe()
    os.close(reader)  # closed before the command writes: its write fails with EPIPE
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    environ["PROMETHEUS_URL"] = "http://prometheus:9090"
    (tmp_path / "c.yaml").write_text("")
    argv = [str(tmp_path / "c.yaml") if arg == "CONFIG" else arg for arg in argv]
    try:
        result = exporter_writing_to(writer, argv, environ)
    finally:
        os.close(writer)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["docs", "methodology"], ["docs"]], ids=["long", "short"])
def test_output_that_cannot_be_written_is_one_line_not_a_traceback(argv: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = exporter_writing_to(full, argv)
    assert result.returncode == 1
    assert (
        result.stderr == "llm-carbon-exporter: cannot write the output: No space left on device\n"
    )
    # A closed stdout: nothing to write to, and no traceback either.
    command = f"{shlex.quote(sys.executable)} -m exporter {' '.join(argv)} >&-"
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert "Traceback" not in result.stderr and result.returncode == 0


@pytest.mark.parametrize(
    "command",
    [["serve", "--prometheus-url", "http://127.0.0.1:9"], ["demo"]],
    ids=["serve", "demo"],
)
def test_busy_port_is_a_clear_error(command: list[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "exporter", *command, "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    if command == ["demo"]:  # the host kept, any free port offered
        assert "(try --listen 127.0.0.1:0 for any free port)" in result.stderr


flag = st.sampled_from(
    [
        "--listen",
        "--interval",
        "--prometheus-url",
        "--config",
        "--format",
        "--log-level",
        "--bogus",
        "-x",
        "serve",
        "report",
        "check-config",
    ]
)
arg = st.one_of(flag, st.text(max_size=12))


@settings(max_examples=150, deadline=None)
@given(st.lists(arg, max_size=5))
def test_generated_command_lines_never_crash(tmp_path_factory, argv: list[str]) -> None:
    if argv[:1] == ["serve"] and "--prometheus-url" in argv:
        return  # would actually start serving
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv, environ={})
        except SystemExit as exc:  # --help and --version exit through argparse
            code = exc.code
    assert code in (0, 1, 2)
    assert "Traceback" not in stderr.getvalue()
