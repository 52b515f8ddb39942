"""What `diagnose` asks a Prometheus-compatible upstream besides a cycle's queries: an
inventory of the GPU and token series, over the same window as a cycle's."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.config import Config
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE
from exporter.sources.promql import TOKEN_ROW, Builder, by, tagged

INVENTORY_GPU_ROW = ("lce_node", "lce_namespace", "lce_pod", "lce_pod_label")
INVENTORY_READING = "lce_reading"
INVENTORY_METRIC = "lce_metric"
REPLICA_LABELS = ("prometheus_replica", "replica")  # HA pairs' labels that a querier dedups


def _which(expr: str, key: str, labels: Sequence[str]) -> str:
    """`expr` with `lce_<key>` naming the first of `labels` present on each series."""
    for label in reversed(labels):
        expr = f'label_replace({expr}, "lce_{key}", "{label}", "{label}", "(?s).+")'
    return expr


def inventory(config: Config, prompt_metrics: Sequence[str]) -> dict[str, str]:
    """Queries for `diagnose`, over the same window as a cycle's:

    - `gpus`: GPUs with power or energy series per node and pod (empty where no pod label
      names one), which label named the pod, tagged with the reading (MIG instances too);
    - `tokens`: token series per namespace, pod and model for each of `prompt_metrics`
      (labels left empty where absent), tagged with the metric;
    - `replicas`: the values of HA replica labels on token and power series."""
    b = Builder(config)
    names = config.upstream.metrics
    row = INVENTORY_GPU_ROW

    def held(metric: str, reading: str) -> str:
        series = _which(
            b.gpu("last_over_time", metric, b.gpu_sel), "pod_label", b.gpu_labels["pod"]
        )
        gpus = f"max by ({by((*row, 'lce_gpu_id'))}) ({series})"
        return tagged(f"count by ({by(row)}) ({gpus})", INVENTORY_READING, reading)

    def served(metric: str) -> str:
        counted = f"count by ({by(TOKEN_ROW)}) ({b.tok('last_over_time', metric)})"
        return tagged(counted, INVENTORY_METRIC, metric)

    either = "|".join(dict.fromkeys([names.prompt_tokens, names.gpu_power]))
    return {
        "gpus": f"{held(names.gpu_energy, ENERGY_COUNTER)} or {held(names.gpu_power, POWER_GAUGE)}",
        "tokens": " or ".join(served(metric) for metric in dict.fromkeys(prompt_metrics)),
        "replicas": f'count by ({by(REPLICA_LABELS)}) ({{__name__=~"{either}"}})',
    }
