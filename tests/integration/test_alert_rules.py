"""The alert rules: `promtool check rules` and `promtool test rules` on the single plain rule
file, the style guide (names, severities, annotations, dashboard links), the metrics they
name, and that every alert's firing case depends on that alert (remove the alert and
promtool's tests fail)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.exposition.catalogue import SPECS
from tests.dashboards_util import (
    DASHBOARD_DIR,
    DETAIL_UID,
    OVERVIEW_UID,
    ROOT,
    RULES_FILE,
    RULES_TEST_FILE,
    alert_rules,
    selectors,
)
from tests.harness import promtool

pytestmark = pytest.mark.integration

SEVERITIES = {"warning", "info"}  # nothing here warrants paging anyone (critical)
PREFIX = "LLMCarbon"


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES_FILE.name, cwd=RULES_FILE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", RULES_TEST_FILE.name, cwd=RULES_TEST_FILE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rule_file_is_plain_and_the_tests_load_it() -> None:
    rules = yaml.safe_load(RULES_FILE.read_text())
    assert set(rules) == {"groups"}, "a plain rule file; the PrometheusRule is generated"
    tests = yaml.safe_load(RULES_TEST_FILE.read_text())
    assert tests["rule_files"] == [RULES_FILE.name]


def _cases() -> dict[str, dict[str, int]]:
    """Per alert name: how many checks expect it firing and how many expect silence."""
    tests = yaml.safe_load(RULES_TEST_FILE.read_text())["tests"]
    counts: dict[str, dict[str, int]] = {}
    for case in tests:
        assert case.get("name"), "every promtool case has a name"
        for check in case.get("alert_rule_test", []):
            kind = "fires" if check.get("exp_alerts") else "silent"
            entry = counts.setdefault(check["alertname"], {"fires": 0, "silent": 0})
            entry[kind] += 1
    return counts


def test_every_alert_has_firing_and_silent_cases() -> None:
    counts = _cases()
    names = {rule["alert"] for rule in alert_rules()}
    assert set(counts) == names
    for name in names:
        assert counts[name]["fires"] >= 1, f"{name}: no case where it fires"
        assert counts[name]["silent"] >= 1, f"{name}: no case where it must not fire"


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alert_rules()])
def test_each_alert_is_needed_by_its_tests(alert: str, tmp_path: Path) -> None:
    """Replace one alert's expression by one that never fires: promtool's tests must fail
    for that alert. Shows the firing cases test the rule, not something else."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) == 0"
    (tmp_path / RULES_FILE.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(RULES_TEST_FILE, tmp_path / RULES_TEST_FILE.name)
    result = promtool("test", "rules", RULES_TEST_FILE.name, cwd=tmp_path)
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr))
    assert failed == {alert}, result.stdout[-2000:]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_style(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(rf"{PREFIX}(?:[A-Z][a-z0-9]*|GPU|CO2)+", name), name
    assert rule["labels"]["severity"] in SEVERITIES
    assert re.fullmatch(r"\d+[mh]", rule["for"]), "sustained conditions only"
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "dashboard_url"}
    summary = annotations["summary"]
    assert "{{" not in summary and summary[0].isupper() and summary.endswith(".")
    if not rule["expr"].startswith("absent("):  # absent() has no labels to describe
        assert "{{ $labels." in annotations["description"], "name the model or instance"
    assert annotations["description"].rstrip().endswith(".")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alerts_name_exporter_metrics_and_link_the_dashboards(rule: dict[str, Any]) -> None:
    found = selectors(rule["expr"])
    assert found
    per_model = False
    for metric, matchers in found:
        if metric == "up":  # Prometheus's own series for each scrape target
            assert set(matchers) <= {"job", "instance"}, matchers
            continue
        spec = SPECS.get(metric)
        assert spec is not None, f"{metric} is not an exporter metric"
        assert set(matchers) <= set(spec.labels), (metric, matchers)
        per_model |= spec.group == "model"
    url = rule["annotations"]["dashboard_url"]
    assert url.startswith("/d/"), "relative to Grafana's root"
    if per_model:
        assert url.startswith(f"/d/{DETAIL_UID}/")
        assert "var-namespace={{ $labels.namespace | urlquery }}" in url
        assert "var-model={{ $labels.model | urlquery }}" in url
    else:
        assert url.startswith(f"/d/{OVERVIEW_UID}/")


def test_the_readme_lists_every_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [rule["alert"] for rule in alert_rules() if f"`{rule['alert']}`" not in readme]
    assert not missing, f"README.md's Alerts list leaves out {missing}"


def test_docs_and_dashboards_name_only_alerts_that_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    paths = [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "deploy").rglob("*.md"),
        *DASHBOARD_DIR.glob("*.json"),
    ]
    for path in paths:
        named = set(re.findall(rf"\b{PREFIX}\w+", path.read_text()))
        assert named <= names, f"{path.relative_to(ROOT)} names no such alert: {named - names}"
