"""Dashboard queries and the PromQL examples of the documentation, evaluated by `promtool test
rules` on hand-written series where the live tests cannot go: an hour of counters across an
exporter pod's replacement and an HA pair, a model below the activity threshold that still
serves a few tokens, and every example run against two exporters scraped side by side."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.exposition.catalogue import SPECS
from tests.dashboards_util import (
    MODEL_COUNTERS,
    ROOT,
    load_dashboards,
    measured_per_unit,
    metric_names,
    queried_panels,
    selectors,
    substitute,
    table_columns,
)
from tests.harness import promtool

pytestmark = pytest.mark.integration

BOARDS = load_dashboards()
NAMESPACE = "nrp-llm"
EXPORTERS = ("exporter-a", "exporter-b")


def target_labels(exporter: str) -> str:
    """The labels the exporter's scrape adds (honor_labels keeps the models' namespace)."""
    return f'instance="{exporter}:29877",pod="llm-carbon-{exporter}",job="llm-carbon-exporter"'


def series(metric: str, labels: dict[str, str], extra: str, values: str) -> dict[str, str]:
    inner = ",".join([*(f'{k}="{v}"' for k, v in labels.items()), extra])
    return {"series": f"{metric}{{{inner}}}", "values": values}


def run_promtool(tmp_path: Path, cases: list[dict[str, Any]]) -> None:
    (tmp_path / "no_rules.yaml").write_text("groups: []\n")
    document = {"rule_files": ["no_rules.yaml"], "evaluation_interval": "1m", "tests": cases}
    (tmp_path / "cases.yaml").write_text(yaml.safe_dump(document, sort_keys=False, width=10**6))
    result = promtool("test", "rules", "cases.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def fixed_matchers(expr: str, metric: str) -> dict[str, str]:
    """The equality matchers a query puts on `metric`, Grafana variables left out."""
    return {
        label: value
        for name, matchers in selectors(expr)
        if name == metric
        for label, (op, value) in matchers.items()
        if op == "=" and "$" not in value
    }


# ---------------------------------------------------------------- totals over the time range

# Counters at 1000 units a minute for an hour, sampled each minute, per scenario (one model
# each): how many hours' worth the total must read, and each exporter's copy of the counter.
RATE_PER_MINUTE = 1000
SCENARIOS: dict[str, tuple[float, list[tuple[str, str, str]]]] = {
    # (exporter, serving_pod or "", values)
    "single": (1.0, [("exporter-a", "", "0+1000x60")]),
    # Two exporters side by side, one started earlier: counted once.
    "ha-pair": (1.0, [("exporter-a", "", "0+1000x60"), ("exporter-b", "", "7000+1000x60")]),
    # The Deployment's pod replaced at minute 30 (Recreate: the old one stops, the new one
    # starts from 0 a minute later, under another pod name). The minute between is not
    # counted by anyone; the largest increase() over the hour would read about half.
    "replaced": (
        59 / 60,
        [("exporter-old", "", "0+1000x30 stale"), ("exporter-new", "", "_x31 0+1000x29")],
    ),
    # Sidecars: one exporter per serving pod, added up.
    "sidecars": (
        2.0,
        [("exporter-a", "vllm-0", "0+1000x60"), ("exporter-b", "vllm-1", "0+1000x60")],
    ),
}
# The counters' base units in each dashboard unit the totals use.
UNIT_SCALE = {"joule": 1.0, "watth": 1 / 3600, "kwatth": 1 / 3.6e6, "massg": 1.0}
TOLERANCE = 0.03


def counters(expr: str) -> set[str]:
    """The per-model counters a query reads."""
    return metric_names(expr) & MODEL_COUNTERS


def counter_targets() -> list[tuple[str, dict[str, Any], str]]:
    found = []
    for board, dashboard in BOARDS.items():
        for panel in queried_panels(dashboard):
            for target in panel["targets"]:
                if counters(target["expr"]):
                    found.append((board, panel, target["expr"]))
    return found


def test_totals_over_the_range_survive_a_replaced_exporter_and_count_an_ha_pair_once(
    tmp_path: Path,
) -> None:
    targets = counter_targets()
    assert {(board, panel["id"]) for board, panel, _ in targets} >= {
        ("overview.json", 6),
        ("overview.json", 7),
        ("overview.json", 12),
        ("model-detail.json", 9),
    }
    inputs: list[dict[str, str]] = []
    read = {
        (metric, tuple(sorted(fixed_matchers(expr, metric).items())))
        for _, _, expr in targets
        for metric in counters(expr)
    }
    for metric, fixed in sorted(read):
        for model, (_, copies) in SCENARIOS.items():
            for exporter, serving_pod, values in copies:
                labels = {"namespace": NAMESPACE, "model": model, **dict(fixed)}
                if serving_pod:
                    labels["serving_pod"] = serving_pod
                inputs.append(series(metric, labels, target_labels(exporter), values))
    checks = []
    for _, panel, expr in targets:
        scale = UNIT_SCALE[panel["fieldConfig"]["defaults"]["unit"]]
        hour = 60 * RATE_PER_MINUTE * scale
        for model, (hours, _) in SCENARIOS.items():
            query = substitute(expr, {"__range": "1h", "namespace": NAMESPACE, "model": model})
            checks.append(
                {
                    "expr": f"abs(sum(({query})) / {hour!r} - {hours!r}) <= bool {TOLERANCE}",
                    "eval_time": "60m",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                }
            )
    run_promtool(
        tmp_path,
        [
            {
                "name": "totals over an hour: one exporter, an HA pair, a replaced pod, sidecars",
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": checks,
            }
        ],
    )


# ---------------------------------------------------------------- the per-model table

TABLE = "Per-model figures"


def test_table_cells_per_token_and_per_request_are_empty_while_inactive(
    tmp_path: Path,
) -> None:
    """A model below the activity threshold still has tokens and requests per second above 0
    (the exporter withholds only its own per-token figures then): its measured per-token and
    per-request cells and its prompt share must be empty, an active model's present, with an
    HA pair publishing both."""
    table = next(p for p in queried_panels(BOARDS["overview.json"]) if p["title"] == TABLE)
    per_token = {c: t for c, t in table_columns(table).items() if measured_per_unit(c)}
    assert set(per_token) >= {
        "J/token amortized",
        "CO₂/token",
        "Wh/request",
        "SCI/token",
        "prompt share",
    }
    # What the exporter publishes for each model (the per-token figure only while active).
    models = {
        "idle-model": {"active": 0, "tokens": (3, 1), "requests": 0.1},
        "busy-model": {"active": 1, "tokens": (900, 100), "requests": 1.0},
    }
    inputs = []
    for model, figures in models.items():
        published: list[tuple[str, dict[str, str], float]] = [
            ("llm_carbon_active", {}, figures["active"]),
            ("llm_carbon_gpus", {}, 1),
            ("llm_carbon_power_watts", {"scope": "gpu"}, 300),
            ("llm_carbon_power_watts", {"scope": "facility"}, 504),
            ("llm_carbon_tokens_per_second", {"phase": "prompt"}, figures["tokens"][0]),
            ("llm_carbon_tokens_per_second", {"phase": "generation"}, figures["tokens"][1]),
            ("llm_carbon_requests_per_second", {}, figures["requests"]),
            ("llm_carbon_co2_grams_per_hour", {"scope": "facility", "basis": "location"}, 100),
            ("llm_carbon_embodied_co2_grams_per_hour", {}, 10),
        ]
        if figures["active"]:
            marginal = {"scope": "facility", "accounting": "marginal"}
            published.append(("llm_carbon_energy_joules_per_token", marginal, 0.3))
        for exporter in EXPORTERS:
            for metric, more, value in published:
                labels = {"namespace": NAMESPACE, "model": model, **more}
                inputs.append(series(metric, labels, target_labels(exporter), f"{value}x20"))
    checks = []
    for target in per_token.values():
        for model in models:
            query = substitute(target["expr"], {"namespace": NAMESPACE, "model": model})
            active = models[model]["active"]
            checks.append(
                {
                    "expr": f"count({query})",
                    "eval_time": "10m",
                    "exp_samples": [{"labels": "{}", "value": 1}] if active else [],
                }
            )
    run_promtool(
        tmp_path,
        [
            {
                "name": "per-token and per-request cells follow the activity flag",
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": checks,
            }
        ],
    )


# ---------------------------------------------------------------- token-weighted means

WEIGHTED = ('accounting="marginal"', 'mix="observed"')  # per-token figures only while active


def token_weighted_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Targets that weight a per-replica per-token figure by the replica's tokens."""
    return [
        (board, panel, target)
        for board, dashboard in BOARDS.items()
        for panel in queried_panels(dashboard)
        for target in panel["targets"]
        if any(w in target["expr"] for w in WEIGHTED)
        and "llm_carbon_tokens_per_second" in target["expr"]
    ]


