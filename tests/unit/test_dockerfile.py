"""The container image, checked structurally (no Docker engine is needed, or used): pinned
slim base, numeric non-root user matching the manifests, the exporter's port, the console script
as entrypoint, no pip cache, and a build context that holds what the build copies."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from exporter.cli import build_parser
from exporter.config import load

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BASE_DEPLOYMENT = REPO / "deploy" / "k8s" / "base" / "deployment.yaml"

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends in a line continuation"
    return result


def stages(text: str) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            found.append([])
        assert found, f"{keyword} before the first FROM"
        found[-1].append((keyword, arguments))
    return found


def exec_form(arguments: str) -> list[str]:
    value = yaml.safe_load(arguments)  # a JSON array is YAML too
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def console_scripts() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["project"]["scripts"]


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern as a regular expression (Go filepath.Match plus `**`)."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return regex


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes `path`: a pattern excludes what it matches and everything
    under it; the last matching pattern wins and `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def test_dockerignore_matching() -> None:
    assert ignored("tests/unit/x.py", ["tests"])
    assert ignored("exporter/sources/__pycache__/a.pyc", ["**/__pycache__"])
    assert ignored("__pycache__/a.pyc", ["**/__pycache__"])
    assert ignored("a.egg-info/PKG-INFO", ["*.egg-info"])
    assert not ignored("exporter/x.egg-info", ["*.egg-info"])
    assert not ignored("README.md", ["*.md", "!README.md"])
    assert not ignored("exporter/defaults.yaml", ["tests", "deploy"])


@pytest.fixture(scope="module")
def text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def final(text: str) -> list[Instruction]:
    return stages(text)[-1]


def test_parser_reads_continuations_and_stages() -> None:
    parsed = stages("# c\nFROM a:1 AS b\nENV A=1 \\\n    B=2\n\nFROM c:2\nUSER 1\n")
    assert parsed == [[("FROM", "a:1 AS b"), ("ENV", "A=1 B=2")], [("FROM", "c:2"), ("USER", "1")]]


def test_every_base_image_is_python_3_11_slim_and_pinned(text: str) -> None:
    earlier: set[str] = set()
    for stage in stages(text):
        words = stage[0][1].split()
        image = words[0]
        if image not in earlier:  # not FROM an earlier stage
            name, _, tag = image.partition(":")
            assert name == "python", image
            assert re.fullmatch(r"3\.11(\.\d+)?-slim(-\w+)?", tag), f"{image}: want 3.11-slim"
        if len(words) == 3 and words[1].upper() == "AS":
            earlier.add(words[2])
    assert ":latest" not in text


def test_final_stage_runs_as_the_manifests_numeric_user(final: list[Instruction]) -> None:
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]}: want a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    pod = yaml.safe_load(BASE_DEPLOYMENT.read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    if gid:
        assert pod["securityContext"]["runAsGroup"] == int(gid)


def test_exposes_the_default_listen_port(final: list[Instruction]) -> None:
    exposed = [arguments for keyword, arguments in final if keyword == "EXPOSE"]
    port = load(None).exporter.listen.rpartition(":")[2]
    assert exposed == [port] == ["29877"]


def test_entrypoint_is_the_console_script_and_cmd_a_command(final: list[Instruction]) -> None:
    entrypoints = [exec_form(a) for k, a in final if k == "ENTRYPOINT"]
    cmds = [exec_form(a) for k, a in final if k == "CMD"]
    assert entrypoints == [["llm-carbon-exporter"]]
    assert entrypoints[0][0] in console_scripts()
    assert cmds == [["serve"]]
    assert build_parser().parse_args(cmds[0]).command == "serve"


def test_python_settings_and_no_pip_cache(text: str, final: list[Instruction]) -> None:
    env = env_of(final)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    # The console script is found: the virtualenv it is installed in is copied and on PATH.
    (venv,) = re.findall(r"python -m venv (\S+)", text)
    assert f"{venv}/bin" in env.get("PATH", "").split(":")
    assert ("COPY", f"--from=build {venv} {venv}") in final
    for stage in stages(text):
        stage_env = env_of(stage)
        for keyword, arguments in stage:
            if keyword == "RUN" and re.search(r"\bpip install\b", arguments):
                assert "--no-cache-dir" in arguments or stage_env.get("PIP_NO_CACHE_DIR") == "1"
    assert not [a for k, a in instructions(text) if k == "ADD"], "use COPY, not ADD"


def test_build_context_holds_what_the_build_copies(text: str) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    copies = [a for k, a in instructions(text) if k == "COPY" and "--from" not in a]
    assert copies
    sources = [source for arguments in copies for source in shlex.split(arguments)[:-1]]
    assert {"pyproject.toml", "exporter"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for data in (REPO / "exporter").rglob("*.yaml"):
        relative = str(data.relative_to(REPO))
        assert not ignored(relative, patterns), f"{relative}: excluded by .dockerignore"
    # Package files that link outside exporter/ must have their target copied too.
    for link in (p for p in (REPO / "exporter").rglob("*") if p.is_symlink()):
        target = str(link.resolve().relative_to(REPO))
        assert target in sources, f"{link.relative_to(REPO)} -> {target}: not copied"
        assert not ignored(target, patterns), f"{target}: excluded by .dockerignore"
    for heavy in (".git", ".venv", "tests", "exporter/__pycache__/x.pyc"):
        assert ignored(heavy, patterns), f"{heavy} is in the build context"
