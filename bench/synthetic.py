"""Synthetic clusters for the benchmark: N models, one 8-GPU pod each on its own 8-GPU node,
with the variety a real cluster has (catalogued and unknown models, four GPU products, grid
regions and an unmapped site, nodes without the energy counter, with profiling, with both
dcgm-exporter label styles, idle models, two-engine pods), and their stored history as
OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`.

The history is written one node at a time (tests.simulated.openmetrics_history on a
one-node cluster), so memory stays flat at 2,000 models; lines are grouped by metric name on
disk and only the series the exporter's queries read are kept.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

from exporter.demo.simulation import (
    EPOCH,
    GPU_PRODUCTS,
    SimCluster,
    SimNode,
    SimPod,
    exposition,
)
from tests.simulated import openmetrics_history

GPUS_PER_NODE = 8
# Base names: most match the built-in model table (MFU and size class are computed), one does
# not (the "unknown_model" path). A per-model suffix keeps every (namespace, model) distinct.
BASE_MODELS = (
    "zai-org/GLM-4.7-FP8",
    "Qwen/Qwen3-32B",
    "meta-llama/Llama-3.1-70B-Instruct",
    "openai/gpt-oss-120b",
    "moonshotai/Kimi-K2.5",
    "deepseek-ai/DeepSeek-V3",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "acme/in-house-assistant",
)
# Node name suffixes: four map to grid regions through the default grid.nodes rules, the
# last to none (the default region, counted in llm_carbon_exporter_unmapped_nodes).
SITES = (
    ".sdsc.optiputer.net",
    ".unl.edu",
    ".hsrn.nyu.edu",
    ".tacc.utexas.edu",
    ".example.org",
)
PRODUCTS = ("H100", "H200", "A100", "L40S")
MAX_W = {"H100": 700.0, "H200": 700.0, "A100": 400.0, "L40S": 350.0}  # rated board power
NAMESPACES = 40
# Series the exporter's PromQL reads; vllm:num_requests_running is not among them.
QUERIED = (
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:prompt_tokens_by_source_total",
)


def synthetic_node_and_pod(i: int) -> tuple[SimNode, SimPod]:
    """The i-th model's node and pod (deterministic)."""
    honor = i % 4 == 2  # dcgm-exporter scraped with honorLabels, lower-case hostname label
    node = SimNode(
        hostname=f"gpu-{i:05d}{SITES[i % len(SITES)]}",
        product=GPU_PRODUCTS[PRODUCTS[i % len(PRODUCTS)]],
        gpu_count=GPUS_PER_NODE,
        exported_labels=not honor,
        hostname_label="hostname" if honor else "Hostname",
        energy_counter=i % 7 != 3,  # some nodes only have the power gauge
        profiling=i % 5 == 1,  # some have DCGM_FI_PROF_GR_ENGINE_ACTIVE
    )
    base = BASE_MODELS[i % len(BASE_MODELS)]
    idle = i % 10 == 9
    # Between a fifth and nine tenths of the product's rated power: what a real GPU draws.
    rated = MAX_W[PRODUCTS[i % len(PRODUCTS)]]
    per_gpu_w = 80.0 if idle else rated * (0.2 + 0.7 * ((i * 37) % 100) / 100)
    tps = 0.0 if idle else 100.0 + 40.0 * ((i * 53) % 100)
    slug = base.split("/")[-1].lower().replace(".", "-")[:24]
    pod = SimPod(
        namespace=f"team-{i % NAMESPACES:02d}",
        name=f"{slug}-{i:05d}-7f8d9c-x{i % 97:02d}q",
        model=f"{base}-v{i:05d}",
        node=node.hostname,
        gpus=tuple(range(GPUS_PER_NODE)),
        power_w=per_gpu_w * GPUS_PER_NODE,
        prompt_tps=round(tps * 0.9, 3),
        generation_tps=round(tps * 0.1, 3),
        engines=2 if i % 6 == 0 else 1,
    )
    return node, pod


def synthetic_cluster(models: int) -> SimCluster:
    pairs = [synthetic_node_and_pod(i) for i in range(models)]
    return SimCluster(nodes=tuple(n for n, _ in pairs), pods=tuple(p for _, p in pairs))


def write_history(models: int, path: Path, start: float, end: float, step: float) -> int:
    """Write the stored history of `synthetic_cluster(models)` from `start` to `end` every
    `step` seconds to `path`; returns the number of samples written."""
    samples = 0
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        parts = {name: (Path(scratch) / f"{n}.om").open("w") for n, name in enumerate(QUERIED)}
        try:
            for i in range(models):
                node, pod = synthetic_node_and_pod(i)
                one = SimCluster(nodes=(node,), pods=(pod,))
                instance = f"10.{i // 250}.{i % 250}.1:9400"
                text = openmetrics_history(one, instance, start, end, step)
                for line in text.splitlines():
                    name = line.split("{", 1)[0]
                    handle = parts.get(name)
                    if handle is not None:
                        handle.write(line + "\n")
                        samples += 1
        finally:
            for handle in parts.values():
                handle.close()
        with path.open("wb") as out:
            for n in range(len(QUERIED)):
                with (Path(scratch) / f"{n}.om").open("rb") as part:
                    shutil.copyfileobj(part, out)
            out.write(b"# EOF\n")
    return samples


# ---- sidecar pages: one 8-GPU node and its pod, bare or padded to a realistic size

