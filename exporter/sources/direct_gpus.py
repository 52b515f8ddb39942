"""The direct source's GPU side: which GPUs on the dcgm-exporter pages are a configured pod's,
and their power, busy ratio and sharing, as one `PodGpus`.

Only each pod's own GPUs count: DCGM series whose pod labels name the pod, or whose GPU id is
configured for it (`direct.pods[].gpu_uuids`). A GPU that other pods also hold (MIG instances,
time-sliced copies) is counted once per pod, at its whole power, and flagged
(attribution="shared_gpu"); replicas of one model that share it count it once between them
(see `exporter.model.join`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.config import Config, DirectPod
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE, PodGpus, SharedGpu
from exporter.model.problems import INVALID_VALUE, MISSING_SERIES, Problem, pod_ref
from exporter.sources.page_parser import Row, base_name
from exporter.sources.series_store import SeriesStore, series_key

UPSTREAM = "dcgm"
Owner = tuple[str, str]  # (namespace, pod)
Holders = Mapping[tuple[str, str], set[Owner]]  # (page, GPU id) -> pods labelled on it


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
class _Readings:
    """One pod's GPUs this cycle: each GPU's window values by field (MIG instances repeat
    their GPU's readings, so a field may hold several), and its refused samples as (field,
    GPU id, value)."""

    fields: dict[_Gpu, dict[str, list[float]]] = field(default_factory=dict)
    refused: list[tuple[str, str, float]] = field(default_factory=list)


class DcgmReader:
    """Reads configured pods' GPUs off the dcgm-exporter pages held in a `SeriesStore`."""

    def __init__(self, config: Config, store: SeriesStore) -> None:
        names = config.upstream.metrics
        self.labels = config.upstream.gpu_labels
        self.store = store
        self.node = config.direct.node or ""
        self.energy = base_name(names.gpu_energy)
        self.power = base_name(names.gpu_power)
        self.busy_scale = {
            base_name(names.gpu_engine_active): 1.0,
            base_name(names.gpu_util): 100.0,
        }
        # Pods that claim a GPU by its id hold it, whatever the DCGM labels say.
        self.claimed: dict[str, set[Owner]] = defaultdict(set)
        for pod in config.direct.pods:
            for gpu_id in pod.gpu_uuids:
                self.claimed[gpu_id].add((pod.namespace or "", pod.pod or ""))

    def holders(self, pages: Mapping[str, list[Row]]) -> Holders:
        """The pods labelled on each (page, GPU id): the docs' "other pods use other
        slices" (a series without a pod label holds nothing)."""
        out: dict[tuple[str, str], set[Owner]] = defaultdict(set)
        for page, rows in pages.items():
            for _, labels, _ in rows:
                owner = self._owner(labels)
                if owner[1]:
                    out[(page, first_label(labels, self.labels.gpu_id))].add(owner)
        return out

    def pod_gpus(
        self,
        pod: DirectPod,
        pages: Mapping[str, list[Row]],
        holders: Holders,
        problems: list[Problem],
    ) -> PodGpus | None:
        """The pod's GPUs, or None (with a problem saying why) when its power is unknown."""
        me = (pod.namespace or "", pod.pod or "")
        readings = self._readings(me, set(pod.gpu_uuids), pages)
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
            problems.append(
                _pod_problem(
                    me,
                    MISSING_SERIES,
                    f"no valid power reading yet for every GPU of {pod_ref(*me)}",
                )
            )
            return None
        watts, source = power
        first = next(iter(readings.fields))
        return PodGpus(
            namespace=me[0],
            pod=me[1],
            node=first.node or self.node,
            gpu_model=first.product,
            gpus=len(readings.fields),
            power_w=sum(watts),
            power_source=source,
            shared=self._shared(me, readings, watts, holders),
            busy_ratio=self._busy(readings),
        )

    # ---- steps

    def _owner(self, labels: Mapping[str, str]) -> Owner:
        return (first_label(labels, self.labels.namespace), first_label(labels, self.labels.pod))

    def _readings(
        self, me: Owner, wanted_ids: set[str], pages: Mapping[str, list[Row]]
    ) -> _Readings:
        """The pod's GPUs: series labelled with the pod, or of a GPU it claims by id."""
        out = _Readings()
        for page, rows in pages.items():
            for name, labels, _ in rows:
                gpu_id = first_label(labels, self.labels.gpu_id)
                if not (self._owner(labels) == me or gpu_id in wanted_ids):
                    continue
                gpu = _Gpu(
                    page,
                    gpu_id,
                    first_label(labels, self.labels.node),
                    first_label(labels, self.labels.gpu_model),
                )
                key = series_key(page, name, labels)
                if key in self.store.invalid:
                    out.refused.append((name, gpu_id, self.store.invalid[key]))
                    out.fields.setdefault(gpu, {})  # still the pod's GPU, reading or not
                    continue
                window = self.store.windows[key]
                value = window.updated_counter_rate() if name == self.energy else window.mean()
                if value is not None:
                    out.fields.setdefault(gpu, {}).setdefault(name, []).append(value)
        # One GPU's refused reading spoils the field for the whole pod.
        for name in {name for name, _, _ in out.refused} & {self.energy, self.power}:
            for fields in out.fields.values():
                fields.pop(name, None)
        return out

    def _report_refused(
        self, me: Owner, refused: list[tuple[str, str, float]], problems: list[Problem]
    ) -> None:
        consequences = {self.energy: "trying the power gauge", self.power: "power gauge not used"}
        for name, gpu_id, value in refused:
            problems.append(
                _pod_problem(
                    me,
                    INVALID_VALUE,
                    f"{name} of GPU {gpu_id} for {pod_ref(*me)} is "
                    f"{self.store.describe(name, value)}; "
                    f"{consequences.get(name, 'busy ratio withheld')} this cycle",
                )
            )

    def _power(self, readings: _Readings) -> tuple[list[float], str] | None:
        """Each GPU's W and the reading used: the energy counter where every GPU has a rate,
        else the power gauge where every GPU has a mean."""
        gpus = readings.fields.values()
        if all(self.energy in f for f in gpus):
            return [max(f[self.energy]) / 1000 for f in gpus], ENERGY_COUNTER  # mJ/s -> W
        if all(self.power in f for f in gpus):
            return [max(f[self.power]) for f in gpus], POWER_GAUGE
        return None

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
        self, me: Owner, readings: _Readings, watts: list[float], holders: Holders
    ) -> tuple[SharedGpu, ...]:
        """The pod's GPUs that other pods hold too: labelled on the page or claimed by id."""
        out = []
        for gpu, w in zip(readings.fields, watts, strict=True):
            held_by = holders.get((gpu.page, gpu.gpu_id), set()) | self.claimed.get(
                gpu.gpu_id, set()
            )
            count = len(held_by | {me})
            if count > 1:
                out.append(SharedGpu(gpu.gpu_id, w, count))
        return tuple(out)


def _pod_problem(me: Owner, reason: str, message: str) -> Problem:
    return Problem(UPSTREAM, reason, message, frozenset({pod_ref(*me)}))
