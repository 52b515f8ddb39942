"""One good cycle's results, immutable: what /metrics, the landing page and the reports
render."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.model.figures import ModelFigures
from exporter.model.intensity import GridIntensities

Key = tuple[str, str]  # (namespace, model)


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    models: tuple[ModelFigures, ...]
    energy_joules_total: Mapping[Key, Mapping[str, float]]  # scope -> J
    co2_grams_total: Mapping[Key, Mapping[tuple[str, str], float]]  # (scope, basis) -> g
    last_seen: Mapping[Key, float]
    embodied_grams_total: Mapping[Key, float] = field(default_factory=dict)
    unmapped_nodes: int = 0  # of `nodes`, those no grid.nodes pattern matched
    nodes: int = 0  # the nodes of the served models' pods
    pods_without_gpus: int = 0
    models_dropped: int = 0
    grid: GridIntensities | None = None  # the intensities the figures used (None: annual)
