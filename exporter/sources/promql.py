"""The building blocks of the PromQL the Prometheus source runs (`queries.Queries` puts them
together): instant queries, each aggregated on the server to one row per pod (or per pod and
model).

Label handling happens in PromQL: each canonical label (`lce_pod`, ...) is filled from the
first configured upstream label that is present, so `exported_pod` (dcgm-exporter scraped with
honorLabels false) wins over `pod`, a Kubernetes `node` label over `Hostname`, and `Hostname`
and `hostname` both work.

Series of MIG instances (with a GPU instance id) are left out of the per-pod queries and read
by the `mig` query (which pods hold which instances); the power of the GPUs they split comes
in the follow-up. Counters that went backwards are tagged `lce_resets`; the follow-up tells a
step back without a restart (`lce_glitch`, beside the values it would spoil) from a restart.

Cost: each query reads its raw series once per function, aggregates them on their own labels
first, and only then fills the canonical labels, on the few per-pod rows rather than on every
GPU series (a `label_replace` over every series costs about as much as reading it). Where one
GPU's copies must be merged (side-by-side series, a dcgm-exporter rollout), the series are
split by which pod label names the pod, so the label that is overridden (dcgm-exporter's own
`pod` beside `exported_pod`) never keeps copies apart. `docs/scaling.md` has the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from exporter.config import Config, as_dict
from exporter.durations import promql_duration
from exporter.model.mig import PRESENCE_FIELDS
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE
from exporter.sources.dcgm_units import divided, energy_per_joule

POD = ("lce_namespace", "lce_pod")
GPU_ROW = (*POD, "lce_node", "lce_gpu_model")
TOKEN_ROW = (*POD, "lce_model")
MODEL = ("lce_namespace", "lce_model")
MIG_ROW = (*GPU_ROW, "lce_gpu_id", "lce_mig_instance", "lce_mig_profile")
GLITCH = "lce_glitch"  # on a row: a counter of this key stepped back without a restart
SHARED = "lce_shared"  # on a gpu_holders row: this (node, GPU) has more than one holder
RESETS = "lce_resets"  # on a row: a counter of this key went backwards (restart or glitch)
PHASE = "lce_phase"  # on a `tokens` row: which counter's rate it holds
# The `tokens` query's phases: prompt and generation tokens (both required), finished
# requests, and prompt tokens computed rather than served from the prefix cache.
TOKEN_PHASES = ("prompt", "generation", "requests", "prompt_computed")
REQUIRED_PHASES = TOKEN_PHASES[:2]  # without both, a model is left out
COMPUTED_SOURCE_VALUE = "local_compute"  # vllm:prompt_tokens_by_source_total{source}
COMPUTED_SOURCE = f'source="{COMPUTED_SOURCE_VALUE}"'
HOST = "lce_host"  # on a gpu_count row: dcgm-exporter's name for the pod's node
# Labels that tell apart series of one GPU that run at the same time (dcgm-exporter's MIG
# instance and shared-GPU copy labels, and the scrape job); `instance` and the dcgm-exporter's
# own `pod` are left out, as they change when its pod is replaced.
SIDE_BY_SIDE = ("GPU_I_ID", "gpu_i_id", "vgpu", "job")
BASE_GPU_LABELS = ("namespace", "pod", "node", "gpu_model", "gpu_id")


def by(labels: Sequence[str]) -> str:
    return ", ".join(labels)


def _normalize(expr: str, choices: Mapping[str, list[str]]) -> str:
    """Wrap `expr` in label_replace calls so `lce_<key>` holds the first present label of
    each `choices[key]` (the least preferred is applied first, the preferred last)."""
    for key, labels in choices.items():
        for label in reversed(labels):
            expr = f'label_replace({expr}, "lce_{key}", "$1", "{label}", "(?s)(.+)")'
    return expr


def selector_body(selector: str) -> str:
    """A configured selector's matchers without braces or a trailing comma (both valid
    PromQL), ready to be joined with more matchers."""
    return selector.strip().strip("{}").strip().rstrip(",").strip()


def promql_string(value: str) -> str:
    """`value` as a PromQL double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unique(labels: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(labels))