SIDECAR_T0 = EPOCH + 86_400.0

# Fields of dcgm-exporter's default counter set other than the four the exporter reads, so
# the padded page has the line count of a stock dcgm-exporter page (about 20 fields per GPU).
DCGM_PADDING = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", 1980.0),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", 2619.0),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", 41.0),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", 38.0),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", 0.0),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", 12.0),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", 0.0),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", 0.0),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", 0.0),
    ("DCGM_FI_DEV_FB_FREE", "gauge", 2317.0),
    ("DCGM_FI_DEV_FB_USED", "gauge", 78862.0),
    ("DCGM_FI_DEV_FB_RESERVED", "gauge", 608.0),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter", 0.0),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter", 0.0),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", 0.0),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", 0.31),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", 0.44),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", 1.8e7),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", 2.1e7),
    ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", 0.0),
)
# vLLM histograms (name, bucket bounds) and other families of a vLLM /metrics page, so the
# padded page has the size of a real one (several hundred lines, mostly histogram buckets).
_LATENCY = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
_LONG = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
_TOKENS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
VLLM_HISTOGRAMS = (
    ("vllm:time_to_first_token_seconds", _LATENCY + _LONG[4:]),
    ("vllm:time_per_output_token_seconds", _LATENCY),
    ("vllm:inter_token_latency_seconds", _LATENCY),
    ("vllm:e2e_request_latency_seconds", _LONG),
    ("vllm:request_queue_time_seconds", _LONG),
    ("vllm:request_inference_time_seconds", _LONG),
    ("vllm:request_prefill_time_seconds", _LONG),
    ("vllm:request_decode_time_seconds", _LONG),
    ("vllm:request_prompt_tokens", _TOKENS),
    ("vllm:request_generation_tokens", _TOKENS),
    ("vllm:request_params_n", (1, 2, 5, 10, 20)),
    ("vllm:request_params_max_tokens", _TOKENS),
    ("vllm:iteration_tokens_total", _TOKENS[:12]),
)
VLLM_GAUGES = (
    "vllm:num_requests_waiting",
    "vllm:gpu_cache_usage_perc",
    "vllm:gpu_prefix_cache_hit_rate",
    "vllm:num_preemptions_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:request_success_total",
)


def sidecar_cluster() -> SimCluster:
    """One H100 node whose eight GPUs one pod holds, with the energy counter and profiling."""
    node = SimNode("gpu-00001.sdsc.optiputer.net", GPU_PRODUCTS["H100"], 8, profiling=True)
    pod = SimPod(
        "nrp-llm",
        "glm-4-7-fp8-6b9c7d-x2k4p",
        "zai-org/GLM-4.7-FP8",
        node.hostname,
        tuple(range(8)),
        2800.0,
        3000.0,
        158.0,
        wave=0.3,
    )
    return SimCluster(nodes=(node,), pods=(pod,))


def _dcgm_padding(cluster: SimCluster) -> str:
    node, pod = cluster.nodes[0], cluster.pods[0]
    lines = []
    for name, kind, value in DCGM_PADDING:
        lines += [f"# HELP {name} {name}.", f"# TYPE {name} {kind}"]
        for index in range(node.gpu_count):
            labels = (
                f'gpu="{index}",UUID="{node.uuid(index)}",device="nvidia{index}",'
                f'modelName="{node.product}",Hostname="{node.hostname}",'
                f'DCGM_FI_DRIVER_VERSION="570.124.06",container="vllm",'
                f'namespace="{pod.namespace}",pod="{pod.name}"'
            )
            lines.append(f"{name}{{{labels}}} {value!r}")
    return "\n".join(lines) + "\n"


def _vllm_padding(cluster: SimCluster, t: float) -> str:
    pod = cluster.pods[0]
    labels = f'engine="0",model_name="{pod.model}"'
    requests = (t - EPOCH) * 2.0
    lines = []
    for name in VLLM_GAUGES:
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# HELP {name} {name}.", f"# TYPE {name} {kind}"]
        lines.append(f"{name}{{{labels}}} {requests * 0.1:.1f}")
    for name, bounds in VLLM_HISTOGRAMS:
        lines += [f"# HELP {name} {name}.", f"# TYPE {name} histogram"]
        for n, bound in enumerate(bounds):
            share = 1 - math.exp(-(n + 1) / 3)
            lines.append(f'{name}_bucket{{{labels},le="{float(bound)}"}} {requests * share:.1f}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {requests:.1f}')
        lines.append(f"{name}_count{{{labels}}} {requests:.1f}")
        lines.append(f"{name}_sum{{{labels}}} {requests * 0.7:.3f}")
    for name in ("python_gc_objects_collected_total", "process_cpu_seconds_total"):
        lines += [f"# HELP {name} {name}.", f"# TYPE {name} counter"]
        lines.append(f"{name} {requests:.1f}")
    return "\n".join(lines) + "\n"


def sidecar_pages(cluster: SimCluster, t: float, padded: bool) -> tuple[str, str]:
    """(DCGM node page, vLLM page) at time t."""
    node, pod = cluster.nodes[0], cluster.pods[0]
    dcgm = exposition(cluster.dcgm_series(node, t))
    vllm = exposition(cluster.vllm_series(pod, t))
    if padded:
        dcgm += _dcgm_padding(cluster)
        vllm += _vllm_padding(cluster, t)
    return dcgm, vllm
