"""Conservation: over any cluster, the models' GPU power adds up to the power of the GPUs
their serving pods hold, each physical GPU counted once, however pods share GPUs (MIG slices,
time-sliced copies) between replicas and however a pod's power is split between the models
it serves."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model.join import join
from exporter.model.observations import ENERGY_COUNTER, Observation, PodGpus, PodTokens, SharedGpu

GPU_WATTS = st.floats(min_value=1.0, max_value=700.0, allow_nan=False)


@st.composite
def clusters(draw: st.DrawFn, across_models: bool) -> tuple[Observation, dict, set]:
    """Nodes with GPUs, and pods each holding some GPUs of one node and serving one or two
    models. Unless `across_models`, a GPU that several pods hold is held by replicas of one
    model only, and such replicas serve that model alone."""
    watts = {
        (f"n{n}", f"GPU-{n}-{g}"): draw(GPU_WATTS)
        for n in range(draw(st.integers(1, 3)))
        for g in range(draw(st.integers(1, 4)))
    }
    gpus_of_node = defaultdict(list)
    for node, gpu in watts:
        gpus_of_node[node].append(gpu)
    pods = []
    for i in range(draw(st.integers(1, 6))):
        node = draw(st.sampled_from(sorted(gpus_of_node)))
        held = draw(st.sets(st.sampled_from(gpus_of_node[node]), min_size=1))
        models = draw(st.lists(st.sampled_from(["m/a", "m/b", "m/c"]), min_size=1, max_size=2))
        rates = [draw(st.floats(0.0, 500.0)) for _ in models]
        pods.append((f"p{i}", node, held, dict(zip(models, rates, strict=False))))
    if not across_models:
        # Give every GPU one model: pods on a GPU another model's pod holds let it go.
        owner: dict[tuple[str, str], str] = {}
        kept = []
        for pod, node, held, models in pods:
            held = {g for g in held if owner.setdefault((node, g), min(models)) == min(models)}
            if held and len(models) > 1 and any(len(_holders(pods, node, g)) > 1 for g in held):
                models = {min(models): models[min(models)]}
            if held:
                kept.append((pod, node, held, models))
        pods = kept
    holders = {(node, g): len(_holders(pods, node, g)) for node, g in watts}
    rows = tuple(
        PodGpus(
            "ns",
            pod,
            node,
            "NVIDIA A100-SXM4-80GB",
            len(held),
            sum(watts[(node, g)] for g in held),
            ENERGY_COUNTER,
            shared=tuple(
                SharedGpu(g, watts[(node, g)], holders[(node, g)])
                for g in sorted(held)
                if holders[(node, g)] > 1
            ),
        )
        for pod, node, held, _ in pods
    )
    tokens = tuple(
        PodTokens("ns", pod, model, rate, rate / 10)
        for pod, _, _, models in pods
        for model, rate in models.items()
    )
    held_by_serving = {(node, g) for _, node, held, _ in pods for g in held}
    return Observation(0.0, rows, tokens), watts, held_by_serving


def _holders(pods: list, node: str, gpu: str) -> list[str]:
    return [pod for pod, n, held, _ in pods if n == node and gpu in held]


@settings(max_examples=400, deadline=None)
@given(clusters(across_models=False))
def test_each_physical_gpu_is_counted_once(cluster: tuple[Observation, dict, set]) -> None:
    observation, watts, held = cluster
    models = join(observation)
    total = sum(p.power_w for m in models for p in m.pods)
    assert total == pytest.approx(sum(watts[key] for key in held), rel=1e-9)


@settings(max_examples=400, deadline=None)
@given(clusters(across_models=True))
def test_a_gpu_shared_across_models_is_charged_to_each_at_most_once(
    cluster: tuple[Observation, dict, set],
) -> None:
    """Where pods of different models hold one GPU, each such model is charged the GPU's
    whole power (an upper bound, labelled attribution="shared_gpu"): the total lies between
    the GPUs' power counted once and counted once per model."""
    observation, watts, held = cluster
    models = join(observation)
    total = sum(p.power_w for m in models for p in m.pods)
    once = sum(watts[key] for key in held)
    assert total >= once * (1 - 1e-9)
    assert total <= once * len(models) * (1 + 1e-9)
