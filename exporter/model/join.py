"""Joining GPU pods to served models: pods of one `model_name` in one namespace, across
replicas and nodes, become one `ServedModel`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.model.observations import Observation, PodGpus, PodTokens

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
    gpu_equivalents: float  # whole GPUs the power is the power of, x share (MIG: fractions)
    mig_gpus: int = 0  # GPUs it holds MIG instances of


@dataclass(frozen=True)
class ServedModel:
    namespace: str
    model: str
    prompt_tps: float
    generation_tps: float
    pods: tuple[PodShare, ...]
    pods_without_gpus: tuple[str, ...]
    # Summed over the model's pods; None unless every pod counts them.
    requests_per_second: float | None = None
    prompt_computed_tps: float | None = None

    @property
    def key(self) -> ModelKey:
        return (self.namespace, self.model)

    @property
    def tokens_per_second(self) -> float:
        return self.prompt_tps + self.generation_tps


def join(observation: Observation) -> list[ServedModel]:
    """Served models with their pods' GPUs, sorted by (namespace, model).

    A pod serving several models (rare) has its power split by token share, evenly when it
    serves no tokens; its GPUs count towards each model. A physical GPU that several pods of
    one model hold (MIG slices, time-sliced copies) counts once for that model."""
    gpus_by_pod: dict[tuple[str, str], list[PodGpus]] = defaultdict(list)
    for row in observation.gpus:
        gpus_by_pod[(row.namespace, row.pod)].append(row)

    tokens_by_pod: dict[tuple[str, str], dict[str, tuple[float, float]]] = defaultdict(dict)
    for tokens in observation.tokens:
        models = tokens_by_pod[(tokens.namespace, tokens.pod)]
        prompt, generation = models.get(tokens.model, (0.0, 0.0))
        models[tokens.model] = (prompt + tokens.prompt_tps, generation + tokens.generation_tps)

    extras = _extras(observation.tokens)
    pods_of: dict[ModelKey, list[tuple[PodGpus, float]]] = defaultdict(list)
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
            pods_of[key].extend((row, share) for row in rows)
    return [
        ServedModel(
            namespace=key[0],
            model=key[1],
            prompt_tps=rates[key][0],
            generation_tps=rates[key][1],
            pods=tuple(
                sorted(
                    _shares(pods_of.get(key, [])),
                    key=lambda p: (p.pod, p.node, p.gpu_model),
                )
            ),
            pods_without_gpus=tuple(sorted(missing_of.get(key, ()))),
            requests_per_second=extras[key][0],
            prompt_computed_tps=extras[key][1],
        )
        for key in sorted(rates)
    ]


def _extras(tokens: Iterable[PodTokens]) -> dict[ModelKey, list[float | None]]:
    """Each model's requests per second and computed prompt tokens per second, summed over
    its pods: None where any pod does not count them (a partial sum would be wrong)."""
    out: dict[ModelKey, list[float | None]] = defaultdict(lambda: [0.0, 0.0])
    for row in tokens:
        sums = out[(row.namespace, row.model)]
        for i, value in enumerate((row.requests_per_second, row.prompt_computed_tps)):
            previous = sums[i]
            sums[i] = None if previous is None or value is None else previous + value
    return out


def _shares(rows: list[tuple[PodGpus, float]]) -> list[PodShare]:
    """One model's pods as shares of their GPUs, each physical GPU counted at most once:
    MIG slices and time-sliced copies of one GPU repeat its whole power under every holder,
    so where the model's holding pods' shares of a GPU add up to more than 1 (two replicas
    on it), each is scaled down until they add up to 1, and the GPU is counted once. A GPU
    that pods outside the model also hold stays `shared_gpus`: charged in full, an upper
    bound. A GPU whose MIG instances several of the model's pods hold is already split by
    instance size; it only counts once among the model's GPUs."""
    holding: dict[tuple[str, str], int] = defaultdict(int)  # the model's pods on each GPU
    shares: dict[tuple[str, str], float] = defaultdict(float)  # and their shares, summed
    for row, share in rows:
        for gpu in row.shared:
            holding[(row.node, gpu.gpu_id)] += 1
            shares[(row.node, gpu.gpu_id)] += share
    seen: set[tuple[str, str]] = set()
    out = []
    for row, share in sorted(rows, key=lambda r: (-r[1], r[0].pod, r[0].node)):
        repeated = repeated_mig = shared_gpus = 0
        excess = 0.0
        if row.shared or row.mig_gpus:  # most pods hold whole GPUs of their own
            keys = [(row.node, g.gpu_id) for g in row.shared]
            repeated = sum(1 for key in keys if key in seen)
            mig = [(row.node, gpu_id) for gpu_id in row.mig_gpus]
            repeated_mig = sum(1 for key in mig if key in seen)
            seen.update(keys, mig)
            excess = sum(
                g.power_w * share * (1 - 1 / shares[key])
                for g, key in zip(row.shared, keys, strict=True)
                if shares[key] > 1
            )
            shared_gpus = sum(
                1 for g, key in zip(row.shared, keys, strict=True) if g.holders > holding[key]
            )
        out.append(
            PodShare(
                pod=row.pod,
                node=row.node,
                gpu_model=row.gpu_model,
                gpus=row.gpus - repeated - repeated_mig,
                power_w=max(0.0, row.power_w * share - excess),
                power_source=row.power_source,
                shared_gpus=shared_gpus,
                busy_ratio=row.busy_ratio,
                share=share,
                gpu_equivalents=(row.equivalents - repeated) * share,
                mig_gpus=len(row.mig_gpus),
            )
        )
    return out
