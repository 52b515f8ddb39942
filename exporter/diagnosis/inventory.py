"""The inventory of upstream series, from the Prometheus source's inventory queries or from
the pages a direct source holds: which GPUs have power series and which pod labels they
carry, which token series exist and with which labels. Pure: rows in, an `Inventory` out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from exporter.config import Config, DirectPod
from exporter.diagnosis.facts import GpuGroup, Inventory, TokenGroup
from exporter.model.observations import ENERGY_COUNTER, POWER_GAUGE
from exporter.sources.direct_gpus import first_label
from exporter.sources.page_parser import base_name
from exporter.sources.prometheus_api import Sample
from exporter.sources.promql_inventory import INVENTORY_METRIC, INVENTORY_READING, REPLICA_LABELS
from exporter.sources.series_store import SeriesKey

GroupKey = tuple[str, str, str, str]  # node, namespace, pod, pod label


def _groups(held: Mapping[GroupKey, Mapping[str, int]]) -> tuple[GpuGroup, ...]:
    return tuple(
        GpuGroup(*key, gpus=max(readings.values()), readings=frozenset(readings))
        for key, readings in sorted(held.items())
    )


def from_prometheus(rows: Mapping[str, list[Sample]]) -> Inventory:
    """The inventory from the rows of `promql.inventory`'s queries (gpus, tokens, replicas)."""
    held: dict[GroupKey, dict[str, int]] = defaultdict(dict)
    for sample in rows.get("gpus", []):
        labels = sample.labels
        node, namespace = labels.get("lce_node", ""), labels.get("lce_namespace", "")
        key = (node, namespace, labels.get("lce_pod", ""), labels.get("lce_pod_label", ""))
        reading = labels.get(INVENTORY_READING, "")
        if reading in (ENERGY_COUNTER, POWER_GAUGE):
            held[key][reading] = int(sample.value)
    tokens = tuple(
        TokenGroup(
            metric=s.labels.get(INVENTORY_METRIC, ""),
            namespace=s.labels.get("lce_namespace", ""),
            pod=s.labels.get("lce_pod", ""),
            model=s.labels.get("lce_model", ""),
            series=int(s.value),
        )
        for s in rows.get("tokens", [])
    )
    values: dict[str, set[str]] = defaultdict(set)
    for sample in rows.get("replicas", []):
        for label in REPLICA_LABELS:
            if sample.labels.get(label):
                values[label].add(sample.labels[label])
    return Inventory(
        gpus=_groups(held),
        tokens=tuple(sorted(tokens, key=lambda t: (t.metric, t.namespace, t.pod, t.model))),
        replicas={label: len(found) for label, found in sorted(values.items())},
    )


def from_pages(
    series: Iterable[SeriesKey], config: Config, pods_of_page: Mapping[str, DirectPod]
) -> Inventory:
    """The inventory from the series a direct source read: dcgm-exporter pages' GPU series,
    and each configured pod's inference-server pages (the pod's name comes from the
    configuration, as in the figures)."""
    labels_of = config.upstream.gpu_labels
    names = config.upstream.metrics
    readings = {
        base_name(names.gpu_energy): ENERGY_COUNTER,
        base_name(names.gpu_power): POWER_GAUGE,
    }
    gpus: dict[GroupKey, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    tokens: dict[tuple[str, str, str], int] = defaultdict(int)
    dcgm_pages = set(config.direct.dcgm_urls)
    for page, name, items in series:
        labels = dict(items)
        if page in dcgm_pages and name in readings:
            pod_label = next((c for c in labels_of.pod if labels.get(c)), "")
            key = (
                config.direct.node or first_label(labels, labels_of.node),
                first_label(labels, labels_of.namespace),
                labels.get(pod_label, ""),
                pod_label,
            )
            gpus[key][readings[name]].add(first_label(labels, labels_of.gpu_id))
        elif page in pods_of_page and name == base_name(names.prompt_tokens):
            pod = pods_of_page[page]
            model = first_label(labels, config.upstream.token_labels.model)
            tokens[
                (pod.namespace or "", pod.pod or "", model or config.upstream.default_model)
            ] += 1
    held = {key: {r: len(ids) for r, ids in found.items()} for key, found in gpus.items()}
    return Inventory(
        gpus=_groups(held),
        tokens=tuple(
            TokenGroup(names.prompt_tokens, ns, pod, model, count)
            for (ns, pod, model), count in sorted(tokens.items())
        ),
    )
