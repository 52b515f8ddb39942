"""Structural checks on the Grafana dashboards: provisionable as files (no __inputs, the
datasource variable everywhere), stable uids, units on every panel, queries that only name
the exporter's metrics and labels and filter by the dashboard's variables, Grafana's interval
macros in ranges, and neutral presentation of the commercial comparison."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from exporter.exposition.catalogue import SPECS
from exporter.model.figures import INFO_LABELS
from tests.dashboards_util import (
    DASHBOARD_FILES,
    INTEGRAL,
    MACROS,
    MODEL_COUNTERS,
    ROOT,
    UIDS,
    load_dashboards,
    measured_per_unit,
    metric_names,
    queried_panels,
    selectors,
    substitute,
    table_columns,
    variable_names,
    walk_panels,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UNITS = {
    "watt",
    "joule",
    "kwatth",
    "massg",
    "percentunit",
    "short",
    "none",
    "si:g/h",
    "watth",
    "si:g/kWh",
    "s",
}
# Multi-value variables are matched as regular expressions, single-value ones exactly.
FILTER_OPERATOR = {"overview.json": "=~", "model-detail.json": "="}
VERDICT_WORDS = re.compile(r"\b(better|worse|good|bad|wasteful|green|dirty)\b", re.IGNORECASE)

BOARDS = load_dashboards()


@pytest.fixture(params=DASHBOARD_FILES)
def board(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, BOARDS[request.param]


def exprs(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel.get("targets", [])]


def test_both_dashboards_exist_with_distinct_uids() -> None:
    assert set(BOARDS) == set(DASHBOARD_FILES)
    assert len({board["uid"] for board in BOARDS.values()}) == len(BOARDS)


def test_provisionable_from_a_file(board: tuple[str, dict[str, Any]]) -> None:
    name, dashboard = board
    text = json.dumps(dashboard)
    assert dashboard["id"] is None
    assert dashboard["uid"] == UIDS[name]
    assert len(dashboard["uid"]) <= 40
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    assert "DS_PROMETHEUS" not in text and "${DS_" not in text
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and "llm-carbon" in dashboard["tags"]
    assert dashboard["time"]["from"].startswith("now-") and dashboard["refresh"]


def test_variables(board: tuple[str, dict[str, Any]]) -> None:
    name, dashboard = board
    variables = dashboard["templating"]["list"]
    first = variables[0]
    assert (first["name"], first["type"], first["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    by_name = {v["name"]: v for v in variables}
    assert list(by_name) == ["datasource", "namespace", "model", "methodology_url"]
    docs = by_name["methodology_url"]
    assert (docs["type"], docs["hide"]) == ("constant", 2)  # not a filter: hidden
    assert docs["query"] == docs["current"]["value"] and docs["query"].endswith("/methodology")
    multi = FILTER_OPERATOR[name] == "=~"
    for label in ("namespace", "model"):
        variable = by_name[label]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert re.fullmatch(
            rf"label_values\(llm_carbon_model_info(\{{.*\}})?, {label}\)", variable["query"]
        ), variable["query"]
        assert variable["multi"] is multi and variable["includeAll"] is multi
        if multi:
            assert variable["allValue"] == ".*"
    # The model list follows the chosen namespace.
    assert f'namespace{FILTER_OPERATOR[name]}"$namespace"' in by_name["model"]["query"]


def test_panel_ids_titles_and_layout(board: tuple[str, dict[str, Any]]) -> None:
    _, dashboard = board
    panels = list(walk_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    occupied: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] > 0, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = panel["title"]
    for panel in panels:
        assert panel.get("description"), f"{panel['title']}: add a description"


def test_panels_query_the_datasource_variable(board: tuple[str, dict[str, Any]]) -> None:
    _, dashboard = board
    for panel in queried_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


# Units whose series add up across models, phases or parts of a footprint; anything else
# (an intensity, an age, a ratio, a per-token figure) is meaningless stacked.
ADDITIVE_UNITS = {"watt", "si:g/h", "short", "massg"}


def test_only_additive_quantities_are_stacked(board: tuple[str, dict[str, Any]]) -> None:
    _, dashboard = board
    for panel in queried_panels(dashboard):
        defaults = panel["fieldConfig"]["defaults"]
        if defaults.get("custom", {}).get("stacking", {}).get("mode", "none") != "none":
            assert defaults["unit"] in ADDITIVE_UNITS, panel["title"]


def test_every_panel_has_a_unit(board: tuple[str, dict[str, Any]]) -> None:
    _, dashboard = board
    for panel in queried_panels(dashboard):
        field_config = panel["fieldConfig"]
        assert field_config["defaults"].get("unit") in UNITS, panel["title"]
        for override in field_config.get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, (panel["title"], prop)


def test_queries_name_only_exporter_metrics_and_their_labels(
    board: tuple[str, dict[str, Any]],
) -> None:
    name, dashboard = board
    op = FILTER_OPERATOR[name]
    for panel in queried_panels(dashboard):
        for expr in exprs(panel):
            found = selectors(expr)
            assert found, (panel["title"], expr)
            for metric, matchers in found:
                spec = SPECS.get(metric)
                assert spec is not None, f"{panel['title']}: {metric} is not an exporter metric"
                for label in matchers:
                    assert label in spec.labels, f"{panel['title']}: {metric} has no {label}"
                if spec.group == "model":
                    # Every per-model series follows the dashboard's variables.
                    assert matchers.get("namespace") == (op, "$namespace"), (panel["title"], expr)
                    assert matchers.get("model") == (op, "$model"), (panel["title"], expr)
                else:
                    # Global and self series carry the exporter's target labels, not a model's.
                    assert "namespace" not in matchers, (panel["title"], expr)


def test_ranges_use_grafana_interval_macros(board: tuple[str, dict[str, Any]]) -> None:
    """Rates over $__rate_interval; ranges over $__range. The one fixed window is the step of
    the totals over the range (INTEGRAL), where the rate's window and the step must agree."""
    _, dashboard = board
    for panel in queried_panels(dashboard):
        for expr in exprs(panel):
            rest = INTEGRAL.sub("0", expr)
            for window in re.findall(r"\[([^\]]*)\]", rest):
                assert window in ("$__rate_interval", "$__range"), (panel["title"], window)
            for call in re.finditer(r"\b(i?rate|increase)\((.*?)\[([^\]]*)\]", rest):
                if call.group(1) != "increase":
                    assert call.group(3) == "$__rate_interval", (panel["title"], expr)


