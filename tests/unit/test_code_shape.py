"""The shape the code keeps so the next change lands in one obvious place: modules and
functions small enough to read whole, imports in one direction (see docs/architecture.md),
and no silenced type error without its reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Who may import whom: each part imports only parts listed before it in its own tier or in
# lower tiers (the order of docs/architecture.md).
TIERS = (
    ("text",),
    ("durations", "data", "signals", "gc_tuning", "malloc_tuning", "deadlines"),
    ("config",),
    ("model",),
    ("sources", "engine"),
    ("diagnosis",),
    ("exposition",),
    ("demo",),
    ("cli",),
)
LAYERS: dict[str, set[str]] = {}
for tier, parts in enumerate(TIERS):
    below = {part for lower in TIERS[:tier] for part in lower}
    for part in parts:
        LAYERS[part] = set() if tier == 0 else below
LAYERS["exposition"] -= {"sources"}  # renders the engine's state, never reads an upstream


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer(module: str) -> str | None:
    """The top-level part of `exporter.<part>...`, or None for the package's own
    `__init__`/`__main__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in ("__init__", "__main__") else None


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def imports(tree: ast.Module) -> list[tuple[str, ast.AST, bool]]:
    """(imported exporter module, node, at module level) for every import of the package."""
    out = []
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "exporter":
                names = [node.module]
            else:  # `from exporter import x`: a module of the package, or a name in __init__
                names = [f"exporter.{a.name}" for a in node.names if _is_module(a.name)]
            for name in names:
                if name.startswith("exporter"):
                    out.append((name, node, id(node) in top))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("exporter"):
                    out.append((alias.name, node, id(node) in top))
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_functions_are_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{node.name} has {length} lines"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way_and_at_module_level(path: Path) -> None:
    own = layer(module_name(path))
    for name, node, at_top in imports(ast.parse(path.read_text())):
        assert at_top, f"line {node.lineno}: {name} imported inside a function"
        target = layer(name)
        if own is None or target is None or target == own:
            continue
        assert target in LAYERS[own], f"line {node.lineno}: {own} must not import {target}"


def test_every_package_part_has_a_layer() -> None:
    parts = {layer(module_name(p)) for p in modules()} - {None}
    assert parts == set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_silenced_type_errors_say_why(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "type: ignore" in line:
            assert re.search(r"type: ignore\[[\w-]+\]\s+#\s*\S", line), f"line {number}"
