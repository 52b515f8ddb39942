"""The methodology's inputs, resolved once from the configuration: regions and node mapping,
presets, baselines, size classes, the GPU and model tables, capacities, the underutilization
rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from exporter.config import Config, as_dict
from exporter.data import table
from exporter.model import methodology as m
from exporter.model.catalog import Catalog
from exporter.model.embodied import EmbodiedTable
from exporter.model.grid import GridRegion, NodeRegionMap, resolve_regions


@dataclass(frozen=True)
class Envelope:
    """A commercial baseline: J/token per phase and bound, facility scope."""

    name: str
    prefill: Mapping[str, float]
    decode: Mapping[str, float]
    note: str = ""


@dataclass(frozen=True)
class FigureSettings:
    """The methodology's inputs, resolved once from the configuration."""

    min_tokens_per_second: float
    host_overhead: float
    pue: float
    regions: Mapping[str, GridRegion]
    node_regions: NodeRegionMap
    presets: Mapping[str, tuple[int, int]]
    default_preset: str
    model_presets: tuple[tuple[re.Pattern[str], str], ...]
    baselines: Mapping[str, Envelope]
    always_compare: tuple[str, ...]
    size_classes: tuple[tuple[str, float | None], ...]
    catalog: Catalog
    embodied: EmbodiedTable
    references: tuple[tuple[str, float], ...]  # published Wh per request, by name
    capacities: tuple[tuple[re.Pattern[str], float], ...]
    underutilized: Mapping[str, float | None]

    @classmethod
    def from_config(cls, config: Config) -> FigureSettings:
        regions = resolve_regions(config.grid.regions)
        return cls(
            min_tokens_per_second=config.exporter.min_tokens_per_second,
            host_overhead=config.facility.host_overhead,
            pue=config.facility.pue,
            regions=regions,
            node_regions=NodeRegionMap(
                [(rule.pattern, rule.region) for rule in config.grid.nodes],
                config.grid.default_region,
            ),
            presets={
                name: (p.input_tokens, p.output_tokens)
                for name, p in config.workload.presets.items()
            },
            default_preset=config.workload.default_preset,
            model_presets=tuple(
                (re.compile(rule.pattern), rule.preset) for rule in config.workload.models
            ),
            baselines={
                name: Envelope(name, as_dict(b.prefill), as_dict(b.decode), b.note)
                for name, b in config.baselines.items()
            },
            always_compare=tuple(config.comparison.always),
            size_classes=tuple(
                (c.name, c.below_total_params_b) for c in config.comparison.size_classes
            ),
            catalog=Catalog(
                [as_dict(e) for e in config.catalog.gpus],
                [as_dict(e) for e in config.catalog.models],
            ),
            capacities=tuple(
                (re.compile(c.pattern), c.tokens_per_second) for c in config.utilization.capacity
            ),
            underutilized=as_dict(config.underutilized),
            references=tuple((r["name"], float(r["wh"])) for r in table("references.yaml")),
            embodied=EmbodiedTable(
                [as_dict(e) for e in config.embodied.gpus],
                config.embodied.server_kg_per_gpu,
                config.embodied.unknown_gpu_kg,
                config.embodied.lifetime_years,
            ),
        )

    @property
    def facility_factor(self) -> float:
        return m.facility_power(1.0, self.host_overhead, self.pue)

    def preset_for(self, model: str) -> str:
        for pattern, preset in self.model_presets:
            if pattern.search(model):
                return preset
        return self.default_preset

    def preset_share(self, preset: str) -> float:
        return m.preset_prompt_token_ratio(*self.presets[preset])

    def capacity_for(self, model: str) -> float | None:
        for pattern, tps in self.capacities:
            if pattern.search(model):
                return tps
        return None
