"""A simulated GPU cluster: vLLM and dcgm-exporter /metrics pages whose counters follow known
power and token rates. The demo serves it; the integration tests scrape it with a real
Prometheus and check the exporter's figures against the rates it was built from.

Counters are exact integrals of the rates, so a rate over any window recovers them; with
`wave` > 0 the load oscillates (for a livelier demo) and the integrals stay closed-form.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.sources.dcgm_units import BASE_UNIT_ENERGY

Series = tuple[str, Mapping[str, str], float]

GPU_PRODUCTS = {
    "H100": "NVIDIA H100 80GB HBM3",
    "H200": "NVIDIA H200",
    "A100": "NVIDIA A100-SXM4-80GB",
    "L40S": "NVIDIA L40S",
}
DRIVER = "570.124.06"
EPOCH = 1_700_000_000.0  # counters count from here; far enough back for any test window


@dataclass(frozen=True)
class SimPod:
    namespace: str
    name: str
    model: str
    node: str
    gpus: tuple[int, ...]  # GPU indices on the node
    power_w: float  # total board power of the pod's GPUs
    prompt_tps: float
    generation_tps: float
    engines: int = 1  # vLLM data-parallel engines (series carry engine="0", "1", ...)
    wave: float = 0.0  # load oscillation amplitude, 0..1
    period_s: float = 600.0
    container: str = "vllm"
    started_at: float = EPOCH  # vLLM counters count from here (a later value = a restart)
    prompt_tokens_per_request: float = 30000.0  # finished requests = prompt tokens / this
    cache_hit_share: float = 0.6  # share of prompt tokens served from the prefix cache

    @property
    def requests_per_second(self) -> float:
        return self.prompt_tps / self.prompt_tokens_per_request

    @property
    def prompt_computed_tps(self) -> float:
        return self.prompt_tps * (1.0 - self.cache_hit_share)

    def load(self, t: float) -> float:
        return 1.0 + self.wave * math.sin(2 * math.pi * (t - EPOCH) / self.period_s)

    def load_integral(self, t: float) -> float:
        """Integral of load from EPOCH to t (seconds at full load)."""
        x = t - EPOCH
        return x + self.wave * self.period_s / (2 * math.pi) * (
            1 - math.cos(2 * math.pi * x / self.period_s)
        )


LEGACY_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # mJ


@dataclass(frozen=True)
class SimNode:
    hostname: str
    product: str
    gpu_count: int
    idle_w: float = 70.0  # power of GPUs no pod holds
    exported_labels: bool = True  # dcgm-exporter scraped with honorLabels false
    hostname_label: str = "Hostname"  # "hostname" after dcgm-exporter#655
    energy_counter: bool = True
    profiling: bool = False  # DCGM_FI_PROF_GR_ENGINE_ACTIVE collected (needs SYS_ADMIN)
    driver_loaded_at: float = EPOCH  # the energy counter counts from here (later = a reload)
    mig_instances: int = 0  # > 0: every GPU is split into this many MIG instances
    mig_profile: str = "1g.10gb"
    # MIG layouts: dcgm-exporter's default repeats the GPU's power on every instance row; with
    # GPU rows selected too, power sits on the GPU row and the instance rows carry the pods.
    mig_power_on_gpu_row: bool = False
    # dcgm-exporter's Kubernetes mapping (-k): off, no series names the pod a GPU is
    # allocated to, and a scrape leaves only dcgm-exporter's own pod label on them.
    pod_mapping: bool = True
    # DCGM 4.7's base-unit energy field (joules, DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL) in place
    # of the legacy one in millijoules, as dcgm-exporter 4.9 exports it.
    base_units: bool = False

    def uuid(self, index: int) -> str:
        digest = zlib.crc32(f"{self.hostname}/{index}".encode()) % 10**12
        return f"GPU-{digest:012d}-{index:04d}"


@dataclass(frozen=True)
class SimCluster:
    nodes: tuple[SimNode, ...]
    pods: tuple[SimPod, ...]
    dcgm_namespace: str = "gpu-operator"
    idle_fraction: float = 0.6  # share of a pod's power that does not follow the load
    extra: Mapping[str, str] = field(default_factory=dict)

    def node(self, hostname: str) -> SimNode:
        return next(n for n in self.nodes if n.hostname == hostname)

    def pods_on(self, hostname: str) -> list[SimPod]:
        return [p for p in self.pods if p.node == hostname]

    # ---- what each endpoint exposes

    def vllm_series(self, pod: SimPod, t: float) -> list[Series]:
        out: list[Series] = []
        seconds = max(0.0, pod.load_integral(t) - pod.load_integral(pod.started_at))
        for engine in range(pod.engines):
            labels = {"engine": str(engine), "model_name": pod.model}
            out.append(
                (
                    "vllm:prompt_tokens_total",
                    labels,
                    round(pod.prompt_tps * seconds / pod.engines, 3),
                )
            )
            out.append(
                (
                    "vllm:generation_tokens_total",
                    labels,
                    round(pod.generation_tps * seconds / pod.engines, 3),
                )
            )
            per_engine = seconds / pod.engines
            requests = pod.requests_per_second * per_engine
            for reason, part in (("stop", 0.9), ("length", 0.1), ("abort", 0.0)):
                out.append(
                    (
                        "vllm:request_success_total",
                        {**labels, "finished_reason": reason},
                        round(requests * part, 3),
                    )
                )
            computed = pod.prompt_computed_tps * per_engine
            cached = pod.prompt_tps * per_engine - computed
            for source, value in (
                ("local_compute", computed),
                ("local_cache_hit", cached),
                ("external_kv_transfer", 0.0),
            ):
                out.append(
                    (
                        "vllm:prompt_tokens_by_source_total",
                        {**labels, "source": source},
                        round(value, 3),
                    )
                )
            running = max(0, round((pod.prompt_tps + pod.generation_tps) / 400 * pod.load(t)))
            out.append(("vllm:num_requests_running", labels, float(running)))
        return out

    def gpu_power(self, node: SimNode, index: int, t: float) -> tuple[float, float]:
        """(power W at t, energy J since EPOCH) of one GPU; a GPU several pods share draws
        the sum of their per-GPU power."""
        power = energy = 0.0
        holders = [p for p in self.pods_on(node.hostname) if index in p.gpus]
        for pod in holders:
            per_gpu = pod.power_w / len(pod.gpus)
            fixed = per_gpu * self.idle_fraction if pod.wave else per_gpu
            dynamic = per_gpu - fixed
            power += fixed + dynamic * pod.load(t)
            energy += fixed * (t - EPOCH) + dynamic * pod.load_integral(t)
        if not holders:
            return node.idle_w, node.idle_w * (t - EPOCH)
        return power, energy

    def _copies(
        self, node: SimNode, base: dict[str, str], holders: list[SimPod]
    ) -> list[tuple[dict[str, str], SimPod | None, bool]]:
        """The rows a GPU is published as: (labels, the pod on them, whether they carry
        power). A MIG GPU's instances go to its pods in turn; a time-sliced GPU
        (KUBERNETES_VIRTUAL_GPUS) has a copy per pod."""
        if not node.mig_instances:
            return [(dict(base), pod, True) for pod in holders] or [(dict(base), None, True)]
        copies: list[tuple[dict[str, str], SimPod | None, bool]] = []
        if node.mig_power_on_gpu_row:
            copies.append((dict(base), None, True))
        for instance in range(node.mig_instances):
            pod = holders[instance % len(holders)] if holders else None
            labels = {**base, "GPU_I_ID": str(instance), "GPU_I_PROFILE": node.mig_profile}
            copies.append((labels, pod, not node.mig_power_on_gpu_row))
        return copies

    def dcgm_series(self, node: SimNode, t: float) -> list[Series]:
        """One series per GPU (or copy, or MIG instance) and field."""
        power_rows: list[Series] = []
        energy_rows: list[Series] = []
        util_rows: list[Series] = []
        active_rows: list[Series] = []
        for index in range(node.gpu_count):
            base = {
                "gpu": str(index),
                "UUID": node.uuid(index),
                "pci_bus_id": f"00000000:{0x18 + index:02X}:00.0",
                "device": f"nvidia{index}",
                "modelName": node.product,
                node.hostname_label: node.hostname,
                "DCGM_FI_DRIVER_VERSION": DRIVER,
            }
            holders = [p for p in self.pods_on(node.hostname) if index in p.gpus]
            power, energy_j = self.gpu_power(node, index, t)
            energy_j -= self.gpu_power(node, index, node.driver_loaded_at)[1]
            for labels, pod, with_power in self._copies(node, base, holders):
                if pod is not None and node.pod_mapping:
                    labels.update(container=pod.container, namespace=pod.namespace, pod=pod.name)
                if with_power:
                    power_rows.append(("DCGM_FI_DEV_POWER_USAGE", labels, round(power, 6)))
                if node.energy_counter and with_power:
                    energy_rows.append(
                        (BASE_UNIT_ENERGY, labels, float(int(energy_j)))
                        if node.base_units
                        else (LEGACY_ENERGY, labels, float(int(energy_j * 1000)))
                    )
                busy = 0.0 if pod is None else min(100.0, 8.0 + 60.0 * pod.load(t))
                util_rows.append(("DCGM_FI_DEV_GPU_UTIL", labels, float(int(busy))))
                if node.profiling:  # the graphics engine is busy less often than GPU_UTIL says
                    active_rows.append(
                        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", labels, round(busy / 100 * 0.8, 6))
                    )
        return power_rows + energy_rows + util_rows + active_rows


# ---- exposition

HELP = {
    "vllm:prompt_tokens_total": ("counter", "Number of prefill tokens processed."),
    "vllm:generation_tokens_total": ("counter", "Number of generation tokens processed."),
    "vllm:num_requests_running": ("gauge", "Number of requests in model execution batches."),
    "vllm:request_success_total": ("counter", "Count of successfully processed requests."),
    "vllm:prompt_tokens_by_source_total": ("counter", "Number of prompt tokens by source."),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W)."),
    LEGACY_ENERGY: ("counter", "Total energy consumption since boot (in mJ)."),
    BASE_UNIT_ENERGY: ("counter", "Total energy consumption since boot (in J)."),
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %)."),
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ("gauge", "Ratio of time the graphics engine is active."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def format_value(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) > 1e6 else repr(float(value))


def exposition(series: Iterable[Series]) -> str:
    """Prometheus text format 0.0.4, families grouped, with HELP and TYPE."""
    by_name: dict[str, list[Series]] = {}
    for row in series:
        by_name.setdefault(row[0], []).append(row)
    lines = []
    for name, rows in by_name.items():
        kind, text = HELP.get(name, ("untyped", name))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [
            f"{name}{{{format_labels(labels)}}} {format_value(value)}" for _, labels, value in rows
        ]
    return "\n".join(lines) + "\n"


# ---- scrape targets, as a Prometheus would see and store them


@dataclass(frozen=True)
class Target:
    """One scrape target: a page on the fixture server plus its target labels."""

    job: str
    path: str
    labels: Mapping[str, str]
    honor_labels: bool
    kind: str  # vllm | dcgm
    key: str  # pod name or node hostname


def targets(cluster: SimCluster) -> list[Target]:
    out = []
    for pod in cluster.pods:
        out.append(
            Target(
                "vllm",
                f"/vllm/{pod.name}/metrics",
                {"namespace": pod.namespace, "pod": pod.name},
                False,
                "vllm",
                pod.name,
            )
        )
    for node in cluster.nodes:
        exporter_pod = f"nvidia-dcgm-exporter-{zlib.crc32(node.hostname.encode()) % 10**5:05d}"
        out.append(
            Target(
                "dcgm-exporter" if node.exported_labels else "dcgm-exporter-honor",
                f"/dcgm/{node.hostname}/metrics",
                {"namespace": cluster.dcgm_namespace, "pod": exporter_pod},
                not node.exported_labels,
                "dcgm",
                node.hostname,
            )
        )
    return out


def page(cluster: SimCluster, target: Target, t: float) -> str:
    return exposition(series_of(cluster, target, t))


def series_of(cluster: SimCluster, target: Target, t: float) -> list[Series]:
    if target.kind == "vllm":
        return cluster.vllm_series(next(p for p in cluster.pods if p.name == target.key), t)
    return cluster.dcgm_series(cluster.node(target.key), t)
