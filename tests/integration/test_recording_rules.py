"""The optional recording rules (`llm-carbon-exporter recording-rules`) loaded into a real
Prometheus: the exporter finds them, reads the recorded series instead of the raw ones, says
so on llm_carbon_methodology_info, and publishes the same figures as an exporter that queries
the raw series. Rules made for another configuration are not read."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from exporter.demo.endpoints import SimulatedEndpoints
from exporter.demo.simulation import SimCluster, targets
from tests.harness import PrometheusServer, pick, wait_until
from tests.live import HISTORY_SECONDS, SCRAPE_SECONDS, wait_for_live_scrapes
from tests.simulated import openmetrics_history

pytestmark = pytest.mark.integration

PER_MODEL = (
    "llm_carbon_power_watts",
    "llm_carbon_gpus",
    "llm_carbon_tokens_per_second",
    "llm_carbon_requests_per_second",
    "llm_carbon_energy_joules_per_token",
    "llm_carbon_co2_grams_per_token",
    "llm_carbon_gpu_busy_ratio",
)


def rules_for(config: dict, workdir: Path) -> Path:
    """The rule file the CLI prints for `config` (as an operator would make it)."""
    path = workdir / "exporter-config.yaml"
    path.write_text(yaml.safe_dump(config))
    rules = workdir / "llm-carbon-rules.yaml"
    command = [sys.executable, "-m", "exporter", "recording-rules", "--config", str(path)]
    rules.write_text(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return rules


def prometheus_with_rules(
    workdir: Path, endpoints: SimulatedEndpoints, cluster: SimCluster, rules: Path
) -> PrometheusServer:
    now = time.time()
    start = now - HISTORY_SECONDS
    history = openmetrics_history(
        cluster, endpoints.address, start - start % SCRAPE_SECONDS, now - 1, SCRAPE_SECONDS
    )
    server = PrometheusServer(
        workdir, endpoints.address, targets(cluster), backfill=history, scrape_interval=2
    )
    document = yaml.safe_load(server.config_path.read_text())
    document["rule_files"] = [str(rules)]
    server.config_path.write_text(yaml.safe_dump(document))
    server.start()
    wait_for_live_scrapes(server, len(targets(cluster)))
    wait_until(
        lambda: len(server.query('{__name__=~"llm_carbon_upstream:.+", lce_sentinel="1"}')) == 7,
        30,
        "every recording rule evaluated",
    )
    return server


def figures(samples: list) -> dict[tuple, float]:
    return {
        (name, tuple(sorted(labels.items()))): value
        for name in PER_MODEL
        for labels, value in pick(samples, name)
    }


def reads(samples: list) -> str:
    return pick(samples, "llm_carbon_methodology_info")[0][0]["upstream_reads"]


@pytest.mark.parametrize("rules_config", ["same", "another window"])
def test_recorded_queries_give_the_same_figures(
    tmp_path, endpoints, cluster, exporter_factory, rules_config: str
) -> None:
    config: dict = {"exporter": {"interval": "1s"}}
    made_for = config if rules_config == "same" else {**config, "prometheus": {"window": "2m"}}
    rules = rules_for(made_for, tmp_path)
    server = prometheus_with_rules(tmp_path / "prometheus", endpoints, cluster, rules)
    try:
        url = {"url": server.url}
        recorded = exporter_factory({**config, "prometheus": url})
        raw = exporter_factory({**config, "prometheus": {**url, "recording_rules": "off"}})
        time.sleep(3)  # a few rule evaluations and cycles on both sides
        with_rules, without = recorded.samples(), raw.samples()
    finally:
        server.stop()

    assert reads(without) == "queries"
    if rules_config != "same":  # rules for other queries: never read
        assert reads(with_rules) == "queries"
        return
    assert reads(with_rules) == "recording_rules"
    assert "recording rules found: reading them" in recorded.log()
    got, want = figures(with_rules), figures(without)
    assert got.keys() == want.keys()
    assert {labels for (name, labels) in want if name == "llm_carbon_power_watts"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=0.02, abs=1e-9), key