def test_token_weighted_means_weigh_only_the_replicas_that_publish_the_figure(
    tmp_path: Path,
) -> None:
    """Sidecars: one replica active (its marginal J/token and observed-mix envelope 0.3), one
    below the activity threshold, still serving 4 tok/s but with no per-token figures, and one
    active whose figures are withheld (its dcgm-exporter page unread). The model's
    token-weighted mean is the first replica's 0.3; with the others' tokens in the denominator
    it would read 0.3 x 100 / 204."""
    targets = token_weighted_targets()
    assert {(b, panel["id"], t["refId"]) for b, panel, t in targets} >= {
        ("overview.json", 13, "E"),
        ("overview.json", 14, "B"),
        ("overview.json", 14, "F"),
        ("model-detail.json", 11, "B"),
        ("model-detail.json", 11, "F"),
    }
    # serving pod: (active, (prompt, generation) tok/s, publishes the figures)
    replicas = {
        "vllm-0": (1, (90, 10), True),
        "vllm-1": (0, (3, 1), False),
        "vllm-2": (1, (90, 10), False),
    }
    inputs = []
    for serving_pod, (active, tokens, publishes) in replicas.items():
        exporter = f"exporter-{serving_pod}"
        published: list[tuple[str, dict[str, str], float]] = [
            ("llm_carbon_active", {}, active),
            ("llm_carbon_tokens_per_second", {"phase": "prompt"}, tokens[0]),
            ("llm_carbon_tokens_per_second", {"phase": "generation"}, tokens[1]),
            ("llm_carbon_model_info", {"size_class": "mid"}, 1),
            ("llm_carbon_commercial_joules_per_token", {"bound": "mid", "mix": "preset"}, 1.0),
        ]
        if publishes:
            published += [
                (
                    "llm_carbon_energy_joules_per_token",
                    {"scope": "facility", "accounting": "marginal"},
                    0.3,
                ),
                (
                    "llm_carbon_commercial_joules_per_token",
                    {"bound": "mid", "mix": "observed"},
                    0.3,
                ),
            ]
        for metric, more, value in published:
            if metric == "llm_carbon_commercial_joules_per_token":
                more = {**more, "baseline": "mid"}
            labels = {"namespace": NAMESPACE, "model": "m", "serving_pod": serving_pod, **more}
            inputs.append(series(metric, labels, target_labels(exporter), f"{value}x20"))
    checks = [
        {
            "expr": f"abs(sum({substitute(t['expr'], {'namespace': NAMESPACE, 'model': 'm'})})"
            " - 0.3) <= bool 1e-9",
            "eval_time": "10m",
            "exp_samples": [{"labels": "{}", "value": 1}],
        }
        for _, _, t in targets
    ]
    run_promtool(
        tmp_path,
        [
            {
                "name": "token-weighted means over the active replicas only",
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": checks,
            }
        ],
    )


