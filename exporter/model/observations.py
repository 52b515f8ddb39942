"""What a source hands to the pipeline: per-pod observations over one window.

Sources (Prometheus query API, direct scrape) differ in how they get these numbers, never in
what the numbers mean: power is the mean GPU board power over the window, tokens are mean
rates over the same window.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from exporter.model.problems import Problem

ENERGY_COUNTER = "energy_counter"
POWER_GAUGE = "power_gauge"


@dataclass(frozen=True)
class SharedGpu:
    """A physical GPU a pod holds together with other pods (MIG slices or time-sliced
    copies): each holder's series carry the whole GPU's power."""

    gpu_id: str
    power_w: float
    holders: int  # pods that hold it, this one included


@dataclass(frozen=True)
class PodGpus:
    """The GPUs one pod holds on one node, as seen in DCGM."""

    namespace: str
    pod: str
    node: str
    gpu_model: str
    gpus: int
    power_w: float
    power_source: str  # ENERGY_COUNTER or POWER_GAUGE
    shared: tuple[SharedGpu, ...] = ()  # GPUs this pod shares with other pods, on `node`
    busy_ratio: float | None = None
    # MIG: the physical GPUs (by id) whose instances the pod holds, and what it holds in all
    # in whole GPUs (a 1g instance of a 7-slice GPU is 1/7); `power_w` is then its share of
    # those GPUs' power.
    mig_gpus: tuple[str, ...] = ()
    gpu_equivalents: float | None = None  # None: `gpus` whole GPUs

    @property
    def shared_gpus(self) -> int:
        return len(self.shared)

    @property
    def equivalents(self) -> float:
        return float(self.gpus) if self.gpu_equivalents is None else self.gpu_equivalents


@dataclass(frozen=True)
class PodTokens:
    """Token rates of one served model in one pod (summed over engines)."""

    namespace: str
    pod: str
    model: str
    prompt_tps: float
    generation_tps: float
    # Where the inference server counts them: finished requests per second, and prompt tokens
    # computed per second (prefix-cache hits left out). None: not counted.
    requests_per_second: float | None = None
    prompt_computed_tps: float | None = None


@dataclass(frozen=True)
class ModelHistory:
    """Look-back facts about one model, where the source has history."""

    peak_tokens_per_second: float | None = None
    idle_floor_w_per_gpu: float | None = None  # lowest window-mean W per GPU while inactive


@dataclass(frozen=True)
class Observation:
    """Everything one cycle observed, at time `time` (Unix seconds)."""

    time: float
    gpus: tuple[PodGpus, ...]
    tokens: tuple[PodTokens, ...]
    history: Mapping[tuple[str, str], ModelHistory] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()  # not fatal: counted and logged
    # Upstreams that answered without any series of a kind the figures need (no GPU power
    # series at all, a page without token series): upstream_up reads 0 for them.
    blind: frozenset[str] = frozenset()


def pods_serving(
    served: Iterable[tuple[str, str, str]], left_out: Collection[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (namespace, pod) of every (namespace, pod, model) served whose (namespace, model)
    was left out this cycle: such a pod's power cannot be split honestly between its models,
    so the sources withhold it."""
    return {(ns, pod) for ns, pod, model in served if (ns, model) in left_out}
