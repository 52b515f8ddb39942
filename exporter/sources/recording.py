"""Recording rules for the per-cycle queries: the same expressions, evaluated by Prometheus
at its rule interval and stored as series, so that a cycle reads a few thousand stored rows
instead of every GPU's raw series.

Each rule records one per-cycle query under `llm_carbon_upstream:<query>`, labelled with a
fingerprint of the expression (`lce_query_hash`): the exporter reads a rule only while its
fingerprint matches the query it would run itself, so rules generated for another
configuration or another version are never read. Each rule also records one sentinel row
(`lce_sentinel="1"`), present even when the query has no rows, which says the rule is being
evaluated. Pure functions; the source decides when to read them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from exporter.durations import promql_duration
from exporter.sources.prometheus_api import Sample
from exporter.sources.promql import tagged

PREFIX = "llm_carbon_upstream:"
HASH = "lce_query_hash"
SENTINEL = "lce_sentinel"
GROUP = "llm-carbon-exporter-recording"  # not an alert group's name: both can share one file


def fingerprint(expr: str) -> str:
    return hashlib.sha256(expr.encode()).hexdigest()[:16]


def recorded(expr: str) -> str:
    """The rule's expression: the query's rows, and the sentinel row."""
    return f"({expr}) or {tagged('vector(1)', SENTINEL, '1')}"


def rule_groups(per_cycle: Mapping[str, str], interval: float) -> dict[str, Any]:
    """A Prometheus rule file (as a mapping) recording every query of `per_cycle`, evaluated
    every `interval` seconds (the exporter's cycle interval)."""
    rules = [
        {"record": PREFIX + name, "expr": recorded(expr), "labels": {HASH: fingerprint(expr)}}
        for name, expr in per_cycle.items()
    ]
    return {"groups": [{"name": GROUP, "interval": promql_duration(interval), "rules": rules}]}


def selector(name: str, expr: str) -> str:
    """What a cycle asks instead of `expr` while the rules are read."""
    return f'{PREFIX}{name}{{{HASH}="{fingerprint(expr)}"}}'


def detection() -> str:
    """One row per recorded query being evaluated now, with its fingerprint."""
    return f'count by (__name__, {HASH}) ({{__name__=~"{PREFIX}.+", {SENTINEL}="1"}})'


def in_force(found: Iterable[Sample], per_cycle: Mapping[str, str]) -> bool:
    """Whether the rules for every query of `per_cycle`, with today's expressions, are being
    evaluated (the `detection()` query's rows)."""
    have = {(s.labels.get("__name__", ""), s.labels.get(HASH, "")) for s in found}
    return all((PREFIX + name, fingerprint(expr)) in have for name, expr in per_cycle.items())


def rows(samples: Iterable[Sample]) -> tuple[list[Sample], bool]:
    """A recorded query's rows as the query itself returns them (without the rule's name,
    fingerprint and sentinel), and whether the sentinel was among them."""
    out, sentinel = [], False
    for sample in samples:
        if SENTINEL in sample.labels:
            sentinel = True
            continue
        labels = {k: v for k, v in sample.labels.items() if k not in ("__name__", HASH)}
        out.append(Sample(labels, sample.value))
    return out, sentinel
