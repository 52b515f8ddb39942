"""Rows of the Prometheus source's GPU queries as observations: one `PodGpus` per pod and
node (whole GPUs and MIG instances merged); `prometheus_tokens` has the token rows. Every row
that cannot be used is a `Problem`, and every value passes `plausibility` first."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter

from exporter.model.mig import share_of_gpu
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE, PodGpus, SharedGpu
from exporter.model.problems import (
    IMPLAUSIBLE,
    MISSING_SERIES,
    NODE_MISMATCH,
    Problem,
    pod_ref,
)
from exporter.sources.plausibility import Plausibility, Refusal
from exporter.sources.prometheus_api import Sample
from exporter.sources.promql import (
    GLITCH,
    GPU_ROW,
    HOST,
    RESETS,
    TOKEN_ROW,
)

UPSTREAM = "prometheus"
GpuKey = tuple[str, ...]  # GPU_ROW values: namespace, pod, node, GPU model
Results = Mapping[str, list[Sample]]

_GETTERS: dict[tuple[str, ...], Callable[[Mapping[str, str]], GpuKey]] = {
    row: itemgetter(*row) for row in (GPU_ROW, TOKEN_ROW)
}


def row_key(sample: Sample, labels: tuple[str, ...] = GPU_ROW) -> GpuKey:
    """The row's values of `labels`, "" for a label it lacks (rare: the queries set them)."""
    try:
        return _GETTERS[labels](sample.labels)
    except KeyError:
        return tuple(sample.labels.get(label, "") for label in labels)


def _keyed(samples: list[Sample]) -> dict[GpuKey, float]:
    """Values of a per-pod GPU query by pod key (rows of one key add up: gpu_count has one
    per name of the node); rows of GPUs no pod holds, and tagged rows, are left out."""
    rows: dict[GpuKey, float] = {}
    for sample in samples:
        key = row_key(sample)
        if key[0] and key[1] and GLITCH not in sample.labels and RESETS not in sample.labels:
            rows[key] = rows.get(key, 0.0) + sample.value
    return rows


def _tagged(samples: list[Sample], tag: str, labels: tuple[str, ...] = GPU_ROW) -> set[GpuKey]:
    return {row_key(s, labels) for s in samples if tag in s.labels}


def _refused(query: str, key: GpuKey, refusal: Refusal, consequence: str) -> Problem:
    pod = pod_ref(key[0], key[1])
    return Problem(
        UPSTREAM,
        refusal.reason,
        f"query {query}: pod {pod} is {refusal.why}; {consequence}",
        frozenset({pod}),
    )


@dataclass(frozen=True)
class _SharedReadings:
    """The `shared_gpus` query's rows: per pod, each shared GPU's power by reading, and the
    pods holding each (node, GPU)."""

    watts: Mapping[GpuKey, Mapping[str, Mapping[str, float]]]
    holders: Mapping[tuple[str, str], frozenset[GpuKey]]

    @classmethod
    def of(cls, samples: list[Sample]) -> _SharedReadings:
        watts: dict[GpuKey, dict[str, dict[str, float]]] = defaultdict(dict)
        holders: dict[tuple[str, str], set[GpuKey]] = defaultdict(set)
        for sample in samples:
            key = row_key(sample)
            gpu_id = sample.labels.get("lce_gpu_id", "")
            if not (key[0] and key[1] and gpu_id):
                continue
            holders[(key[2], gpu_id)].add(key)
            reading = sample.labels.get("lce_reading", "")
            watts[key].setdefault(gpu_id, {})[reading] = sample.value
        return cls(watts, {k: frozenset(v) for k, v in holders.items()})

    def of_pod(
        self, key: GpuKey, source: str, plausible: Plausibility, problems: list[Problem]
    ) -> tuple[SharedGpu, ...] | None:
        """The pod's shared GPUs in the reading its power uses; None if one is refused (its
        replicas could not count the GPU once: the pod's power is withheld)."""
        out = []
        for gpu_id, readings in sorted(self.watts.get(key, {}).items()):
            watts = readings.get(source, math.nan)
            refusal = plausible.gpu_power(watts, 1, key[3])
            if refusal is not None:
                problems.append(
                    _refused("shared_gpus", key, refusal, "its power is unknown this cycle")
                )
                return None
            out.append(SharedGpu(gpu_id, watts, len(self.holders[(key[2], gpu_id)])))
        return tuple(out)