def test_energy_per_computed_token_waits_for_every_active_replica_to_count_by_source(
    tmp_path: Path,
) -> None:
    """Two active sidecars of one model, 500 W facility each; one counts 200 computed tokens
    per second, the other (an older vLLM) does not count prompt tokens by source. The panel
    must draw nothing rather than 1000 W / 200 tok/s; once both count (the second 300 tok/s),
    it reads 1000 / 500 = 2 J/token."""
    panel = next(
        p
        for p in queried_panels(BOARDS["model-detail.json"])
        if p["title"].startswith("Energy per token by denominator")
    )
    expr = next(t["expr"] for t in panel["targets"] if t["legendFormat"] == "computed tokens")
    query = substitute(expr, {"namespace": NAMESPACE, "model": "m"})
    cases = []
    for name, computed, expected in (
        ("a rollout: one replica does not count by source", {"vllm-0": 200}, []),
        ("every replica counts", {"vllm-0": 200, "vllm-1": 300}, [2.0]),
    ):
        inputs = []
        for exporter, serving_pod in zip(EXPORTERS, ("vllm-0", "vllm-1"), strict=True):
            published = [
                ("llm_carbon_active", {}, 1.0),
                ("llm_carbon_power_watts", {"scope": "facility"}, 500.0),
            ]
            if serving_pod in computed:
                joules = 500.0 / computed[serving_pod]
                published.append(("llm_carbon_energy_joules_per_computed_token", {}, joules))
            for metric, more, value in published:
                labels = {"namespace": NAMESPACE, "model": "m", "serving_pod": serving_pod, **more}
                inputs.append(series(metric, labels, target_labels(exporter), f"{value}x20"))
        samples = [{"labels": "{}", "value": v} for v in expected]
        cases.append(
            {
                "name": name,
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [{"expr": query, "eval_time": "10m", "exp_samples": samples}],
            }
        )
    run_promtool(tmp_path, cases)


