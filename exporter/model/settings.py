"""The methodology's inputs, resolved once from the configuration: regions and node mapping,
presets, baselines, size classes, the GPU and model tables, capacities, the underutilization
rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from exporter.config import Config, as_dict
from exporter.data import table
from exporter.model import methodology as m
from exporter.model.catalog import Catalog
from exporter.model.embodied import EmbodiedTable
from exporter.model.grid import GridRegion, NodeRegionMap, resolve_regions

Layout = tuple[tuple[str, str], ...]  # (node, GPU product) of each of a model's pods


@dataclass(frozen=True)
class Envelope:
    """A commercial baseline: J/token per phase and bound, facility scope."""

    name: str
    prefill: Mapping[str, float]
    decode: Mapping[str, float]
    note: str = ""


BOUNDS = ("low", "mid", "high")


class CommercialInput(NamedTuple):
    """One compared envelope and bound: its J/token per phase, blended at the preset's prompt
    share, and the (baseline, bound, mix) keys of both mixes."""

    prefill: float
    decode: float
    at_preset: float
    preset_key: tuple[str, str, str]
    observed_key: tuple[str, str, str]


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
    # (size class, preset) -> the envelopes compared and their J/token at the preset's share:
    # the same for every model of that class and preset, so worked out once.
    _compared: dict[tuple[str, str], tuple[CommercialInput, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # Each served model's context for the figures, with the layout (nodes and GPU products)
    # it was worked out for: fixed by these settings until the model moves
    # (`figures._Context.of` keeps it).
    contexts: dict[tuple[str, str], tuple[Layout, Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

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

    def compared(self, size: str, preset: str) -> tuple[CommercialInput, ...]:
        """The commercial envelopes a model of this size class and preset is compared with:
        the baselines always compared, then the size-matched one, each bound with its J/token
        at the preset's prompt share."""
        found = self._compared.get((size, preset))
        if found is None:
            names = dict.fromkeys(
                [*self.always_compare, *([size] if size in self.baselines else [])]
            )
            share = self.preset_share(preset)
            rows = []
            for name in names:
                envelope = self.baselines[name]
                for bound in BOUNDS:
                    prefill, decode = envelope.prefill[bound], envelope.decode[bound]
                    at_preset = m.commercial_joules_per_token(share, prefill, decode)
                    keys = (name, bound, "preset"), (name, bound, "observed")
                    rows.append(CommercialInput(prefill, decode, at_preset, *keys))
            found = tuple(rows)
            self._compared[(size, preset)] = found
        return found

    def capacity_for(self, model: str) -> float | None:
        for pattern, tps in self.capacities:
            if pattern.search(model):
                return tps
        return None