@dataclass
class _Mig:
    """What the `mig` query (and its follow-up, `mig_power`) says: the instances each pod
    holds (GPU id -> instance -> profile) and each MIG GPU's power by reading."""

    held: dict[GpuKey, dict[str, dict[str, str]]] = field(default_factory=dict)
    power: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: list[Sample]) -> _Mig:
        out = cls()
        for sample in samples:
            labels = sample.labels
            key, gpu_id = row_key(sample), labels.get("lce_gpu_id", "")
            reading = labels.get("lce_reading")
            if reading:
                out.power.setdefault((key[2], gpu_id), {})[reading] = sample.value
            elif key[0] and key[1] and gpu_id:
                instances = out.held.setdefault(key, {}).setdefault(gpu_id, {})
                instances[labels.get("lce_mig_instance", "")] = labels.get("lce_mig_profile", "")
        return out

    def of_pod(
        self, key: GpuKey, plausible: Plausibility, problems: list[Problem]
    ) -> PodGpus | None:
        """The pod's share of the GPUs whose instances it holds, as a PodGpus (its
        whole GPUs are merged in by the caller); None, said, when a GPU's power is unknown."""
        held = self.held[key]
        spec = plausible.catalog.gpu(key[3])
        readings = [self.power.get((key[2], gpu_id), {}) for gpu_id in held]
        source = ENERGY_COUNTER if all(ENERGY_COUNTER in r for r in readings) else POWER_GAUGE
        watts, equivalents, shared = 0.0, 0.0, []
        for (gpu_id, instances), reading in zip(held.items(), readings, strict=True):
            gpu_w = reading.get(source, math.nan)
            refusal = (
                Refusal(MISSING_SERIES, "without power or energy series for a MIG GPU")
                if source not in reading
                else plausible.gpu_power(gpu_w, 1, key[3])
            )
            if refusal is not None:
                problems.append(_refused("mig", key, refusal, "its power is unknown this cycle"))
                return None
            share = share_of_gpu(instances.values(), spec.mig_slices if spec else None)
            if share is None:  # a profile of unknown size: the whole GPU, an upper bound
                shared.append(SharedGpu(gpu_id, gpu_w, max(len(instances), 2)))
            watts += gpu_w * (1.0 if share is None else share)
            equivalents += 1.0 if share is None else share
        return PodGpus(
            namespace=key[0],
            pod=key[1],
            node=key[2],
            gpu_model=key[3],
            gpus=len(held),
            power_w=watts,
            power_source=source,
            shared=tuple(shared),
            mig_gpus=tuple(gpu_id for gpu_id in held),
            gpu_equivalents=equivalents,
        )


def _pod_power(
    key: GpuKey,
    gpus: float,
    tables: Mapping[str, Mapping[GpuKey, float]],
    glitched: set[GpuKey],
    plausible: Plausibility,
    problems: list[Problem],
) -> tuple[float, str] | None:
    """(W, reading) of a pod: the energy counter's rate where plausible, else the gauge's
    mean."""
    for query, kind in (("power_energy", ENERGY_COUNTER), ("power_gauge", POWER_GAUGE)):
        value = tables[query].get(key)
        if value is None:
            continue
        refusal = plausible.gpu_power(value, gpus, key[3])
        if refusal is None and kind == ENERGY_COUNTER and key in glitched:
            refusal = Refusal(IMPLAUSIBLE, "an energy counter that stepped back, not to zero")
        if refusal is None:
            return value, kind
        fallback = (
            "its power is unknown this cycle" if kind == POWER_GAUGE else "trying the power gauge"
        )
        problems.append(_refused(query, key, refusal, fallback))
    return None


def _busy(
    key: GpuKey, busy: Mapping[GpuKey, float], plausible: Plausibility, problems: list[Problem]
) -> float | None:
    ratio = busy.get(key)
    if ratio is None:
        return None
    refusal = plausible.sample(ratio, ceiling=1.0)
    if refusal is not None:
        problems.append(_refused("busy", key, refusal, "busy ratio withheld"))
        return None
    return ratio