def tagged(expr: str, label: str, value: str) -> str:
    return f'label_replace({expr}, "{label}", "{value}", "", "")'


class Builder:
    """The building blocks of the queries, for one configuration."""

    def __init__(self, config: Config) -> None:
        self.names = config.upstream.metrics
        self.window = promql_duration(config.prometheus.window)
        self.window_seconds = config.prometheus.window
        self.lookback = promql_duration(config.utilization.lookback)
        gpu_sel = selector_body(config.prometheus.gpu_selector)
        labels = config.upstream.gpu_labels
        self.instance_labels = list(labels.mig_instance)
        # Per-pod queries: whole GPUs only (no MIG instance id).
        self.whole_sel = ", ".join(
            [*([gpu_sel] if gpu_sel else []), *(f'{label}=""' for label in labels.mig_instance)]
        )
        self.gpu_sel = gpu_sel
        self.tok_sel = selector_body(config.prometheus.token_selector)
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
        self.default_model = config.upstream.default_model
        namespaces = config.prometheus.namespaces
        self.namespaces = promql_string(namespaces) if namespaces else ""
        # Raw label sets to aggregate on before the canonical labels are filled.
        self.pod_choices = list(self.gpu_labels["pod"])
        self.raw_place = _unique(
            [*self.gpu_labels["namespace"], *self.gpu_labels["node"], *self.gpu_labels["gpu_model"]]
        )
        self.raw_row = _unique([*self.raw_place, *self.pod_choices])
        self.raw_gpu = list(self.gpu_labels["gpu_id"])
        self.raw_node_gpu = _unique([*self.gpu_labels["node"], *self.raw_gpu])
        self.raw_tok = _unique([label for labels in self.tok_labels.values() for label in labels])
        self.row_labels = {k: v for k, v in self.gpu_labels.items() if k != "gpu_id"}

    def gpu(self, fn: str, metric: str, selector: str | None = None) -> str:
        """`fn` over every matching GPU series, canonical labels filled on each (costly over
        a fleet: for `diagnose` and the rare follow-ups, not for the per-cycle queries)."""
        sel = self.whole_sel if selector is None else selector
        return _normalize(f"{fn}({metric}{{{sel}}}[{self.window}])", self.gpu_labels)

    def tok(self, fn: str, metric: str, extra: str = "") -> str:
        """`fn` over every matching token series, canonical labels filled on each."""
        return self.tok_labelled(self.tok_raw(fn, metric, extra))

    def tok_labelled(self, expr: str, keys: Sequence[str] = ("namespace", "pod", "model")) -> str:
        """`expr` (raw token labels) with the canonical labels of `keys` filled; a series
        that names no model gets `upstream.default_model`, where set (TGI's name none)."""
        out = _normalize(expr, {key: self.tok_labels[key] for key in keys})
        if self.default_model and "model" in keys:
            model = promql_string(self.default_model.replace("$", "$$"))
            out = f'label_replace({out}, "lce_model", {model}, "lce_model", "")'
        return out

    def tok_raw(self, fn: str, metric: str, extra: str = "") -> str:
        sel = ", ".join(part for part in (self.tok_sel, extra) if part)
        return self.raw(fn, metric, sel, self.tok_labels["namespace"])

    def raw(self, fn: str, metric: str, sel: str, namespace: Sequence[str]) -> str:
        """`fn` over the series of `metric` matching `sel` (of `prometheus.namespaces` only,
        where set: each series by the first of its `namespace` labels present)."""
        parts = [
            f"{fn}({metric}{{{', '.join([*([sel] if sel else []), *matchers])}}}[{self.window}])"
            for matchers in self.in_namespaces(namespace)
        ]
        return parts[0] if len(parts) == 1 else f"({' or '.join(parts)})"

    def in_namespaces(self, choices: Sequence[str]) -> list[list[str]]:
        """Matchers selecting the series of `prometheus.namespaces`, one list per namespace
        label of `choices` (the series where it is the first present); [[]] for all."""
        if not self.namespaces:
            return [[]]
        return [
            [*(f'{earlier}=""' for earlier in choices[:i]), f"{label}=~{self.namespaces}"]
            for i, label in enumerate(choices)
        ]

    def partitions(self, selector: str) -> list[tuple[str, list[str]]]:
        """(selector, raw row labels): the series split by which pod label names the pod
        (the first present of the configured choices), and those with none (GPUs no pod
        holds). Within one part the labels a row is grouped by are the same for every copy
        of a GPU, so copies merge without filling canonical labels first."""
        base = [selector] if selector else []
        pods = [
            ([*(f'{earlier}=""' for earlier in self.pod_choices[:i]), f'{label}!=""'], [label])
            for i, label in enumerate(self.pod_choices)
        ]
        pods.append(([f'{c}=""' for c in self.pod_choices], []))
        return [
            (", ".join([*base, *matchers, *spaces]), [*self.raw_place, *pod])
            for matchers, pod in pods
            for spaces in self.in_namespaces(self.gpu_labels["namespace"])
        ]

    def one_gpu_raw(self, fn: str, metric: str, sel: str, row: Sequence[str]) -> str:
        """One value per physical GPU and `row` (raw labels): copies side by side (MIG
        instances, vgpu copies, another scrape job) repeat their GPU's energy and power, so
        take the largest."""
        series = f"{fn}({metric}{{{sel}}}[{self.window}])"
        keep = _unique([*row, *self.raw_gpu])
        if fn == "increase":
            # A counter's series also follow each other: a replaced dcgm-exporter pod is
            # scraped at a new address, so each series covers part of the window and only
            # their increases added up cover all of it. (Not rate(): VictoriaMetrics divides
            # each series' increase by the time its own samples span.)
            series = (
                f"sum by ({by(_unique([*keep, *SIDE_BY_SIDE]))}) ({series}) "
                f"/ {self.window_seconds:g}"
            )
        return f"max by ({by(keep)}) ({series})"

    def per_gpu(self, agg: str, fn: str, metric: str) -> str:
        """One row per pod (GPU_ROW): `agg` over its GPUs of each GPU's `fn(metric)` (the
        largest of its copies). Aggregated on raw labels per part, then labelled."""
        parts = [
            f"{agg} by ({by(row)}) ({self.one_gpu_raw(fn, metric, sel, row)})"
            for sel, row in self.partitions(self.whole_sel)
        ]
        return f"{agg} by ({by(GPU_ROW)}) ({_normalize(' or '.join(parts), self.row_labels)})"

    def glitches(
        self, normalize: str, metric: str, row: Sequence[str], extra: str = "", gate: bool = False
    ) -> str:
        """Rows (tagged `lce_glitch`) of `row` keys where a counter series went backwards
        but stayed above half its window's maximum: a step back, not a restart to zero.
        With `gate`, the cheap first look asked every cycle: rows (tagged `lce_resets`)
        where a counter went backwards at all, which call for the full test as a follow-up.
        `normalize` is "gpu" or "tok"; `extra` narrows the token selector."""
        if normalize == "gpu":

            def build(fn: str) -> str:
                return self.raw(fn, metric, self.whole_sel, self.gpu_labels["namespace"])

            def labelled(expr: str) -> str:
                return _normalize(expr, self.row_labels)

            raw = self.raw_row
        else:

            def build(fn: str) -> str:
                return self.tok_raw(fn, metric, extra)

            raw, labelled = self.raw_tok, self.tok_labelled
        stepped = f"{build('resets')} > 0"
        if not gate:
            stepped = f"({stepped}) and ({build('min_over_time')} > 0.5 * {build('max_over_time')})"
        rows = labelled(f"count by ({by(raw)}) ({stepped})")
        return tagged(f"count by ({by(row)}) ({rows})", RESETS if gate else GLITCH, "1")

    def tok_rate_raw(self, metric: str, extra: str = "") -> str:
        """Per pod and model, in raw labels: the counter's increase over the window per
        second, summed over the pod's series within each scrape job (its engines, finished
        reasons, and the series before and after a move to another address), the largest
        over jobs (two jobs scraping one page repeat it). increase()/window, not rate():
        VictoriaMetrics divides each series' increase by the time its own samples span, so
        a counter split by a move would count twice, and the power it is set against is
        computed the same way."""
        increase = self.tok_raw("increase", metric, extra)
        per_job = f"sum by ({by(_unique([*self.raw_tok, 'job']))}) ({increase})"
        return f"max by ({by(self.raw_tok)}) ({per_job}) / {self.window_seconds:g}"

    def token_rates(self, metric: str, extra: str = "") -> str:
        rates = self.tok_rate_raw(metric, extra)
        return f"sum by ({by(TOKEN_ROW)}) ({self.tok_labelled(rates)})"

    def token_counters(self) -> dict[str, tuple[str, str]]:
        """Phase -> (counter, selector narrowing) of each configured token counter."""
        names = self.names
        counters = {
            "prompt": (names.prompt_tokens, ""),
            "generation": (names.generation_tokens, ""),
            "requests": (names.requests, ""),
            "prompt_computed": (names.prompt_tokens_by_source, COMPUTED_SOURCE),
        }
        return {phase: (metric, extra) for phase, (metric, extra) in counters.items() if metric}

    def tokens(self) -> str:
        """One row per pod, model and phase (`lce_phase`): the rate of each token counter,
        of finished requests and of computed prompt tokens (where configured), and a row
        tagged `lce_resets` where one of these counters went backwards."""
        parts = []
        for phase, (metric, extra) in self.token_counters().items():
            parts.append(tagged(self.token_rates(metric, extra), PHASE, phase))
            gate = self.glitches("tok", metric, TOKEN_ROW, extra, gate=True)
            parts.append(tagged(gate, PHASE, phase))
        return " or ".join(parts)

    def token_glitches(self) -> dict[str, str]:
        """Phase -> the full step-back test of its counter (rows tagged `lce_glitch`)."""
        return {
            phase: tagged(self.glitches("tok", metric, TOKEN_ROW, extra), PHASE, phase)
            for phase, (metric, extra) in self.token_counters().items()
        }

    def seen_raw(self) -> list[tuple[str, list[str]]]:
        """Per part: one row per (pod, GPU) in raw labels that has a power or energy series
        in the window (a function drops the metric name, so `or` keeps each GPU once)."""
        out = []
        for sel, row in self.partitions(self.whole_sel):
            either = " or ".join(
                f"last_over_time({metric}{{{sel}}}[{self.window}])"
                for metric in (self.names.gpu_power, self.names.gpu_energy)
            )
            out.append((f"group by ({by(_unique([*row, *self.raw_gpu]))}) ({either})", row))
        return out

    def gpu_count(self) -> str:
        """GPUs per pod, by the name dcgm-exporter gives the pod's node (`lce_host`): one
        row per name, to compare with the Kubernetes node where a relabeling supplies one."""
        parts = " or ".join(f"count by ({by(row)}) ({gpus})" for gpus, row in self.seen_raw())
        labelled = _normalize(_normalize(parts, self.row_labels), self.host_labels)
        return f"sum by ({by((*GPU_ROW, 'lce_host'))}) ({labelled})"

    def holders(self) -> str:
        """One row per whole GPU (raw node and id labels) that more than one pod holds."""
        seen = " or ".join(g for g, _ in self.seen_raw())
        return f"count by ({by(self.raw_node_gpu)}) ({seen}) > 1"

    def readings(self, one_gpu: Callable[[str, str], str]) -> dict[str, str]:
        """Reading -> each GPU's power in watts, `one_gpu(fn, metric)` giving one value per
        GPU: the energy counter's increase per second (in W), the power gauge's mean."""
        return {
            ENERGY_COUNTER: divided(
                f"({one_gpu('increase', self.names.gpu_energy)})",
                energy_per_joule(self.names.gpu_energy),
            ),
            POWER_GAUGE: one_gpu("avg_over_time", self.names.gpu_power),
        }

    def gpu_holders(self) -> str:
        """One row (tagged `lce_shared`) per whole GPU that more than one pod holds, which
        calls for `shared_gpus`; none on most clusters. Counted on raw labels."""
        shared = _normalize(self.holders(), {k: self.gpu_labels[k] for k in ("node", "gpu_id")})
        return tagged(f"group by (lce_node, lce_gpu_id) ({shared})", SHARED, "1")

    def shared_gpus(self) -> str:
        """One row per (pod, GPU) for whole GPUs that more than one pod holds (time-sliced
        copies), with the GPU's power in each reading, labelled by reading so each pod's
        shared GPUs use its own power source: few rows, and what lets a model whose
        replicas share a GPU count it once. Asked only when `gpu_holders` finds such GPUs."""
        parts = self.partitions(self.whole_sel)

        def values(fn: str, metric: str) -> str:
            return " or ".join(self.one_gpu_raw(fn, metric, sel, row) for sel, row in parts)

        either = " or ".join(
            tagged(watts, "lce_reading", reading)
            for reading, watts in self.readings(values).items()
        )
        on = by(self.raw_node_gpu)
        return _normalize(f"({either}) and on ({on}) ({self.holders()})", self.gpu_labels)

    def mig_instances(self) -> str:
        names = self.names
        fields = [names.gpu_power, names.gpu_energy, names.gpu_engine_active, names.gpu_util]
        names_re = "|".join([*fields, *PRESENCE_FIELDS])
        extra = f", {self.gpu_sel}" if self.gpu_sel else ""
        return " or ".join(
            f'{{__name__=~"{names_re}", {label}=~".+"{extra}}}' for label in self.instance_labels
        )

    def mig(self) -> str:
        """MIG instances, one row each with the pod that holds it (if any) and its profile:
        few series, and none at all on a cluster without MIG."""
        labelled = _normalize(_normalize(self.mig_instances(), self.gpu_labels), self.mig_labels)
        return f"count by ({by(MIG_ROW)}) ({labelled})"

    def mig_power(self) -> str:
        """The power of each GPU that has MIG instances, tagged with the reading: asked only
        when `mig` found instances, as it reads every GPU's power series again."""
        on = by(self.raw_node_gpu)
        with_instances = f"count by ({on}) ({self.mig_instances()})"
        gpu_row = _unique([*self.gpu_labels["node"], *self.gpu_labels["gpu_model"]])

        def value(fn: str, metric: str) -> str:
            return self.one_gpu_raw(fn, metric, self.gpu_sel, gpu_row)

        return " or ".join(
            tagged(
                _normalize(f"({watts}) and on ({on}) ({with_instances})", self.gpu_labels),
                "lce_reading",
                reading,
            )
            for reading, watts in self.readings(value).items()
        )

    def peak_tokens(self) -> str:
        names = self.names
        by_model = [label for key in ("namespace", "model") for label in self.tok_labels[key]]

        def per_model(metric: str) -> str:
            raw = f"sum by ({by(_unique(by_model))}) ({self.tok_rate_raw(metric)})"
            return f"sum by ({by(MODEL)}) ({self.tok_labelled(raw, ('namespace', 'model'))})"

        model_tps = f"{per_model(names.prompt_tokens)} + {per_model(names.generation_tokens)}"
        return f"max_over_time(({model_tps})[{self.lookback}:{self.window}])"
