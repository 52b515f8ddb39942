"""Built-in GPU and model tables, extended by config entries (tried first), matched by name
pattern. Lookups are cached: the same few names recur every cycle."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from exporter.data import table


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float
    fp8_tflops: float | None = None
    memory_bandwidth_tbps: float | None = None
    max_power_w: float | None = None
    idle_power_w: float | None = None
    mig_slices: int | None = None  # compute slices of the whole GPU under MIG

    def peak_flops(self, precision: str) -> float:
        """Peak dense FLOP/s for a serving precision: FP8 where both the checkpoint and the GPU
        have it, else BF16/FP16 (weight-only INT4/FP4 kernels compute at 16 bit)."""
        if precision == "fp8" and self.fp8_tflops:
            return self.fp8_tflops * 1e12
        return self.bf16_tflops * 1e12


@dataclass(frozen=True)
class ModelSpec:
    total_params_b: float
    active_params_b: float
    precision: str = "bf16"


# A served name that says FP8 (e.g. "nvidia/Llama-3.3-70B-Instruct-FP8") is served in FP8
# unless its table entry names a precision.
_FP8_NAME = re.compile(r"fp8", re.IGNORECASE)


_GPU_FIELDS = (
    "name",
    "bf16_tflops",
    "fp8_tflops",
    "memory_bandwidth_tbps",
    "max_power_w",
    "idle_power_w",
    "mig_slices",
)
_MODEL_FIELDS = ("total_params_b", "active_params_b", "precision")


Entry = dict[str, Any]  # one row of a table: `pattern` and the spec's fields
T = TypeVar("T")


@cache
def builtin_gpu_entries() -> tuple[Entry, ...]:
    return tuple(table("gpus.yaml"))


@cache
def builtin_model_entries() -> tuple[Entry, ...]:
    return tuple(table("models.yaml"))


class PatternTable(Generic[T]):
    """Values by name pattern (regular expressions, case-insensitive, searched): the first
    entry whose pattern matches a name wins; lookups are remembered."""

    def __init__(self, entries: Iterable[tuple[str, T]]) -> None:
        self._entries = [(re.compile(p, re.IGNORECASE), value) for p, value in entries]
        self._cache: dict[str, T | None] = {}

    def find(self, name: str) -> T | None:
        if name in self._cache:
            return self._cache[name]
        found = next((value for pattern, value in self._entries if pattern.search(name)), None)
        if len(self._cache) < 100_000:
            self._cache[name] = found
        return found


class Catalog:
    """GPU and model lookups: configured entries first, then the built-in tables."""

    def __init__(self, gpus: Sequence[Entry], models: Sequence[Entry]) -> None:
        self._gpus = PatternTable(
            (e["pattern"], GpuSpec(**{k: e[k] for k in _GPU_FIELDS if e.get(k) is not None}))
            for e in [*gpus, *builtin_gpu_entries()]
        )
        # Each model with whether its entry names a precision.
        self._models = PatternTable(
            (
                e["pattern"],
                (
                    e.get("precision") is not None,
                    ModelSpec(**{k: e[k] for k in _MODEL_FIELDS if e.get(k) is not None}),
                ),
            )
            for e in [*models, *builtin_model_entries()]
        )

    def gpu(self, model_name: str) -> GpuSpec | None:
        return self._gpus.find(model_name)

    def model(self, served_name: str) -> ModelSpec | None:
        found = self._models.find(served_name)
        if found is None:
            return None
        precision_given, spec = found
        if not precision_given and _FP8_NAME.search(served_name):
            return ModelSpec(spec.total_params_b, spec.active_params_b, "fp8")
        return spec
