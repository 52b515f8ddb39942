"""What `diagnose` learned from the upstream, as plain data: the inventory of series (which
GPUs and token series exist, with which labels) beside what a cycle made of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.config import Config
from exporter.model.join import ServedModel
from exporter.model.problems import Problem
from exporter.model.settings import FigureSettings
from exporter.model.snapshot import Snapshot


@dataclass(frozen=True)
class GpuGroup:
    """GPUs with power or energy series, on one node, held by one pod (or by none)."""

    node: str
    namespace: str
    pod: str  # "" when no pod label names one
    pod_label: str  # the label that named the pod (exported_pod, pod), "" without one
    gpus: int
    readings: frozenset[str]  # ENERGY_COUNTER and/or POWER_GAUGE


@dataclass(frozen=True)
class TokenGroup:
    """Prompt-token series of one inference-server metric, per pod and model ("" where the
    label is missing)."""

    metric: str
    namespace: str
    pod: str
    model: str
    series: int


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[GpuGroup, ...] = ()
    tokens: tuple[TokenGroup, ...] = ()
    replicas: Mapping[str, int] = field(default_factory=dict)  # HA replica label -> values
    complete: bool = True  # False when the upstream would not say (the queries failed)


@dataclass(frozen=True)
class LiveGrid:
    """One region's live grid-intensity feed for one basis, as `diagnose` reports it."""

    region: str
    basis: str
    source: str
    age_seconds: float | None  # None: no value received yet
    max_age_seconds: float


@dataclass(frozen=True)
class Facts:
    """Everything the checks judge."""

    config: Config
    settings: FigureSettings
    where: str  # what was read: the query API's URL (redacted), or the pages
    api: str = ""  # the query API, where it could be told (Prometheus 2.42.0, ...)
    failure: tuple[Problem, ...] = ()  # why the upstream could not be read at all
    problems: tuple[Problem, ...] = ()  # what the cycle found wrong
    served: tuple[ServedModel, ...] = ()
    snapshot: Snapshot | None = None
    inventory: Inventory = Inventory()
    pages: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # upstream -> (read, all)
    live_grid: tuple[LiveGrid, ...] = ()

    @property
    def direct(self) -> bool:
        return self.config.source == "direct"
