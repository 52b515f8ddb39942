"""Embodied emissions per GPU: the built-in table (exporter/data/embodied.yaml), configured
entries tried first, a proxy for GPUs it does not know, and the server's share per GPU."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from exporter.data import table


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
        self._entries = [
            (re.compile(e["pattern"], re.IGNORECASE), float(e["kg"]))
            for e in [*configured, *builtin_entries()]
        ]
        self.server_kg_per_gpu = server_kg_per_gpu
        self.unknown_gpu_kg = unknown_gpu_kg
        self.lifetime_years = lifetime_years
        self._cache: dict[str, GpuEmbodied | None] = {}

    def per_gpu(self, gpu_model: str) -> GpuEmbodied | None:
        """kg CO2e to make one GPU of this product and its share of the server; None where
        neither the table nor a proxy has a figure."""
        if gpu_model in self._cache:
            return self._cache[gpu_model]
        kg = next((k for pattern, k in self._entries if pattern.search(gpu_model)), None)
        found: GpuEmbodied | None
        if kg is not None:
            found = GpuEmbodied(kg + self.server_kg_per_gpu, proxy=False)
        elif self.unknown_gpu_kg is not None:
            found = GpuEmbodied(self.unknown_gpu_kg + self.server_kg_per_gpu, proxy=True)
        else:
            found = None
        if len(self._cache) < 100_000:
            self._cache[gpu_model] = found
        return found