def test_totals_over_the_range_take_the_largest_copy_at_each_step(
    board: tuple[str, dict[str, Any]],
) -> None:
    """The exporter's counters are read only as INTEGRAL: the largest copy per serving pod at
    each 5-minute step, then the steps added up. The largest increase() over the whole range
    would keep only one of a replaced exporter's and its successor's counters (about half the
    total when the pod was replaced mid-range). The descriptions say so."""
    _, dashboard = board
    found = 0
    for panel in queried_panels(dashboard):
        for expr in exprs(panel):
            counters = metric_names(expr) & MODEL_COUNTERS
            if not counters:
                continue
            found += 1
            integrals = list(INTEGRAL.finditer(expr))
            assert {m["metric"] for m in integrals} == counters, (panel["title"], expr)
            assert "increase(" not in expr, (panel["title"], expr)
            for match in integrals:
                assert "serving_pod" in match["by"].split(", "), (panel["title"], expr)
            assert "5-minute steps" in panel["description"], panel["title"]
            assert "Up to one step" in panel["description"], panel["title"]
    assert found


def test_only_defined_variables_are_used(board: tuple[str, dict[str, Any]]) -> None:
    _, dashboard = board
    defined = {v["name"] for v in dashboard["templating"]["list"]} | set(MACROS)
    for panel in queried_panels(dashboard):
        for expr in exprs(panel):
            # "$1" is label_replace's capture group, not a variable.
            used = {n for n in variable_names(expr) if not n.isdigit()}
            assert used <= defined, (panel["title"], used - defined)
            leftover = substitute(expr, {"namespace": "ns", "model": "m", "datasource": "ds"})
            assert not re.search(r"\$(?!1\b)", leftover), (panel["title"], leftover)


