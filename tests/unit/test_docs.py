"""Documentation that must move with the code: every configuration key is documented, and the
examples in the docs are valid configuration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import default_document, load

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "configuration.md"


def leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys of a defaults document; stops at user-keyed mappings and lists."""
    for key, value in node.items():
        path = f"{prefix}{key}"
        if (
            isinstance(value, dict)
            and value
            and key not in ("presets", "baselines", "headers", "regions")
        ):
            yield from leaf_keys(value, f"{path}.")
        else:
            yield path


def test_every_configuration_key_is_documented() -> None:
    text = CONFIGURATION.read_text()
    sections = dict(
        re.findall(r"^### `?([a-z_]+)`?.*?\n(.*?)(?=^### |^## |\Z)", text, flags=re.S | re.M)
    )
    missing = []
    for dotted in leaf_keys(default_document()):
        top, _, rest = dotted.partition(".")
        if not rest:
            if f"| `{top}` |" not in text:
                missing.append(dotted)
            continue
        section = sections.get(top, "")
        leaf = rest.split(".")[-1]
        documented = (
            f"`{dotted}`" in text
            or f"`{rest}`" in section
            or f"`{leaf}`" in section
            or f".{leaf}`" in section
        )
        if not documented:
            missing.append(dotted)
    assert not missing, f"undocumented keys in docs/configuration.md: {missing}"


@pytest.mark.parametrize("path", ["docs/configuration.md", "README.md"])
def test_yaml_examples_are_valid_configuration(path: str, tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / path).read_text(), flags=re.S)
    assert blocks
    for i, block in enumerate(blocks):
        if "Kustomization" in block:
            continue
        config_file = tmp_path / f"example-{i}.yaml"
        config_file.write_text(block)
        assert isinstance(yaml.safe_load(block), dict)
        # Raises ConfigError with the key path if an example rots; a sidecar example takes
        # its pod identity from the downward API.
        load(str(config_file), environ={"POD_NAME": "p", "POD_NAMESPACE": "ns"})


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "CHANGELOG.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "deploy").rglob("*.md"),
    ]
)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_somewhere(path: Path) -> None:
    text = re.sub(r"`[^`\n]*`", "", path.read_text())  # code is not a link
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an external address
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{target}: no such file"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{target}: no such heading"


GUIDE = ROOT / "docs" / "troubleshooting.md"


def test_every_link_diagnose_prints_leads_to_a_section_of_the_guide() -> None:
    sections = {_anchor(h) for h in re.findall(r"^## (.+)$", GUIDE.read_text(), flags=re.M)}
    used = set()
    for path in (ROOT / "exporter" / "diagnosis").glob("*.py"):
        used |= set(re.findall(r'"([a-z0-9]+(?:-[a-z0-9]+){1,})"', path.read_text()))
    assert used, "no troubleshooting anchors found in exporter/diagnosis"
    assert used <= sections, f"no such section in docs/troubleshooting.md: {used - sections}"


def test_each_problem_in_the_guide_names_the_diagnose_line_that_detects_it() -> None:
    text = GUIDE.read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)[1:]
    for heading, body in zip(parts[::2], parts[1::2], strict=True):
        if heading == "Figures that look wrong":
            continue  # explained by the notes under the table, not a check
        for part in ("**Symptom.**", "**Cause.**", "**Check.**", "**Fix.**"):
            assert part in body, f"{heading}: no {part}"
        check = body.split("**Check.**", 1)[1].split("**Fix.**", 1)[0]
        assert re.search(r"`[✓!✗] [a-z ]{9} ", check), f"{heading}: names no diagnose line"
