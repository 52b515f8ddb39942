"""Helpers shared by the dashboard and alert-rule tests: load the dashboards and the rule file,
walk panels (rows nest them), substitute Grafana variables the way Grafana does, and pull
metric selectors out of PromQL text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from exporter.exposition.catalogue import SPECS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
DASHBOARD_FILES = ("overview.json", "model-detail.json")
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES_FILE = RULES_DIR / "alerts.yaml"
RULES_TEST_FILE = RULES_DIR / "alerts_test.yaml"

# Stable uids: alert annotations (dashboard_url) and dashboard links use them.
OVERVIEW_UID = "llm-carbon-overview"
DETAIL_UID = "llm-carbon-model-detail"
UIDS = {"overview.json": OVERVIEW_UID, "model-detail.json": DETAIL_UID}

# The per-model counters (energy, CO2): dashboards read them only as totals over the range.
MODEL_COUNTERS = frozenset(
    name for name, spec in SPECS.items() if spec.group == "model" and spec.kind == "counter"
)

# Durations for Grafana's interval macros when a query runs outside Grafana.
MACROS = {"__rate_interval": "15s", "__interval": "5s", "__range": "30s"}

# Totals over the dashboard's time range, integrated from the exporter's counters in fixed
# steps: the largest copy per serving pod at each step (an HA pair counts once), then the steps
# added up (a replaced exporter's counters and its successor's add up, where the largest
# increase() over the whole range would keep only one of them). Each step's mean rate times the
# step is its increase.
INTEGRAL = re.compile(
    r"sum_over_time\(\(max by \((?P<by>[^()]*)\) \(rate\((?P<selector>(?P<metric>\w+)\{[^{}]*\})"
    r"\[5m\]\)\)\)\[\$__range:5m\]\)\) \* 300(?![\d.])"
)

_VARIABLE = re.compile(r"\$\{(\w+)(?:[:.][^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")
# A metric name, then its matchers if any. Label values in these dashboards hold no braces.
_SELECTOR = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\s*(\{[^{}]*\})?")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_MATCHER = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
# Words PromQL uses that the selector pattern would otherwise take for metric names.
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARD_DIR / name).read_text()) for name in DASHBOARD_FILES}


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_FILE.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, depth first; a row's nested panels (collapsed rows) included."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def queried_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in walk_panels(dashboard["panels"]) if p.get("type") not in ("row", "text"))


def grafana_regex_escape(value: str) -> str:
    """What Grafana's Prometheus data source does to a multi-value or include-all variable's
    value inside a query: escape regex metacharacters, backslashes doubled for PromQL."""
    return re.sub(r"[$^*{}\[\]'+?.()|\\]", lambda m: "\\\\" + m.group(0), value)


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace $var, ${var}, ${var:fmt} and [[var]] as Grafana would. Names neither in
    `variables` nor Grafana macros (e.g. label_replace's "$1") are left alone."""
    values = {**MACROS, **variables}

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


def variable_names(text: str) -> set[str]:
    return {next(g for g in m.groups() if g is not None) for m in _VARIABLE.finditer(text)}


def _strip_strings(expr: str) -> str:
    """Blank out string literals outside selectors (label_replace arguments, for instance) so
    that their contents are not read as metric names."""
    out, depth, i = [], 0, 0
    while i < len(expr):
        char = expr[i]
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == '"' and depth == 0:
            end = i + 1
            while end < len(expr) and expr[end] != '"':
                end += 2 if expr[end] == "\\" else 1
            out.append('""')
            i = end + 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (operator, value)}) for every vector selector in `expr`."""
    text = _strip_strings(expr)
    # Label lists are not selectors; "sum by (x) (" reads as the call "sum (".
    text = _GROUPING.sub(lambda m: "" if m.group(1) in ("by", "without") else m.group(1), text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    found = []
    for match in _SELECTOR.finditer(text):
        name, braces = match.groups()
        if name.lower() in _PROMQL_WORDS or text[match.end(1) :].lstrip().startswith("("):
            continue  # a keyword or a function call
        matchers = {
            label: (op, value) for label, op, value in _MATCHER.findall((braces or "{}")[1:-1])
        }
        found.append((name, matchers))
    return found


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}


def scale_integrals(expr: str, seconds: int) -> str:
    """The same integrals in steps of `seconds` instead of 5 minutes, for a Prometheus holding
    only seconds of the exporter's series (where MACROS' short $__range holds no 5-minute step)."""

    def replace(match: re.Match[str]) -> str:
        return (
            f"sum_over_time((max by ({match['by']}) (rate({match['selector']}[{seconds}s])))"
            f"[$__range:{seconds}s])) * {seconds}"
        )

    return INTEGRAL.sub(replace, expr)


def table_columns(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A multi-query table's columns by their shown name: the target each one reads."""
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    names = organize["options"]["renameByName"]
    return {names[f"Value #{t['refId']}"]: t for t in table["targets"]}


def measured_per_unit(column: str) -> bool:
    """A table column measured per token or per request (or the observed prompt share): a
    division by rates that are exported, below the activity threshold, while inactive."""
    return "/token" in column or "/request" in column or column == "prompt share"