def test_legends_of_multi_series_targets_name_their_series(
    board: tuple[str, dict[str, Any]],
) -> None:
    _, dashboard = board
    for panel in queried_panels(dashboard):
        if panel["type"] not in ("timeseries", "bargauge"):
            continue
        for target in panel["targets"]:
            assert target.get("legendFormat") not in (None, "", "__auto"), panel["title"]


def test_tables_merge_instant_frames(board: tuple[str, dict[str, Any]]) -> None:
    _, dashboard = board
    for panel in queried_panels(dashboard):
        if panel["type"] != "table":
            continue
        assert panel["transformations"][0]["id"] == "merge", panel["title"]
        for target in panel["targets"]:
            assert target["instant"] is True and target["format"] == "table", panel["title"]
        organize = next(t for t in panel["transformations"] if t["id"] == "organize")
        renamed = set(organize["options"]["renameByName"])
        if len(panel["targets"]) > 1:
            assert renamed == {f"Value #{t['refId']}" for t in panel["targets"]}, panel["title"]


def test_methodology_panel_links_the_document(board: tuple[str, dict[str, Any]]) -> None:
    _, dashboard = board
    texts = [p for p in walk_panels(dashboard["panels"]) if p["type"] == "text"]
    assert len(texts) == 1
    content = texts[0]["options"]["content"]
    # Linked through the constant, never relatively: that would resolve against Grafana.
    assert "](${methodology_url})" in content and "`docs/methodology.md`" in content
    assert "](docs/" not in content and "](/" not in content
    assert (ROOT / "docs" / "methodology.md").is_file()
    assert "not a verdict" in content
    links = [link for link in dashboard["links"] if link["type"] == "link"]
    assert [link["url"] for link in links] == ["${methodology_url}"]


def _colors(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("color", "fixedColor") and isinstance(value, str):
                found.append(value)
            found += _colors(value)
    elif isinstance(node, list):
        for item in node:
            found += _colors(item)
    return found


def test_presentation_is_neutral(board: tuple[str, dict[str, Any]]) -> None:
    """A range, not a verdict: no red/green anywhere, no colour thresholds, no judging words."""
    _, dashboard = board
    for panel in walk_panels(dashboard["panels"]):
        for color in _colors(panel):
            assert "red" not in color and "green" not in color, (panel["title"], color)
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {})
        assert len(steps.get("steps", [])) <= 1, panel["title"]
        words = " ".join(
            [
                panel["title"],
                panel.get("description", ""),
                panel.get("options", {}).get("content", ""),
            ]
        )
        assert not VERDICT_WORDS.search(words), (panel["title"], VERDICT_WORDS.findall(words))


def test_commercial_band_fills_between_its_own_series() -> None:
    detail = BOARDS["model-detail.json"]
    band = next(
        p
        for p in queried_panels(detail)
        if "commercial range" in p["title"].lower() and p["type"] == "timeseries"
    )
    # Overrides match the figures by pattern, the shared commercial band by name.
    legends = {t["legendFormat"] for t in band["targets"]}
    fills = [
        (o["matcher"]["options"], prop["value"])
        for o in band["fieldConfig"]["overrides"]
        for prop in o["properties"]
        if prop["id"] == "custom.fillBelowTo"
    ]
    assert fills == [("commercial high", "commercial low")]
    assert {"commercial high", "commercial low"} <= legends
    overrides = band["fieldConfig"]["overrides"]
    named = {o["matcher"]["options"] for o in overrides if o["matcher"]["id"] == "byName"}
    assert named <= legends, named - legends
    for o in overrides:
        if o["matcher"]["id"] == "byRegexp":
            pattern = re.compile(o["matcher"]["options"])
            assert [x for x in legends if pattern.fullmatch(x)], o["matcher"]
            legend = next(x for x in legends if pattern.fullmatch(x))
            assert pattern.fullmatch(legend + " ") and pattern.fullmatch(legend + " pod-1")
    assert {"amortized", "marginal"} <= legends


