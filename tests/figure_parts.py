"""Pods and served models built by hand, for the tests of the figure steps."""

from __future__ import annotations

from exporter.config import load
from exporter.model.join import PodShare, ServedModel
from exporter.model.observations import ENERGY_COUNTER
from exporter.model.settings import FigureSettings

SETTINGS = FigureSettings.from_config(load())
H100 = "NVIDIA H100 80GB HBM3"
SDSC, UNL = "gpu-a.sdsc.optiputer.net", "hcc-nrp-b.unl.edu"  # CAMX, MROW
CAMX, MROW = 428.464 * 0.45359237, 920.130 * 0.45359237


def share(
    pod: str = "p",
    node: str = SDSC,
    gpus: int = 4,
    watts: float = 800.0,
    source: str = ENERGY_COUNTER,
    product: str = H100,
    share: float = 1.0,
    shared_gpus: int = 0,
    busy: float | None = None,
) -> PodShare:
    return PodShare(pod, node, product, gpus, watts, source, shared_gpus, busy, share, gpus * share)


def served(
    *pods: PodShare, missing: tuple[str, ...] = (), tps: float = 1000.0, **extra: float
) -> ServedModel:
    return ServedModel("ns", "zai-org/GLM-4.7-FP8", tps * 0.9, tps * 0.1, pods, missing, **extra)
