"""The cluster the demo serves and the tests read: the five models of the NRP review (power and
tokens per second as published), plus an idle model."""

from __future__ import annotations

from exporter.demo.simulation import GPU_PRODUCTS, SimCluster, SimNode, SimPod

_A = SimNode("gpu-a.sdsc.optiputer.net", GPU_PRODUCTS["H100"], 8)
_B = SimNode(
    "hcc-nrp-b.unl.edu", GPU_PRODUCTS["H100"], 8, exported_labels=False, hostname_label="hostname"
)
_C = SimNode("nautilus-c.calit2.optiputer.net", GPU_PRODUCTS["H200"], 8, profiling=True)
_D = SimNode(
    "gpu-d.hsrn.nyu.edu",
    GPU_PRODUCTS["H200"],
    8,
    exported_labels=False,
    energy_counter=False,
    idle_w=75.0,
)
# (namespace, pod, model, node, GPUs, W, prompt tok/s, generation tok/s, vLLM engines)
_NRP_PODS = (
    # GLM-4.7-FP8: 1320 W, 3158 tok/s, two data-parallel engines.
    (
        "nrp-llm",
        "glm-4-7-fp8-6b9c7d-x2k4p",
        "zai-org/GLM-4.7-FP8",
        _A,
        (0, 1, 2, 3),
        1320.0,
        3000.0,
        158.0,
        2,
    ),
    # Qwen3.5-397B: 1235 W, 2392 tok/s, one replica in California, one in Nebraska.
    (
        "nrp-llm",
        "qwen3-5-397b-7f8d9c-ab12c",
        "Qwen/Qwen3.5-397B-A17B-FP8",
        _A,
        (4, 5, 6, 7),
        700.0,
        1330.0,
        70.0,
        1,
    ),
    (
        "nrp-llm",
        "qwen3-5-397b-7f8d9c-zz98q",
        "Qwen/Qwen3.5-397B-A17B-FP8",
        _B,
        (0, 1, 2, 3),
        535.0,
        944.0,
        48.0,
        1,
    ),
    # GPT-OSS-120B: 597 W, 2937 tok/s, two replicas on one node.
    (
        "sdsc-llm",
        "gpt-oss-120b-5c6d7e-aaa11",
        "openai/gpt-oss-120b",
        _B,
        (4,),
        300.0,
        1400.0,
        70.0,
        1,
    ),
    (
        "sdsc-llm",
        "gpt-oss-120b-5c6d7e-bbb22",
        "openai/gpt-oss-120b",
        _B,
        (5,),
        297.0,
        1397.0,
        70.0,
        1,
    ),
    # Kimi-K2.5: 928 W, 158 tok/s on 8 x H200.
    (
        "nrp-llm",
        "kimi-k2-5-8a9b0c-kk77m",
        "moonshotai/Kimi-K2.5",
        _C,
        tuple(range(8)),
        928.0,
        150.0,
        8.0,
        1,
    ),
    # MiniMax-M2.5: 421 W, 246 tok/s, on a node whose exporter has no energy counter.
    (
        "nrp-llm",
        "minimax-m2-5-1a2b3c-mm55n",
        "MiniMaxAI/MiniMax-M2.5",
        _D,
        (0, 1, 2, 3),
        421.0,
        230.0,
        16.0,
        1,
    ),
    # An idle model: GPU power, no tokens.
    (
        "nrp-llm",
        "llama-3-1-8b-9d8c7b-ll33q",
        "meta-llama/Llama-3.1-8B-Instruct",
        _D,
        (4,),
        78.0,
        0.0,
        0.0,
        1,
    ),
)


def nrp_cluster(wave: float = 0.0) -> SimCluster:
    """The five models of the NRP review (power and tok/s as published), plus an idle model,
    spread so that one model runs in two grid regions, one has two replicas, one has two
    vLLM engines, dcgm-exporter labels come in both `exported_*` and plain forms, both
    `Hostname` and `hostname`, one node has no energy counter and one has profiling. Serving
    pods' load oscillates by `wave`."""
    pods = tuple(
        SimPod(
            *(ns, name, model, node.hostname, gpus, watts, prompt, generation, engines),
            wave=wave if prompt + generation else 0.0,
        )
        for ns, name, model, node, gpus, watts, prompt, generation, engines in _NRP_PODS
    )
    return SimCluster(nodes=(_A, _B, _C, _D), pods=pods)