def test_links_point_at_the_dashboards() -> None:
    uids = set(UIDS.values())
    for dashboard in BOARDS.values():
        for url in re.findall(r"/d/([\w-]+)", json.dumps(dashboard)):
            assert url in uids, url
    overview_table = next(
        p for p in queried_panels(BOARDS["overview.json"]) if p["title"] == "Per-model figures"
    )
    links = [
        link["url"]
        for o in overview_table["fieldConfig"]["overrides"]
        if o["matcher"]["options"] == "model"
        for prop in o["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert links and links[0].startswith(f"/d/{UIDS['model-detail.json']}/")
    assert "var-model=${__value.raw}" in links[0] and "var-namespace=" in links[0]


def test_overview_has_the_fleet_and_per_model_panels() -> None:
    """The panels an overview needs: fleet power, CO2 per hour and cumulative, and a
    per-model table with J/token both ways, gCO2/token, the commercial range, utilization,
    MFU, prompt share against the preset, the underutilized flag."""
    overview = BOARDS["overview.json"]
    metrics = {m for p in queried_panels(overview) for e in exprs(p) for m in metric_names(e)}
    assert {
        "llm_carbon_power_watts",
        "llm_carbon_co2_grams_per_hour",
        "llm_carbon_co2_grams_total",
    } <= metrics
    table = next(p for p in queried_panels(overview) if p["title"] == "Per-model figures")
    text = " ".join(exprs(table))
    # Per-token figures are computed from sums over a model's serving pods (sidecars): J/token
    # amortized as facility power over tokens, gCO2/token as CO2 per hour over tokens, the
    # prompt share as prompt over all tokens (the live tests check the values).
    for needle in (
        'llm_carbon_power_watts{scope="facility"',
        'accounting="marginal"',
        'llm_carbon_co2_grams_per_hour{scope="facility", basis="location"',
        'bound="low"',
        'bound="mid"',
        'bound="high"',
        "llm_carbon_utilization_ratio",
        "llm_carbon_model_flops_utilization_ratio",
        'llm_carbon_tokens_per_second{phase="prompt"',
        "llm_carbon_preset_prompt_token_ratio",
        "llm_carbon_underutilized",
    ):
        assert needle in text, needle
    cumulative = [e for p in queried_panels(overview) for e in exprs(p) if "co2_grams_total" in e]
    assert cumulative and all(INTEGRAL.search(e) and "[$__range:" in e for e in cumulative)


# The gate every measured per-token or per-request cell of the overview's table needs, unless
# it reads a figure the exporter already withholds while the model is inactive (*_per_token).
ACTIVE_GATE = re.compile(
    r" and on \(namespace, model\) \(max by \(namespace, model\) "
    r"\(llm_carbon_active\{[^{}]*\}\) == 1\)$"
)


def test_per_model_table_cells_per_token_and_per_request_follow_the_activity_flag() -> None:
    """The table's description says its measured per-token and per-request cells and the
    observed prompt share are empty while a model is inactive: tokens and requests per second
    are exported then (below the activity threshold, possibly above 0), so a division by them
    needs the flag, not only `> 0`."""
    table = next(
        p for p in queried_panels(BOARDS["overview.json"]) if p["title"] == "Per-model figures"
    )
    assert "empty while a model is inactive" in table["description"]
    gated = 0
    for column, target in table_columns(table).items():
        if not measured_per_unit(column):
            continue
        metrics = metric_names(target["expr"])
        if any(m.endswith("_per_token") for m in metrics):
            continue  # absent while inactive at the source
        assert ACTIVE_GATE.search(target["expr"]), (column, target["expr"])
        gated += 1
    assert gated >= 5  # J/token amortized, CO2/token, prompt share, Wh/request, SCI/token


def test_the_assumptions_table_shows_every_info_label() -> None:
    detail = BOARDS["model-detail.json"]
    table = next(p for p in queried_panels(detail) if p["title"].startswith("Assumptions"))
    (expr,) = exprs(table)
    grouping = re.match(r"max by \(([^()]*)\)", expr)
    assert grouping, expr
    assert set(INFO_LABELS) <= set(grouping.group(1).split(", ")), set(INFO_LABELS)
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    assert set(INFO_LABELS) <= set(organize["options"]["indexByName"])


def test_model_detail_charts_cost_against_its_context() -> None:
    detail = BOARDS["model-detail.json"]
    metrics = {m for p in queried_panels(detail) for e in exprs(p) for m in metric_names(e)}
    assert {
        "llm_carbon_energy_joules_per_token",
        "llm_carbon_commercial_joules_per_token",
        "llm_carbon_power_watts",
        "llm_carbon_idle_power_watts",
        "llm_carbon_tokens_per_second",
        "llm_carbon_utilization_ratio",
        "llm_carbon_co2_grams_per_hour",  # grid intensity: CO2 per hour over power, per basis
    } <= metrics


def test_live_grid_panels() -> None:
    """Intensity over time per region with its source and the age of the live data
    (overview); CO2 per token on the location and marginal bases side by side (detail). The
    health stat leaves the live grid providers out: without them the figures fall back."""
    overview = {p["title"]: p for p in queried_panels(BOARDS["overview.json"])}
    region = overview["Grid intensity in force by region"]
    assert "llm_carbon_region_grid_intensity_grams_per_kwh" in exprs(region)[0]
    assert "{{source}}" in region["targets"][0]["legendFormat"]
    assert (
        "llm_carbon_grid_intensity_age_seconds" in exprs(overview["Age of the live grid data"])[0]
    )
    detail = {p["title"]: p for p in queried_panels(BOARDS["model-detail.json"])}
    sides = detail["CO₂ per token: location and marginal basis (facility)"]
    assert [t["legendFormat"] for t in sides["targets"]] == ["location", "marginal"]
    assert 'basis="location"' in exprs(sides)[0] and 'basis="marginal"' in exprs(sides)[1]
    for board in BOARDS.values():
        (health,) = exprs(next(p for p in queried_panels(board) if "current" in p["title"]))
        assert 'upstream!~"electricitymaps|watttime"' in health


def test_per_request_and_footprint_panels() -> None:
    """Energy per request in Wh beside the published figures; operational and embodied CO2
    stacked; tokens per request against the preset's; SCI in the overview table."""
    detail = {p["title"]: p for p in queried_panels(BOARDS["model-detail.json"])}
    per_request = detail["Energy per request and published figures (Wh)"]
    assert per_request["fieldConfig"]["defaults"]["unit"] == "watth"
    assert any("llm_carbon_reference_energy_wh_per_request" in e for e in exprs(per_request))
    assert any("llm_carbon_requests_per_second" in e and "/ 3600" in e for e in exprs(per_request))
    stacked = detail["CO₂ emission rate: operational and embodied (facility, location basis)"]
    assert stacked["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert [t["legendFormat"] for t in stacked["targets"]] == ["operational", "embodied"]
    assert "llm_carbon_embodied_co2_grams_per_hour" in exprs(stacked)[1]
    mix = detail["Tokens per request: observed and preset"]
    assert sum("llm_carbon_preset_tokens_per_request" in e for e in exprs(mix)) == 2
    overview = next(
        p for p in queried_panels(BOARDS["overview.json"]) if p["title"] == "Per-model figures"
    )
    renamed = next(t for t in overview["transformations"] if t["id"] == "organize")
    assert {"Wh/request", "SCI/token"} <= set(renamed["options"]["renameByName"].values())
