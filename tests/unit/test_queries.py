"""The PromQL the Prometheus source builds: a constant set of per-cycle queries, a follow-up
made only of the parts the cycle's rows call for, and namespace shards as escaped matchers.
(What the queries return is tested against real Prometheus and VictoriaMetrics servers.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from exporter.cli import main
from exporter.config import build, default_document, merge
from exporter.sources import recording
from exporter.sources.dcgm_units import energy_per_joule, utilization_per_ratio
from exporter.sources.prometheus_api import Sample
from exporter.sources.promql import promql_string
from exporter.sources.queries import MAX_PER_CYCLE, Queries


def queries(**prometheus: object) -> Queries:
    document = merge(default_document(), {"prometheus": {"url": "http://p:9090", **prometheus}})
    return Queries.build(build(document))


def test_per_cycle_queries_stay_within_the_limit_with_a_follow_up() -> None:
    q = queries()
    assert len(q.per_cycle()) + 1 <= MAX_PER_CYCLE


def test_the_follow_up_holds_only_what_was_called_for() -> None:
    q = queries()
    assert q.follow_up() == ""
    assert q.follow_up(mig=True) == q.mig_power
    assert q.follow_up(shared=True) == q.shared_gpus
    both = q.follow_up(energy_resets=True, token_resets=["prompt"])
    assert both == f"{q.energy_glitches} or {q.token_glitches['prompt']}"
    assert "generation" not in both


def test_selectors_with_braces_or_a_trailing_comma_give_the_same_queries() -> None:
    plain = queries(gpu_selector='job="dcgm"', token_selector='job="vllm"')
    for gpu, tok in [('job="dcgm",', '{job="vllm",}'), (' { job="dcgm" , } ', 'job="vllm" ,')]:
        q = queries(gpu_selector=gpu, token_selector=tok)
        assert q.per_cycle() == plain.per_cycle()
        assert q.peak_tokens == plain.peak_tokens
        assert q.follow_up(True, True, True, ["prompt"]) == plain.follow_up(
            True, True, True, ["prompt"]
        )


def test_dcgm_fields_are_read_in_the_unit_their_name_states() -> None:
    assert (
        energy_per_joule("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"),
        energy_per_joule("DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL"),
    ) == (1000, 1)
    # The unit is the name's suffix: millijoules stay millijoules, a word inside is no unit.
    assert energy_per_joule("gpu_energy_millijoules_total") == 1000
    assert energy_per_joule("recorded:gpu_energy_joules") == 1
    assert energy_per_joule("JOULES_COUNTER_MJ") == 1000
    assert (
        utilization_per_ratio("DCGM_FI_DEV_GPU_UTIL"),
        utilization_per_ratio("DCGM_FI_DEV_GPU_UTIL_RATIO"),
    ) == (100, 1)
    legacy = queries().per_cycle()
    base = merge(
        default_document(),
        {
            "prometheus": {"url": "http://p:9090"},
            "upstream": {
                "metrics": {
                    "gpu_energy": "DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL",
                    "gpu_util": "DCGM_FI_DEV_GPU_UTIL_RATIO",
                }
            },
        },
    )
    ratio = Queries.build(build(base)).per_cycle()
    assert ") / 1000 or " in legacy["power_energy"] and ") / 1000" not in ratio["power_energy"]
    assert legacy["busy"].endswith(") / 100") and not ratio["busy"].endswith("/ 100")
    assert "DCGM_FI_DEV_GPU_UTIL_RATIO" in ratio["busy"]


def test_a_namespace_shard_narrows_every_selector_and_is_escaped() -> None:
    pattern = 'team-a|odd"name\\.x'
    assert promql_string(pattern) == '"team-a|odd\\"name\\\\.x"'
    sharded = queries(namespaces=pattern)
    everything = queries()
    for name, expr in sharded.per_cycle().items():
        if name == "mig":
            continue  # few rows, checked by namespace in the source
        assert promql_string(pattern) in expr, name
        assert promql_string(pattern) not in everything.per_cycle()[name]
    assert promql_string(pattern) in sharded.peak_tokens


def test_the_shipped_recording_rules_are_those_of_the_default_configuration(
    capsys, tmp_path: Path
) -> None:
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "recording_rules.yaml"
    assert main(["recording-rules"], environ={}) == 0
    printed = capsys.readouterr().out
    assert shipped.read_text() == printed, "regenerate: llm-carbon-exporter recording-rules"
    document = yaml.safe_load(printed)
    (group,) = document["groups"]
    defaults = queries()
    assert [r["record"] for r in group["rules"]] == [
        recording.PREFIX + name for name in defaults.per_cycle()
    ]
    # Operators may load them beside the alert rules, in one PrometheusRule or rule file:
    # group names must not collide.
    alerts = yaml.safe_load((shipped.parent / "alerts.yaml").read_text())["groups"]
    assert group["name"] not in {g["name"] for g in alerts}
    merged = tmp_path / "rules.yaml"
    merged.write_text(yaml.safe_dump({"groups": alerts + document["groups"]}))
    promtool = shutil.which("promtool")
    if promtool:  # the integration tests need it anyway; here it checks the syntax too
        for path in (shipped, merged):
            result = subprocess.run(
                [promtool, "check", "rules", str(path)], capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_read_only_while_every_one_is_evaluated_with_todays_expression() -> None:
    per_cycle = queries().per_cycle()
    found = [
        Sample({"__name__": recording.PREFIX + name, recording.HASH: recording.fingerprint(q)}, 1)
        for name, q in per_cycle.items()
    ]
    assert recording.in_force(found, per_cycle)
    assert not recording.in_force(found[1:], per_cycle)  # one rule missing
    other = queries(window="2m").per_cycle()
    assert not recording.in_force(found, other)  # rules of another configuration
    rows, evaluated = recording.rows(
        [
            Sample({"__name__": "x", recording.HASH: "h", "lce_pod": "p"}, 2.0),
            Sample({"__name__": "x", recording.HASH: "h", recording.SENTINEL: "1"}, 1.0),
        ]
    )
    assert evaluated and rows == [Sample({"lce_pod": "p"}, 2.0)]
    assert recording.rows(rows) == (rows, False)