# ---------------------------------------------------------------- PromQL in the documentation

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy/k8s/README.md"]
# A query that aggregates or joins (where a second exporter's copies can break it), not a
# formula or a metric name.
_JOINS = re.compile(r"\b(?:by|on|ignoring)\s*\(|\bgroup_(?:left|right)\b")
# Label values for labels an example leaves open.
DEFAULTS = {"scope": "facility", "phase": "prompt", "basis": "location", "preset": "agentic"}


def documented_queries() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        blocks = re.findall(r"```promql\n(.*?)```", text, flags=re.S)
        spans = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for code in (*blocks, *spans):
            query = " ".join(code.split())
            if (
                "llm_carbon_" in query
                and _JOINS.search(query)
                and not re.search(r"…|\.\.\.|×", query)
            ):
                found.append((str(path.relative_to(ROOT)), query))
    return found


def test_documented_queries_are_found() -> None:
    where = {path for path, _ in documented_queries()}
    assert {"README.md", "docs/methodology.md", "docs/scaling.md"} <= where


@pytest.mark.parametrize(("path", "query"), documented_queries())
def test_documented_queries_evaluate_with_two_exporters(
    path: str, query: str, tmp_path: Path
) -> None:
    """Every exporter publishes the global series (presets, envelopes) and an HA pair the
    per-model ones too: an example must not join them many-to-many."""
    expr = substitute(query, {"__range": "1h"})
    inputs = []
    for metric in {name for name, _ in selectors(expr)}:
        spec = SPECS[metric]
        fixed = fixed_matchers(expr, metric)
        labels = {
            label: fixed.get(
                label,
                {"namespace": NAMESPACE, "model": "chat-model"}.get(
                    label, DEFAULTS.get(label, "x")
                ),
            )
            for label in spec.labels
        }
        values = "0+1000x60" if spec.kind == "counter" else "0.5x60"
        inputs += [series(metric, labels, target_labels(e), values) for e in EXPORTERS]
    run_promtool(
        tmp_path,
        [
            {
                "name": f"{path}: {query}",
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": f"count(({expr})) > bool 0",
                        "eval_time": "60m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                ],
            }
        ],
    )
