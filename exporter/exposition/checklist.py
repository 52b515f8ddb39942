"""`diagnose`'s checklist as text (one line per check: ✓ passed, ! worth a look, ✗ blocks
figures, with the fix and a troubleshooting link under every ✗) and as JSON for scripts."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from exporter import PROG
from exporter.diagnosis.checks import FAIL, OK, WARN, Check
from exporter.diagnosis.verdict import Diagnosis

MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}
GUIDE = "docs/troubleshooting.md"
GUIDE_WHERE = (
    f"The guide the see: lines name is printed by `{PROG} docs troubleshooting`, and served "
    "at /troubleshooting by a running exporter."
)
NAME_WIDTH = 9
INDENT = " " * (NAME_WIDTH + 3)


def _advice(check: Check) -> list[str]:
    if check.status == OK:
        return []
    lines = [f"{INDENT}fix: {check.fix}"] if check.fix else []
    return lines + ([f"{INDENT}see: {GUIDE}#{check.doc}"] if check.doc else [])


def text(diagnosis: Diagnosis) -> str:
    """The checklist; checks in a row with the same fix (one per model, say) share it."""
    lines = [f"{PROG} diagnose: {diagnosis.source} source, {diagnosis.where}", ""]
    checks = diagnosis.checks
    for index, check in enumerate(checks):
        lines.append(f"{MARKS[check.status]} {check.name.ljust(NAME_WIDTH)} {check.summary}")
        lines += [f"{INDENT}- {example}" for example in check.examples]
        following = checks[index + 1] if index + 1 < len(checks) else None
        if following is None or _advice(following) != _advice(check) or check.examples:
            lines += _advice(check)
    lines += ["", diagnosis.conclusion]
    if any(_advice(check) for check in checks if check.doc):
        lines.append(GUIDE_WHERE)
    return "\n".join(lines)


def to_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    """The JSON document: the checks (status ok, warn or fail; `doc` an anchor of the
    troubleshooting guide), the served models, and the exit status."""
    return {
        "source": diagnosis.source,
        "where": diagnosis.where,
        "exit_status": diagnosis.exit_status,
        "conclusion": diagnosis.conclusion,
        "checks": [
            {**asdict(check), "examples": list(check.examples), "doc": _doc(check)}
            for check in diagnosis.checks
        ],
        "models": [asdict(model) for model in diagnosis.models],
    }


def _doc(check: Check) -> str:
    return f"{GUIDE}#{check.doc}" if check.doc else ""
