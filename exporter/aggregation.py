"""Joining GPU pods to served models: pods of one `model_name` in one namespace, across
replicas and nodes, become one `ServedModel`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from exporter.observations import Observation, PodGpus

ModelKey = tuple[str, str]  # (namespace, model)


@dataclass(frozen=True)
class PodShare:
    """The part of one pod's GPUs attributed to one served model."""

    pod: str
    node: str
    gpu_model: str
    gpus: int
    power_w: float
    power_source: str
    shared_gpus: int
    busy_ratio: float | None
    share: float  # fraction of the pod's power attributed here (1 unless it serves several)


@dataclass(frozen=True)
class ServedModel:
    namespace: str
    model: str
    prompt_tps: float
    generation_tps: float
    pods: tuple[PodShare, ...]
    pods_without_gpus: tuple[str, ...]

    @property
    def key(self) -> ModelKey:
        return (self.namespace, self.model)

    @property
    def tokens_per_second(self) -> float:
        return self.prompt_tps + self.generation_tps


def join(observation: Observation) -> list[ServedModel]:
    """Served models with their pods' GPUs, sorted by (namespace, model).

    A pod serving several models (rare) has its power split by token share, evenly when it
    serves no tokens; its GPUs count towards each model."""
    gpus_by_pod: dict[tuple[str, str], list[PodGpus]] = defaultdict(list)
    for row in observation.gpus:
        gpus_by_pod[(row.namespace, row.pod)].append(row)

    tokens_by_pod: dict[tuple[str, str], dict[str, tuple[float, float]]] = defaultdict(dict)
    for row in observation.tokens:
        models = tokens_by_pod[(row.namespace, row.pod)]
        prompt, generation = models.get(row.model, (0.0, 0.0))
        models[row.model] = (prompt + row.prompt_tps, generation + row.generation_tps)

    pods_of: dict[ModelKey, list[PodShare]] = defaultdict(list)
    missing_of: dict[ModelKey, list[str]] = defaultdict(list)
    rates: dict[ModelKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (namespace, pod), models in tokens_by_pod.items():
        pod_total = sum(p + g for p, g in models.values())
        for model, (prompt, generation) in models.items():
            key = (namespace, model)
            rates[key][0] += prompt
            rates[key][1] += generation
            if len(models) == 1:
                share = 1.0
            elif pod_total > 0:
                share = (prompt + generation) / pod_total
            else:
                share = 1.0 / len(models)
            rows = gpus_by_pod.get((namespace, pod))
            if not rows:
                missing_of[key].append(pod)
                continue
            for row in rows:
                pods_of[key].append(
                    PodShare(
                        pod=pod,
                        node=row.node,
                        gpu_model=row.gpu_model,
                        gpus=row.gpus,
                        power_w=row.power_w * share,
                        power_source=row.power_source,
                        shared_gpus=row.shared_gpus,
                        busy_ratio=row.busy_ratio,
                        share=share,
                    )
                )
    return [
        ServedModel(
            namespace=key[0],
            model=key[1],
            prompt_tps=rates[key][0],
            generation_tps=rates[key][1],
            pods=tuple(sorted(pods_of.get(key, ()), key=lambda p: (p.pod, p.node, p.gpu_model))),
            pods_without_gpus=tuple(sorted(missing_of.get(key, ()))),
        )
        for key in sorted(rates)
    ]
