"""Embodied emissions per GPU: the built-in table (exporter/data/embodied.yaml), configured
entries tried first, a proxy for GPUs it does not know, and the server's share per GPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from exporter.data import table
from exporter.model.catalog import PatternTable


@dataclass(frozen=True)
class GpuEmbodied:
    kg: float  # the GPU's own figure plus its share of the server, kg CO2e
    proxy: bool  # the GPU is not in the table: the configured proxy stands in


@cache
def builtin_entries() -> tuple[dict[str, Any], ...]:
    return tuple(table("embodied.yaml"))


class EmbodiedTable:
    def __init__(
        self,
        configured: Sequence[dict[str, Any]],
        server_kg_per_gpu: float,
        unknown_gpu_kg: float | None,
        lifetime_years: float,
    ) -> None:
        self._kg = PatternTable(
            (e["pattern"], float(e["kg"])) for e in [*configured, *builtin_entries()]
        )
        self.server_kg_per_gpu = server_kg_per_gpu
        self.unknown_gpu_kg = unknown_gpu_kg
        self.lifetime_years = lifetime_years

    def per_gpu(self, gpu_model: str) -> GpuEmbodied | None:
        """kg CO2e to make one GPU of this product and its share of the server; None where
        neither the table nor a proxy has a figure."""
        kg = self._kg.find(gpu_model)
        if kg is not None:
            return GpuEmbodied(kg + self.server_kg_per_gpu, proxy=False)
        if self.unknown_gpu_kg is not None:
            return GpuEmbodied(self.unknown_gpu_kg + self.server_kg_per_gpu, proxy=True)
        return None