@dataclass(frozen=True)
class _WholeGpuTables:
    """The per-pod whole-GPU queries' rows, keyed once per cycle."""

    power: Mapping[str, Mapping[GpuKey, float]]  # query -> pod -> W
    glitched: set[GpuKey]  # pods with an energy counter that stepped back
    busy: Mapping[GpuKey, float]
    shared: _SharedReadings

    @classmethod
    def of(cls, results: Results) -> _WholeGpuTables:
        return cls(
            power={q: _keyed(results.get(q, [])) for q in ("power_energy", "power_gauge")},
            glitched=_tagged(results.get("power_energy", []), GLITCH),
            busy=_keyed(results.get("busy", [])),
            shared=_SharedReadings.of(results.get("shared_gpus", [])),
        )


def _whole_gpus(
    key: GpuKey,
    gpus: float,
    tables: _WholeGpuTables,
    plausible: Plausibility,
    problems: list[Problem],
) -> PodGpus | None:
    refusal = plausible.gpu_count(gpus)
    if refusal is not None:
        problems.append(_refused("gpu_count", key, refusal, "its GPUs are unknown this cycle"))
        return None
    power = _pod_power(key, gpus, tables.power, tables.glitched, plausible, problems)
    shared = tables.shared
    held = shared.of_pod(key, power[1], plausible, problems) if power is not None else None
    if power is None or held is None:
        return None  # its model's power is then incomplete, and withheld
    return PodGpus(
        namespace=key[0],
        pod=key[1],
        node=key[2],
        gpu_model=key[3],
        gpus=int(gpus),
        power_w=power[0],
        power_source=power[1],
        shared=held,
        busy_ratio=_busy(key, tables.busy, plausible, problems),
    )


def _merged(whole: PodGpus, mig: PodGpus) -> PodGpus:
    """A pod holding whole GPUs and MIG instances on one node."""
    return PodGpus(
        namespace=whole.namespace,
        pod=whole.pod,
        node=whole.node,
        gpu_model=whole.gpu_model,
        gpus=whole.gpus + mig.gpus,
        power_w=whole.power_w + mig.power_w,
        power_source=whole.power_source,
        shared=whole.shared + mig.shared,
        busy_ratio=None,  # the instances have none of their own here
        mig_gpus=mig.mig_gpus,
        gpu_equivalents=whole.equivalents + mig.equivalents,
    )


def gpu_rows(results: Results, plausible: Plausibility, problems: list[Problem]) -> list[PodGpus]:
    """One row per pod and node with a plausible GPU count and power (whole GPUs, MIG shares,
    or both); every pod left out says why in `problems`."""
    counts = _keyed(results.get("gpu_count", []))
    tables = _WholeGpuTables.of(results)
    mig = _Mig.of(results.get("mig", []))
    _check_hosts(results.get("gpu_count", []), problems)
    rows = []
    for key in sorted(counts.keys() | mig.held.keys()):
        whole = (
            _whole_gpus(key, counts[key], tables, plausible, problems) if key in counts else None
        )
        if key in counts and whole is None:
            continue
        split = mig.of_pod(key, plausible, problems) if key in mig.held else None
        if key in mig.held and split is None:
            continue
        row = _merged(whole, split) if whole and split else whole or split
        if row is not None:
            rows.append(row)
    return rows


def _check_hosts(samples: list[Sample], problems: list[Problem]) -> None:
    """Where a Kubernetes node label names a node, dcgm-exporter's own name for it must agree:
    older setups put the exporter's pod name or a container id there. Said once per node."""
    pods_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for sample in samples:
        key, host = row_key(sample), sample.labels.get(HOST, "")
        if key[0] and key[1] and host and host != key[2]:
            pods_of[(key[2], host)].add(pod_ref(key[0], key[1]))
    for (node, host), pods in sorted(pods_of.items()):
        problems.append(
            Problem(
                UPSTREAM,
                NODE_MISMATCH,
                f"dcgm-exporter calls node {node!r} (its Kubernetes node label) {host!r}: "
                f"using {node!r} for the grid region of its pods",
                frozenset(pods),
            )
        )
