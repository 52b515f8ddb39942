"""The PromQL the Prometheus source runs: a constant number of instant queries per cycle,
each aggregated on the server to one row per pod (or per pod and model), built once from the
configuration.

Label handling happens in PromQL: each canonical label (`lce_pod`, ...) is filled from the
first configured upstream label that is present, so `exported_pod` (dcgm-exporter scraped with
honorLabels false) wins over `pod`, and `Hostname` and `hostname` both work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.config import Config, as_dict
from exporter.durations import promql_duration
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE

POD = ("lce_namespace", "lce_pod")
GPU_ROW = (*POD, "lce_node", "lce_gpu_model")
TOKEN_ROW = (*POD, "lce_model")
MODEL = ("lce_namespace", "lce_model")
# Labels that tell apart series of one GPU that run at the same time (dcgm-exporter's MIG
# instance and shared-GPU copy labels, and the scrape job); `instance` and the dcgm-exporter's
# own `pod` are left out, as they change when its pod is replaced.
SIDE_BY_SIDE = ("GPU_I_ID", "vgpu", "job")


def _by(labels: tuple[str, ...]) -> str:
    return ", ".join(labels)


def _normalize(expr: str, choices: Mapping[str, list[str]]) -> str:
    """Wrap `expr` in label_replace calls so `lce_<key>` holds the first present label of
    each `choices[key]` (the least preferred is applied first, the preferred last)."""
    for key, labels in choices.items():
        for label in reversed(labels):
            expr = f'label_replace({expr}, "lce_{key}", "$1", "{label}", "(?s)(.+)")'
    return expr


class _Builder:
    """The building blocks of the queries, for one configuration."""

    def __init__(self, config: Config) -> None:
        self.names = config.upstream.metrics
        self.window = promql_duration(config.prometheus.window)
        self.window_seconds = config.prometheus.window
        self.lookback = promql_duration(config.utilization.lookback)
        self.gpu_sel = config.prometheus.gpu_selector.strip().strip("{}")
        self.tok_sel = config.prometheus.token_selector.strip().strip("{}")
        self.gpu_labels = as_dict(config.upstream.gpu_labels)
        self.tok_labels = as_dict(config.upstream.token_labels)

    def gpu(self, fn: str, metric: str) -> str:
        return _normalize(f"{fn}({metric}{{{self.gpu_sel}}}[{self.window}])", self.gpu_labels)

    def tok(self, metric: str) -> str:
        return _normalize(f"rate({metric}{{{self.tok_sel}}}[{self.window}])", self.tok_labels)

    def one_gpu(self, fn: str, metric: str) -> str:
        """One value per physical GPU: copies side by side (MIG instances, vgpu copies,
        another scrape job) repeat their GPU's energy and power, so take the largest."""
        series = self.gpu(fn, metric)
        if fn == "increase":
            # A counter's series also follow each other: a replaced dcgm-exporter pod is
            # scraped at a new address, so each series covers part of the window and only
            # their increases added up cover all of it. (Not rate(): VictoriaMetrics divides
            # each series' increase by the time its own samples span.)
            series = (
                f"sum by ({_by((*GPU_ROW, 'lce_gpu_id', *SIDE_BY_SIDE))}) ({series}) "
                f"/ {self.window_seconds:g}"
            )
        return f"max by ({_by((*GPU_ROW, 'lce_gpu_id'))}) ({series})"

    def per_gpu(self, agg: str, fn: str, metric: str) -> str:
        return f"{agg} by ({_by(GPU_ROW)}) ({self.one_gpu(fn, metric)})"

    def seen(self) -> str:
        """One row per (pod, GPU) that has a power or energy series in the window."""
        return " or ".join(
            f"max by ({_by((*GPU_ROW, 'lce_gpu_id'))}) ({self.gpu('last_over_time', metric)})"
            for metric in (self.names.gpu_power, self.names.gpu_energy)
        )

    def shared_gpus(self) -> str:
        """One row per (pod, GPU) for GPUs that more than one pod holds (MIG slices,
        time-sliced copies), with the GPU's power in each reading, labelled by reading so
        each pod's shared GPUs use its own power source: few rows, and what lets a model
        whose replicas share a GPU count it once."""

        def reading(expr: str, kind: str) -> str:
            return f'label_replace({expr}, "lce_reading", "{kind}", "", "")'

        energy_w = f"{self.one_gpu('increase', self.names.gpu_energy)} / 1000"
        gauge_w = self.one_gpu("avg_over_time", self.names.gpu_power)
        return (
            f"({reading(energy_w, ENERGY_COUNTER)} or {reading(gauge_w, POWER_GAUGE)}) "
            f"and on (lce_node, lce_gpu_id) "
            f"(count by (lce_node, lce_gpu_id) ({self.seen()}) > 1)"
        )

    def peak_tokens(self) -> str:
        names = self.names
        model_tps = (
            f"sum by ({_by(MODEL)}) ({self.tok(names.prompt_tokens)}) "
            f"+ sum by ({_by(MODEL)}) ({self.tok(names.generation_tokens)})"
        )
        return f"max_over_time(({model_tps})[{self.lookback}:{self.window}])"


@dataclass(frozen=True)
class Queries:
    """Every PromQL expression the source runs, built once from the configuration."""

    power_energy: str
    power_gauge: str
    gpu_count: str
    shared_gpus: str
    busy: str
    prompt: str
    generation: str
    peak_tokens: str

    @classmethod
    def build(cls, config: Config) -> Queries:
        b = _Builder(config)
        names = config.upstream.metrics
        return cls(
            power_energy=f"{b.per_gpu('sum', 'increase', names.gpu_energy)} / 1000",
            power_gauge=b.per_gpu("sum", "avg_over_time", names.gpu_power),
            gpu_count=f"count by ({_by(GPU_ROW)}) ({b.seen()})",
            shared_gpus=b.shared_gpus(),
            busy=(
                f"{b.per_gpu('avg', 'avg_over_time', names.gpu_engine_active)} "
                f"or {b.per_gpu('avg', 'avg_over_time', names.gpu_util)} / 100"
            ),
            prompt=f"sum by ({_by(TOKEN_ROW)}) ({b.tok(names.prompt_tokens)})",
            generation=f"sum by ({_by(TOKEN_ROW)}) ({b.tok(names.generation_tokens)})",
            peak_tokens=b.peak_tokens(),
        )

    def per_cycle(self) -> dict[str, str]:
        return {
            "power_energy": self.power_energy,
            "power_gauge": self.power_gauge,
            "gpu_count": self.gpu_count,
            "shared_gpus": self.shared_gpus,
            "busy": self.busy,
            "prompt": self.prompt,
            "generation": self.generation,
        }

    def lookback(self) -> dict[str, str]:
        return {"peak_tokens": self.peak_tokens}


# Queries whose failure fails the cycle; the others degrade one figure.
REQUIRED = ("gpu_count", "prompt", "generation")
