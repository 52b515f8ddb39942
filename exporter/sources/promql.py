"""The PromQL the Prometheus source runs: a constant number of instant queries per cycle,
each aggregated on the server to one row per pod (or per pod and model), built once from the
configuration.

Label handling happens in PromQL: each canonical label (`lce_pod`, ...) is filled from the
first configured upstream label that is present, so `exported_pod` (dcgm-exporter scraped with
honorLabels false) wins over `pod`, a Kubernetes `node` label over `Hostname`, and `Hostname`
and `hostname` both work.

Series of MIG instances (with a GPU instance id) are left out of the per-pod queries and read
by the `mig` query: which pods hold which instances, and the power of the GPUs they split.
Counters that step back without restarting are reported as `lce_glitch` rows beside the
values they would spoil.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.config import Config, as_dict
from exporter.durations import promql_duration
from exporter.model.mig import PRESENCE_FIELDS
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE

POD = ("lce_namespace", "lce_pod")
GPU_ROW = (*POD, "lce_node", "lce_gpu_model")
TOKEN_ROW = (*POD, "lce_model")
MODEL = ("lce_namespace", "lce_model")
MIG_ROW = (*GPU_ROW, "lce_gpu_id", "lce_mig_instance", "lce_mig_profile")
GLITCH = "lce_glitch"  # on a row: a counter of this key stepped back without a restart
PHASE = "lce_phase"  # on a `tokens` row: which counter's rate it holds
# The `tokens` query's phases: prompt and generation tokens (both required), finished
# requests, and prompt tokens computed rather than served from the prefix cache.
TOKEN_PHASES = ("prompt", "generation", "requests", "prompt_computed")
REQUIRED_PHASES = TOKEN_PHASES[:2]  # without both, a model is left out
COMPUTED_SOURCE_VALUE = "local_compute"  # vllm:prompt_tokens_by_source_total{source}
COMPUTED_SOURCE = f'source="{COMPUTED_SOURCE_VALUE}"'
HOSTS = "lce_hosts"  # on a gpu_count row: not a count, the `lce_host` of the key
# Labels that tell apart series of one GPU that run at the same time (dcgm-exporter's MIG
# instance and shared-GPU copy labels, and the scrape job); `instance` and the dcgm-exporter's
# own `pod` are left out, as they change when its pod is replaced.
SIDE_BY_SIDE = ("GPU_I_ID", "gpu_i_id", "vgpu", "job")
BASE_GPU_LABELS = ("namespace", "pod", "node", "gpu_model", "gpu_id")


def _by(labels: Sequence[str]) -> str:
    return ", ".join(labels)


def _normalize(expr: str, choices: Mapping[str, list[str]]) -> str:
    """Wrap `expr` in label_replace calls so `lce_<key>` holds the first present label of
    each `choices[key]` (the least preferred is applied first, the preferred last)."""
    for key, labels in choices.items():
        for label in reversed(labels):
            expr = f'label_replace({expr}, "lce_{key}", "$1", "{label}", "(?s)(.+)")'
    return expr


def _tagged(expr: str, label: str, value: str) -> str:
    return f'label_replace({expr}, "{label}", "{value}", "", "")'


class _Builder:
    """The building blocks of the queries, for one configuration."""

    def __init__(self, config: Config) -> None:
        self.names = config.upstream.metrics
        self.window = promql_duration(config.prometheus.window)
        self.window_seconds = config.prometheus.window
        self.lookback = promql_duration(config.utilization.lookback)
        gpu_sel = config.prometheus.gpu_selector.strip().strip("{}")
        labels = config.upstream.gpu_labels
        self.instance_labels = list(labels.mig_instance)
        # Per-pod queries: whole GPUs only (no MIG instance id).
        self.whole_sel = ", ".join(
            [*([gpu_sel] if gpu_sel else []), *(f'{label}=""' for label in labels.mig_instance)]
        )
        self.gpu_sel = gpu_sel
        self.tok_sel = config.prometheus.token_selector.strip().strip("{}")
        choices = as_dict(labels)
        self.gpu_labels = {key: choices[key] for key in BASE_GPU_LABELS}
        # The Kubernetes node, where a relabeling adds it, wins over dcgm-exporter's own name.
        self.gpu_labels["node"] = [*labels.kubernetes_node, *labels.node]
        self.host_labels: dict[str, list[str]] = {"host": list(labels.node)}
        self.mig_labels: dict[str, list[str]] = {
            "mig_instance": list(labels.mig_instance),
            "mig_profile": list(labels.mig_profile),
        }
        self.tok_labels = as_dict(config.upstream.token_labels)

    def gpu(self, fn: str, metric: str, selector: str | None = None) -> str:
        sel = self.whole_sel if selector is None else selector
        return _normalize(f"{fn}({metric}{{{sel}}}[{self.window}])", self.gpu_labels)

    def tok(self, fn: str, metric: str, extra: str = "") -> str:
        sel = ", ".join(part for part in (self.tok_sel, extra) if part)
        return _normalize(f"{fn}({metric}{{{sel}}}[{self.window}])", self.tok_labels)

    def one_gpu(
        self, fn: str, metric: str, row: Sequence[str] = GPU_ROW, sel: str | None = None
    ) -> str:
        """One value per physical GPU: copies side by side (MIG instances, vgpu copies,
        another scrape job) repeat their GPU's energy and power, so take the largest."""
        series = self.gpu(fn, metric, sel)
        if fn == "increase":
            # A counter's series also follow each other: a replaced dcgm-exporter pod is
            # scraped at a new address, so each series covers part of the window and only
            # their increases added up cover all of it. (Not rate(): VictoriaMetrics divides
            # each series' increase by the time its own samples span.)
            series = (
                f"sum by ({_by((*row, 'lce_gpu_id', *SIDE_BY_SIDE))}) ({series}) "
                f"/ {self.window_seconds:g}"
            )
        return f"max by ({_by((*row, 'lce_gpu_id'))}) ({series})"

    def per_gpu(self, agg: str, fn: str, metric: str) -> str:
        return f"{agg} by ({_by(GPU_ROW)}) ({self.one_gpu(fn, metric)})"

    def glitches(self, normalize: str, metric: str, row: Sequence[str], extra: str = "") -> str:
        """Rows (tagged `lce_glitch`) of `row` keys where a counter series went backwards
        but stayed above half its window's maximum: a step back, not a restart to zero.
        `normalize` is "gpu" or "tok"; `extra` narrows the token selector."""

        def build(fn: str) -> str:
            return self.gpu(fn, metric) if normalize == "gpu" else self.tok(fn, metric, extra)

        stepped = (
            f"({build('resets')} > 0) and "
            f"({build('min_over_time')} > 0.5 * {build('max_over_time')})"
        )
        return _tagged(f"count by ({_by(row)}) ({stepped})", GLITCH, "1")

    def tokens(self) -> str:
        """One row per pod, model and phase (`lce_phase`): the rate of each token counter,
        of finished requests and of computed prompt tokens (where configured), and a glitch
        row, tagged with its phase, where one of these counters stepped back."""
        names = self.names
        counters = {
            "prompt": (names.prompt_tokens, ""),
            "generation": (names.generation_tokens, ""),
            "requests": (names.requests, ""),
            "prompt_computed": (names.prompt_tokens_by_source, COMPUTED_SOURCE),
        }
        parts = []
        for phase, (metric, extra) in counters.items():
            if not metric:
                continue
            rates = f"sum by ({_by(TOKEN_ROW)}) ({self.tok('rate', metric, extra)})"
            parts.append(_tagged(rates, PHASE, phase))
            parts.append(_tagged(self.glitches("tok", metric, TOKEN_ROW, extra), PHASE, phase))
        return " or ".join(parts)

    def seen(self, extra: Mapping[str, list[str]] | None = None) -> str:
        """One row per (pod, GPU) that has a power or energy series in the window."""
        row = (*GPU_ROW, "lce_gpu_id", *(f"lce_{k}" for k in extra or {}))
        return " or ".join(
            f"max by ({_by(row)}) ({_normalize(self.gpu('last_over_time', metric), extra or {})})"
            for metric in (self.names.gpu_power, self.names.gpu_energy)
        )

    def shared_gpus(self) -> str:
        """One row per (pod, GPU) for whole GPUs that more than one pod holds (time-sliced
        copies), with the GPU's power in each reading, labelled by reading so each pod's
        shared GPUs use its own power source: few rows, and what lets a model whose
        replicas share a GPU count it once."""
        energy_w = f"{self.one_gpu('increase', self.names.gpu_energy)} / 1000"
        gauge_w = self.one_gpu("avg_over_time", self.names.gpu_power)
        return (
            f"({_tagged(energy_w, 'lce_reading', ENERGY_COUNTER)} "
            f"or {_tagged(gauge_w, 'lce_reading', POWER_GAUGE)}) "
            f"and on (lce_node, lce_gpu_id) "
            f"(count by (lce_node, lce_gpu_id) ({self.seen()}) > 1)"
        )

    def mig(self) -> str:
        """MIG instances, one row each with the pod that holds it (if any) and its profile;
        and, tagged with the reading, the power of each GPU that has instances."""
        fields = [
            self.names.gpu_power,
            self.names.gpu_energy,
            self.names.gpu_engine_active,
            self.names.gpu_util,
        ]
        names = "|".join([*fields, *PRESENCE_FIELDS])
        extra = f", {self.gpu_sel}" if self.gpu_sel else ""
        instances = " or ".join(
            f'{{__name__=~"{names}", {label}=~".+"{extra}}}' for label in self.instance_labels
        )
        labelled = _normalize(_normalize(instances, self.gpu_labels), self.mig_labels)
        rows = f"count by ({_by(MIG_ROW)}) ({labelled})"
        gpu_key = ("lce_node", "lce_gpu_model")
        energy = f"{self.one_gpu('increase', self.names.gpu_energy, gpu_key, self.gpu_sel)} / 1000"
        gauge = self.one_gpu("avg_over_time", self.names.gpu_power, gpu_key, self.gpu_sel)
        power = (
            f"({_tagged(energy, 'lce_reading', ENERGY_COUNTER)} "
            f"or {_tagged(gauge, 'lce_reading', POWER_GAUGE)})"
        )
        return f"{rows} or ({power} and on (lce_node, lce_gpu_id) {rows})"

    def peak_tokens(self) -> str:
        names = self.names
        model_tps = (
            f"sum by ({_by(MODEL)}) ({self.tok('rate', names.prompt_tokens)}) "
            f"+ sum by ({_by(MODEL)}) ({self.tok('rate', names.generation_tokens)})"
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
    tokens: str
    mig: str
    peak_tokens: str

    @classmethod
    def build(cls, config: Config) -> Queries:
        b = _Builder(config)
        names = config.upstream.metrics

        # Rows tagged lce_hosts: the names dcgm-exporter gives each pod's node, to compare
        # with the Kubernetes node where a relabeling supplies one.
        hosts = _tagged(
            f"group by ({_by((*GPU_ROW, 'lce_host'))}) ({b.seen(b.host_labels)})", HOSTS, "1"
        )
        return cls(
            power_energy=(
                f"{b.per_gpu('sum', 'increase', names.gpu_energy)} / 1000 "
                f"or {b.glitches('gpu', names.gpu_energy, GPU_ROW)}"
            ),
            power_gauge=b.per_gpu("sum", "avg_over_time", names.gpu_power),
            gpu_count=f"count by ({_by(GPU_ROW)}) ({b.seen()}) or {hosts}",
            shared_gpus=b.shared_gpus(),
            busy=(
                f"{b.per_gpu('avg', 'avg_over_time', names.gpu_engine_active)} "
                f"or {b.per_gpu('avg', 'avg_over_time', names.gpu_util)} / 100"
            ),
            tokens=b.tokens(),
            mig=b.mig(),
            peak_tokens=b.peak_tokens(),
        )

    def per_cycle(self) -> dict[str, str]:
        return {
            "power_energy": self.power_energy,
            "power_gauge": self.power_gauge,
            "gpu_count": self.gpu_count,
            "shared_gpus": self.shared_gpus,
            "busy": self.busy,
            "tokens": self.tokens,
            "mig": self.mig,
        }

    def lookback(self) -> dict[str, str]:
        return {"peak_tokens": self.peak_tokens}


# Queries whose failure fails the cycle; the others degrade one figure.
REQUIRED = ("gpu_count", "tokens")


# ---- what `diagnose` asks besides a cycle's queries

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
    b = _Builder(config)
    names = config.upstream.metrics
    row = INVENTORY_GPU_ROW

    def held(metric: str, reading: str) -> str:
        series = _which(
            b.gpu("last_over_time", metric, b.gpu_sel), "pod_label", b.gpu_labels["pod"]
        )
        gpus = f"max by ({_by((*row, 'lce_gpu_id'))}) ({series})"
        return _tagged(f"count by ({_by(row)}) ({gpus})", INVENTORY_READING, reading)

    def served(metric: str) -> str:
        counted = f"count by ({_by(TOKEN_ROW)}) ({b.tok('last_over_time', metric)})"
        return _tagged(counted, INVENTORY_METRIC, metric)

    either = "|".join(dict.fromkeys([names.prompt_tokens, names.gpu_power]))
    return {
        "gpus": f"{held(names.gpu_energy, ENERGY_COUNTER)} or {held(names.gpu_power, POWER_GAUGE)}",
        "tokens": " or ".join(served(metric) for metric in dict.fromkeys(prompt_metrics)),
        "replicas": f'count by ({_by(REPLICA_LABELS)}) ({{__name__=~"{either}"}})',
    }
