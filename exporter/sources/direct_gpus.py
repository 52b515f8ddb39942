"""The direct source's GPU side: which GPUs on the dcgm-exporter pages are a configured pod's,
and their power, busy ratio and sharing, as one `PodGpus`.

A pod's GPUs are those whose DCGM series carry its pod labels, or whose GPU id it claims
(`direct.pods[].gpu_uuids`). A pod on MIG instances (labelled instance rows) is charged its
instances' share of the GPU's power (`model.mig`), read from the GPU's own row where the
instance rows carry no power. A whole GPU other pods also hold (time-sliced copies, or MIG
instances seen on the page that the pod's claim does not tell apart) is counted at its whole
power and flagged (attribution="shared_gpu"); replicas of one model that share it count it
once between them (see `exporter.model.join`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.config import Config, DirectPod
from exporter.model.mig import share_of_gpu
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE, PodGpus, SharedGpu
from exporter.model.problems import (
    IMPLAUSIBLE,
    MISSING_SERIES,
    NODE_MISMATCH,
    Problem,
    pod_ref,
)
from exporter.sources.dcgm_units import energy_per_joule, utilization_per_ratio
from exporter.sources.page_parser import Row, base_name
from exporter.sources.plausibility import Plausibility, Refusal
from exporter.sources.series_store import SeriesStore, series_key
from exporter.text import plural, redact

UPSTREAM = "dcgm"
Owner = tuple[str, str]  # (namespace, pod)
PageGpu = tuple[str, str]  # (page, GPU id)
UUID_PREFIXES = ("GPU-", "MIG-")  # NVIDIA's UUIDs, unique across machines (nvidia-smi -L)


def first_label(labels: Mapping[str, str], choices: Iterable[str]) -> str:
    """The value of the first of `choices` that `labels` has (non-empty), else ""."""
    return next((labels[c] for c in choices if labels.get(c)), "")


@dataclass(frozen=True)
class _Gpu:
    page: str
    gpu_id: str
    node: str
    product: str


@dataclass
class PageIndex:
    """What the pages say about every GPU, whoever holds it: the pods labelled on it, the MIG
    instances seen on it, and its own (instance-less) rows."""

    holders: dict[PageGpu, set[Owner]] = field(default_factory=lambda: defaultdict(set))
    instances: dict[PageGpu, set[str]] = field(default_factory=lambda: defaultdict(set))
    gpu_rows: dict[PageGpu, list[Row]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class _Readings:
    """One pod's GPUs this cycle: each GPU's window values by field (MIG instances and the
    GPU's own row repeat its readings, so a field may hold several), the MIG instances it
    holds by their labels (id -> profile), and its refused samples as (field, GPU, why)."""

    fields: dict[_Gpu, dict[str, list[float]]] = field(default_factory=dict)
    instances: dict[_Gpu, dict[str, str]] = field(default_factory=dict)
    refused: list[tuple[str, str, Refusal]] = field(default_factory=list)
    seen: dict[_Gpu, set[str]] = field(default_factory=dict)  # fields with a series, valued or not

    def add(self, gpu: _Gpu, name: str, value: float | None) -> None:
        fields = self.fields.setdefault(gpu, {})
        if value is not None:
            fields.setdefault(name, []).append(value)


class DcgmReader:
    """Reads configured pods' GPUs off the dcgm-exporter pages held in a `SeriesStore`."""

    def __init__(self, config: Config, store: SeriesStore, plausible: Plausibility) -> None:
        names = config.upstream.metrics
        self.labels = config.upstream.gpu_labels
        self.store = store
        self.plausible = plausible
        self.node = config.direct.node or ""
        self.energy = base_name(names.gpu_energy)
        self.power = base_name(names.gpu_power)
        self.busy_scale = {
            base_name(names.gpu_engine_active): 1.0,
            base_name(names.gpu_util): float(utilization_per_ratio(names.gpu_util)),
        }
        self.energy_scale = float(energy_per_joule(names.gpu_energy))
        # Pods that claim a GPU by its id hold it, whatever the DCGM labels say.
        self.claimed: dict[str, set[Owner]] = defaultdict(set)
        for pod in config.direct.pods:
            for gpu_id in pod.gpu_uuids:
                self.claimed[gpu_id].add((pod.namespace or "", pod.pod or ""))

    def _owner(self, labels: Mapping[str, str]) -> Owner:
        return (first_label(labels, self.labels.namespace), first_label(labels, self.labels.pod))

    def owners(self, series: Iterable[Mapping[str, str]]) -> set[Owner]:
        """The (namespace, pod) that the pod labels of each of `series` name."""
        return {self._owner(labels) for labels in series}

    def index(self, pages: Mapping[str, list[Row]]) -> PageIndex:
        out = PageIndex()
        for page, rows in pages.items():
            for row in rows:
                labels = row[1]
                gpu = (page, first_label(labels, self.labels.gpu_id))
                owner = self._owner(labels)
                if owner[1]:  # a series without a pod label holds nothing
                    out.holders[gpu].add(owner)
                instance = first_label(labels, self.labels.mig_instance)
                if instance:
                    out.instances[gpu].add(instance)
                else:
                    out.gpu_rows[gpu].append(row)
        return out

    def without_echoes(
        self, pages: Mapping[str, list[Row]]
    ) -> tuple[dict[str, list[Row]], list[Problem]]:
        """The pages with each GPU (by UUID) on the first page that shows it only: one
        dcgm-exporter listed under two URLs counts once, and a problem says so per pair of
        pages."""
        first_page: dict[str, str] = {}
        echoes: dict[tuple[str, str], set[str]] = defaultdict(set)  # (first, other) -> GPUs
        out = {}
        for page, rows in pages.items():
            kept = []
            for row in rows:
                gpu_id = first_label(row[1], self.labels.gpu_id)
                first = first_page.setdefault(gpu_id, page)
                if first == page or not gpu_id.startswith(UUID_PREFIXES):
                    kept.append(row)
                else:
                    echoes[(first, page)].add(gpu_id)
            out[page] = kept
        problems = [
            Problem(
                UPSTREAM,
                IMPLAUSIBLE,
                f"{plural(len(gpus), 'GPU')} on {redact(first)} also on {redact(other)} (one "
                "dcgm-exporter under two direct.dcgm_urls?): counted once, from the first",
            )
            for (first, other), gpus in sorted(echoes.items())
        ]
        return out, problems

    def pod_gpus(
        self,
        pod: DirectPod,
        pages: Mapping[str, list[Row]],
        index: PageIndex,
        problems: list[Problem],
    ) -> PodGpus | None:
        """The pod's GPUs, or None (with a problem saying why) when its power is unknown."""
        me = (pod.namespace or "", pod.pod or "")
        readings = self._readings(me, set(pod.gpu_uuids), pages, index)
        self._report_refused(me, readings.refused, problems)
        if not readings.fields:
            if not readings.refused:
                problems.append(
                    _pod_problem(
                        me,
                        MISSING_SERIES,
                        f"no GPU series for pod {pod_ref(*me)} (pod labels or "
                        "direct.pods[].gpu_uuids)",
                    )
                )
            return None
        power = self._power(readings)
        if power is None:
            problems.append(_pod_problem(me, MISSING_SERIES, self._no_power(me, readings)))
            return None
        watts, source = power
        shares = [self._share(gpu, readings) for gpu in readings.fields]
        held = [1.0 if s is None else s for s in shares]  # of each GPU, in whole GPUs
        first = next(iter(readings.fields))
        return PodGpus(
            namespace=me[0],
            pod=me[1],
            node=self._node(me, first.node, problems),
            gpu_model=first.product,
            gpus=len(readings.fields),
            power_w=sum(w * h for w, h in zip(watts, held, strict=True)),
            power_source=source,
            shared=self._shared(me, readings, watts, shares, index),
            busy_ratio=self._busy(readings),
            mig_gpus=tuple(
                g.gpu_id for g, s in zip(readings.fields, shares, strict=True) if s is not None
            ),
            gpu_equivalents=sum(held),
        )

    # ---- steps

    def _readings(
        self, me: Owner, wanted_ids: set[str], pages: Mapping[str, list[Row]], index: PageIndex
    ) -> _Readings:
        """The pod's GPUs: series labelled with the pod, or of a GPU it claims by id; for a
        GPU whose MIG instances it holds, the GPU's own rows too (where its power may be)."""
        out = _Readings()
        for page, rows in pages.items():
            for name, labels, _ in rows:
                gpu_id = first_label(labels, self.labels.gpu_id)
                labelled = self._owner(labels) == me
                if not (labelled or gpu_id in wanted_ids):
                    continue
                gpu = self._gpu(page, labels)
                instance = first_label(labels, self.labels.mig_instance)
                if labelled and instance:
                    profile = first_label(labels, self.labels.mig_profile)
                    out.instances.setdefault(gpu, {})[instance] = profile
                self._read(out, gpu, page, name, labels)
        for gpu in out.instances:
            for name, labels, _ in index.gpu_rows.get((gpu.page, gpu.gpu_id), []):
                if self._owner(labels) != me:  # not already read as the pod's own row
                    self._read(out, gpu, gpu.page, name, labels)
        # One GPU's refused reading spoils the field for the whole pod.
        for name in {name for name, _, _ in out.refused} & {self.energy, self.power}:
            for fields in out.fields.values():
                fields.pop(name, None)
        return out

    def _gpu(self, page: str, labels: Mapping[str, str]) -> _Gpu:
        return _Gpu(
            page,
            first_label(labels, self.labels.gpu_id),
            first_label(labels, self.labels.node),
            first_label(labels, self.labels.gpu_model),
        )

    def _read(
        self, out: _Readings, gpu: _Gpu, page: str, name: str, labels: Mapping[str, str]
    ) -> None:
        """One series' window value into the readings, or its refusal. An energy counter's
        rate is checked against what the GPU can draw."""
        key = series_key(page, name, labels)
        out.seen.setdefault(gpu, set()).add(name)
        refusal = self.store.refused.get(key)
        if refusal is None and name == self.energy:
            rate = self.store.windows[key].updated_counter_rate()
            if rate is not None:
                refusal = self.plausible.gpu_power(rate / self.energy_scale, 1, gpu.product)
            if refusal is None:
                out.add(gpu, name, rate)
                return
        if refusal is not None:
            out.refused.append((name, gpu.gpu_id, refusal))
            out.fields.setdefault(gpu, {})  # still one of the pod's GPUs, reading or not
            return
        out.add(gpu, name, self.store.windows[key].mean())

    def _report_refused(
        self, me: Owner, refused: list[tuple[str, str, Refusal]], problems: list[Problem]
    ) -> None:
        consequences = {self.energy: "trying the power gauge", self.power: "power gauge not used"}
        for name, gpu_id, refusal in refused:
            problems.append(
                _pod_problem(
                    me,
                    refusal.reason,
                    f"{name} of GPU {gpu_id} for {pod_ref(*me)} is {refusal.why}; "
                    f"{consequences.get(name, 'busy ratio withheld')} this cycle",
                )
            )

    def _power(self, readings: _Readings) -> tuple[list[float], str] | None:
        """Each GPU's W and the reading used: the energy counter where every GPU has a rate,
        else the power gauge where every GPU has a mean."""
        gpus = readings.fields.values()
        if all(self.energy in f for f in gpus):
            return [max(f[self.energy]) / self.energy_scale for f in gpus], ENERGY_COUNTER
        if all(self.power in f for f in gpus):
            return [max(f[self.power]) for f in gpus], POWER_GAUGE
        return None

    def _no_power(self, me: Owner, readings: _Readings) -> str:
        """Why the pod has no power: a GPU without any power or energy series (it will not
        come), or windows still filling (it will)."""
        for gpu in readings.fields:
            if not readings.seen.get(gpu, set()) & {self.energy, self.power}:
                return (
                    f"GPU {gpu.gpu_id} of {pod_ref(*me)} has no {self.power} or {self.energy} "
                    "series on its dcgm-exporter page"
                )
        return f"no valid power reading yet for every GPU of {pod_ref(*me)}"

    def _share(self, gpu: _Gpu, readings: _Readings) -> float | None:
        """The share of `gpu` the pod holds through MIG instances; None for a whole GPU (or
        instances whose profile names no size)."""
        instances = readings.instances.get(gpu)
        if not instances:
            return None
        spec = self.plausible.catalog.gpu(gpu.product)
        return share_of_gpu(instances.values(), spec.mig_slices if spec else None)

    def _busy(self, readings: _Readings) -> float | None:
        """Mean busy ratio over the pod's GPUs, each from its preferred field; None unless
        every GPU has one and none was refused."""
        if {name for name, _, _ in readings.refused} & self.busy_scale.keys():
            return None
        busy = []
        for fields in readings.fields.values():
            for name, scale in self.busy_scale.items():
                if name in fields:
                    busy.append(max(fields[name]) / scale)
                    break
        return sum(busy) / len(busy) if len(busy) == len(readings.fields) else None

    def _shared(
        self,
        me: Owner,
        readings: _Readings,
        watts: list[float],
        shares: list[float | None],
        index: PageIndex,
    ) -> tuple[SharedGpu, ...]:
        """The whole GPUs the pod holds that others hold too: labelled on the page, claimed by
        id, or split into MIG instances the pod's claim does not tell apart (each a holder)."""
        out = []
        for gpu, w, share in zip(readings.fields, watts, shares, strict=True):
            if share is not None:
                continue  # charged its MIG share: not shared in full
            place = (gpu.page, gpu.gpu_id)
            held_by = index.holders.get(place, set()) | self.claimed.get(gpu.gpu_id, set())
            count = max(len(held_by | {me}), len(index.instances.get(place, ())))
            if count > 1:
                out.append(SharedGpu(gpu.gpu_id, w, count))
        return tuple(out)

    def _node(self, me: Owner, labelled: str, problems: list[Problem]) -> str:
        """The pod's node: NODE_NAME (direct.node) where set, the DCGM label otherwise. Older
        dcgm-exporter setups put the exporter's pod name or a container id in `Hostname`; a
        disagreement is said (and counted) while it lasts."""
        if self.node and labelled and labelled != self.node:
            problems.append(
                _pod_problem(
                    me,
                    NODE_MISMATCH,
                    f"dcgm-exporter names the node of {pod_ref(*me)} {labelled!r}, NODE_NAME "
                    f"says {self.node!r}: using {self.node!r} for its grid region",
                )
            )
        return self.node or labelled


def _pod_problem(me: Owner, reason: str, message: str) -> Problem:
    return Problem(UPSTREAM, reason, message, frozenset({pod_ref(*me)}))
