"""Simulated clusters for the tests and the benchmark: Prometheus's view of the simulated
pages (target labels attached as a scrape would), stored history for `promtool tsdb
create-blocks-from openmetrics`, and clusters with shared GPUs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from exporter.demo.simulation import (
    Series,
    SimCluster,
    SimNode,
    SimPod,
    Target,
    format_labels,
    format_value,
    series_of,
    targets,
)

LB = 0.45359237  # lb/MWh -> g/kWh
# Each node of nrp_cluster() and its eGRID2023 rev2 location-based intensity, g/kWh.
NODE_INTENSITY = {
    "gpu-a.sdsc.optiputer.net": 428.464 * LB,  # CAMX
    "nautilus-c.calit2.optiputer.net": 428.464 * LB,  # CAMX
    "hcc-nrp-b.unl.edu": 920.130 * LB,  # MROW
    "gpu-d.hsrn.nyu.edu": 864.469 * LB,  # NYCW
}

# Embodied kg CO2e per GPU of the simulated products (NVIDIA's HGX H100 figure per GPU; the
# H200 and A100 80 GB with their extra HBM at the H100 figure's memory intensity; the L40S
# from a measured GA102 card), each with a GPU server's 375 kg share, over 5 years.
EMBODIED_KG = {"H100": 164 + 375, "H200": 216 + 375, "A100": 162 + 375, "L40S": 141 + 375}
HOURS_IN_FIVE_YEARS = 5 * 365.25 * 24
FACILITY = 1.2 * 1.4  # host overhead x PUE, the defaults


def embodied_grams_per_hour(product: str, gpus: float) -> float:
    kg = next(kg for name, kg in EMBODIED_KG.items() if name in product)
    return kg * 1000 * gpus / HOURS_IN_FIVE_YEARS


def stored(target: Target, series: Iterable[Series], instance: str) -> Iterator[Series]:
    """Series labels after the scrape: target labels attached, collisions renamed
    `exported_*` unless honor_labels (Prometheus's rules)."""
    attached = {**target.labels, "job": target.job, "instance": instance}
    for name, labels, value in series:
        out = dict(labels)
        for key, tval in attached.items():
            if key in out:
                if not target.honor_labels:
                    out[f"exported_{key}"] = out.pop(key)
                    out[key] = tval
            else:
                out[key] = tval
        yield name, out, value


# Where a dcgm-exporter pod that has since been replaced was scraped, and where a vLLM pod
# was before it was rescheduled (documentation addresses).
PREVIOUS_INSTANCE = {"dcgm": "198.51.100.7:9400", "vllm": "198.51.100.8:8000"}
SECOND_JOB = "podmonitor"  # a second scrape job over the same pages


def openmetrics_history(
    cluster: SimCluster,
    instance: str,
    start: float,
    end: float,
    step: float,
    dcgm_restarted_at: float | None = None,
    vllm_moved_at: float | None = None,
    scraped_twice: tuple[str, ...] = (),
) -> str:
    """Stored series from `start` to `end` every `step` seconds, as OpenMetrics text for
    `promtool tsdb create-blocks-from openmetrics` (no TYPE lines: the TSDB keeps no types).

    With `dcgm_restarted_at`, every dcgm-exporter was replaced at that time (a DaemonSet
    rollout): earlier samples belong to the old pod, scraped at another address, so each GPU's
    series is split in two (the energy counter itself runs on: it counts since driver load).
    With `vllm_moved_at`, every vLLM pod was rescheduled then under its own name (a
    StatefulSet): earlier samples were scraped at another address, so each token counter is
    split in two under the same pod label. Every page of the kinds in `scraped_twice` ("vllm",
    "dcgm") was also scraped by a second job (a PodMonitor beside a ServiceMonitor)."""
    rows: dict[str, dict[tuple, list[tuple[float, float]]]] = {}
    steps = int((end - start) // step) + 1

    def keep(stored_as: Target, target: Target, t: float, at: str) -> None:
        for name, labels, value in stored(stored_as, series_of(cluster, target, t), at):
            key = tuple(sorted(labels.items()))
            rows.setdefault(name, {}).setdefault(key, []).append((t, value))

    for target in targets(cluster):
        dcgm = target.kind == "dcgm"
        moved_at = dcgm_restarted_at if dcgm else vllm_moved_at
        # dcgm-exporter's replacement has a new pod name; a StatefulSet pod keeps its own.
        previous = (
            replace(target, labels={**target.labels, "pod": f"{target.labels['pod']}-old"})
            if dcgm
            else target
        )
        for i in range(steps):
            t = start + i * step
            stored_as, at = target, instance
            if moved_at is not None and t < moved_at:
                stored_as, at = previous, PREVIOUS_INSTANCE[target.kind]
            keep(stored_as, target, t, at)
            if target.kind in scraped_twice:
                keep(replace(stored_as, job=f"{target.kind}-{SECOND_JOB}"), target, t, at)
    lines = []
    for name, per_series in rows.items():
        for key, points in per_series.items():
            label_text = format_labels(dict(key))
            lines += [f"{name}{{{label_text}}} {format_value(v)} {t:.3f}" for t, v in points]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def shared_gpu_cluster(
    mig: int = 0, b_serves: str = "m/b", power_on_gpu_row: bool = False
) -> SimCluster:
    """One A100 node: pods a and b share GPU 0 (time-sliced copies, or MIG instances 1g.10gb
    dealt in turn: a gets instances 0 and 2, b instance 1), c has GPU 1 (all its instances);
    b serves `b_serves` (another model by default, or a second replica of a's). With MIG,
    `power_on_gpu_row` puts the power on the GPU's own row instead of every instance."""
    node = SimNode(
        "gpu-m.sdsc.optiputer.net",
        "NVIDIA A100-SXM4-80GB",
        2,
        mig_instances=mig,
        mig_power_on_gpu_row=power_on_gpu_row,
    )
    pods = (
        SimPod("ns", "a", "m/a", node.hostname, (0,), 200.0, 100.0, 10.0),
        SimPod("ns", "b", b_serves, node.hostname, (0,), 100.0, 50.0, 5.0),
        SimPod("ns", "c", "m/c", node.hostname, (1,), 150.0, 80.0, 8.0),
    )
    return SimCluster(nodes=(node,), pods=pods)
