"""The checks of the served models: each model's pods, GPUs, power, throughput and regions,
whether its figures can be computed and whether the tables know it; pods that serve tokens
without GPU series and GPUs that serve none; nodes that fell to the default region. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from exporter.diagnosis.checks import FAIL, OK, WARN, Check, examples, serving_pods
from exporter.diagnosis.facts import Facts
from exporter.model.figures import ModelFigures
from exporter.model.join import ServedModel
from exporter.model.problems import IMPLAUSIBLE, INVALID_VALUE, pod_ref
from exporter.text import plural

WITHOUT_GPUS = "pods-with-tokens-but-no-gpu-series"
SHARED = "the-wrong-pod-on-mig-or-time-sliced-gpus"
ATTRIBUTIONS = {
    "mig_share": "MIG instances charged their share",
    "shared_pod": "a pod serving several models, split by tokens",
    "shared_gpu": "GPUs shared with other pods",
}
GIVE_PODS_GPUS = (
    "DCGM series must carry the serving pod's namespace and pod (dcgm-exporter's Kubernetes "
    "pod mapping), or in sidecar mode the pod's GPUs be claimed by direct.pods[].gpu_uuids"
)
NOT_IN_TABLES = "a-model-or-gpu-not-in-the-tables"
NAMED = 3  # other pods a fix names


def without_gpus_fix(facts: Facts, pods: list[tuple[str, str]]) -> str:
    """The fix for `pods` (namespace, pod) serving tokens without GPU series; in direct mode,
    where the dcgm-exporter pages label their GPUs with other pods, that the configured pod's
    name is probably wrong, and which pods they label."""
    if not facts.direct:
        return GIVE_PODS_GPUS
    claiming = {(p.namespace or "", p.pod or "") for p in facts.config.direct.pods if p.gpu_uuids}
    labelled = {(g.namespace, g.pod) for g in facts.inventory.gpus if g.pod}
    unmatched = sorted(set(pods) - labelled - claiming)
    if not labelled or not unmatched:
        return GIVE_PODS_GPUS
    configured = {(p.namespace or "", p.pod or "") for p in facts.config.direct.pods}
    others = [pod_ref(*pod) for pod in sorted(labelled - configured) or sorted(labelled)]
    named = ", ".join(others[:NAMED]) + (
        f" and {len(others) - NAMED} more" if len(others) > NAMED else ""
    )
    one_page = len(set(facts.config.direct.dcgm_urls)) == 1
    where = (
        "the dcgm-exporter page labels its" if one_page else "the dcgm-exporter pages label their"
    )
    return (
        f"{where} GPUs with {'the pod' if len(others) == 1 else 'the pods'} {named}, not with "
        f"{', '.join(pod_ref(*pod) for pod in unmatched)}: --pod or --namespace (POD_NAME, "
        "POD_NAMESPACE, or direct.pods[].pod and namespace) probably names the wrong pod, or "
        "claim the pod's GPUs by direct.pods[].gpu_uuids"
    )


@dataclass(frozen=True)
class ModelReport:
    """One served model as `diagnose` reports it (`--format json` prints these)."""

    namespace: str
    model: str
    pods: tuple[str, ...]
    pods_without_gpus: tuple[str, ...]
    gpus: int | None
    gpu_types: tuple[str, ...]
    power_w: float | None
    power_source: str
    tokens_per_second: float
    active: bool
    regions: tuple[str, ...]
    attribution: str  # exclusive, shared_gpu, mig_share or shared_pod (figures.attribution)
    model_in_table: bool
    gpus_in_table: bool
    figures: bool  # whether its figures can be computed this cycle


def reports(facts: Facts) -> tuple[ModelReport, ...]:
    figures = {f.key: f for f in facts.snapshot.models} if facts.snapshot else {}
    return tuple(_report(facts, s, figures.get(s.key)) for s in facts.served)


def _report(facts: Facts, s: ServedModel, f: ModelFigures | None) -> ModelReport:
    catalog = facts.settings.catalog
    products = sorted({p.gpu_model for p in s.pods})
    power = f.power_w.get("gpu") if f else None
    return ModelReport(
        namespace=s.namespace,
        model=s.model,
        pods=tuple(sorted({p.pod for p in s.pods} | set(s.pods_without_gpus))),
        pods_without_gpus=s.pods_without_gpus,
        gpus=f.gpus if f else None,
        gpu_types=tuple(sorted({f.info_value("gpu_type")})) if f else tuple(products),
        power_w=power,
        power_source=f.info_value("power_source") if f else "unknown",
        tokens_per_second=s.tokens_per_second,
        active=f.active if f else s.tokens_per_second >= facts.settings.min_tokens_per_second,
        regions=f.regions if f else (),
        attribution=f.info_value("attribution") if f else "unknown",
        model_in_table=catalog.model(s.model) is not None,
        gpus_in_table=bool(products) and all(catalog.gpu(p) is not None for p in products),
        figures=power is not None,
    )


def _summary(r: ModelReport) -> str:
    parts = [plural(len(r.pods), "pod")]
    if r.gpus is not None:
        parts.append(f"{plural(r.gpus, 'GPU')} ({', '.join(r.gpu_types)})")
    if r.power_w is not None:
        source = {"energy_counter": "energy counter", "power_gauge": "power gauge"}
        parts.append(f"{r.power_w:.0f} W ({source.get(r.power_source, r.power_source)})")
    parts.append(f"{r.tokens_per_second:.0f} tok/s" + ("" if r.active else " (inactive)"))
    if r.regions:
        parts.append(",".join(r.regions))
    if r.attribution in ATTRIBUTIONS:
        parts.append(ATTRIBUTIONS[r.attribution])
    return f"{r.model} in {r.namespace}: {', '.join(parts)}"


def model_checks(facts: Facts, models: tuple[ModelReport, ...]) -> list[Check]:
    """One line per served model; a line of its own when there is none."""
    if not models:
        return [
            Check(
                "models",
                FAIL,
                "no served model: no token series with namespace, pod and model labels was read",
                "fix the checks above; a model is the pods of one namespace serving one model name",
                "no-served-models",
            )
        ]
    return [_model_check(facts, r) for r in models]


def _model_check(facts: Facts, r: ModelReport) -> Check:
    summary = _summary(r)
    if not r.figures:
        refs = {pod_ref(r.namespace, pod) for pod in r.pods}
        refused = [
            p for p in facts.problems if p.pods & refs and p.reason in (IMPLAUSIBLE, INVALID_VALUE)
        ]
        if r.pods_without_gpus:
            why = f"no GPU series for pod(s) {', '.join(r.pods_without_gpus)}"
            fix = without_gpus_fix(facts, [(r.namespace, pod) for pod in r.pods_without_gpus])
            doc = WITHOUT_GPUS
        elif refused:
            why, fix, doc = refused[0].message, "see implausible readings", "implausible-readings"
        else:
            why, fix, doc = "power unknown this cycle", "run diagnose again", WITHOUT_GPUS
        return Check("model", FAIL, f"{summary}; power withheld: {why}", fix, doc)
    unknown = [
        *(["the model"] if not r.model_in_table else []),
        *([f"the GPU ({', '.join(r.gpu_types)})"] if not r.gpus_in_table else []),
    ]
    if r.attribution == "shared_gpu":
        return Check(
            "model",
            WARN,
            f"{summary}: charged their whole power, an upper bound",
            "check which pods dcgm-exporter names on the shared GPUs (time-slicing maps a GPU "
            "to one pod, or copies it per pod with --kubernetes-virtual-gpus)",
            SHARED,
        )
    if unknown:
        return Check(
            "model",
            WARN,
            f"{summary}; {' and '.join(unknown)} not in the tables: no MFU or size class",
            "add it to catalog.models or catalog.gpus",
            NOT_IN_TABLES,
        )
    return Check("model", OK, summary)


def joins(facts: Facts) -> list[Check]:
    """Pods with token series but no GPU series, and pods holding GPUs that serve no
    tokens (not in sidecar mode: there the other pods on the node are other sidecars')."""
    checks = []
    pods = [(s.namespace, pod) for s in facts.served for pod in s.pods_without_gpus]
    without = [
        f"{pod_ref(s.namespace, pod)} ({s.model})"
        for s in facts.served
        for pod in s.pods_without_gpus
    ]
    if without:
        checks.append(
            Check(
                "joins",
                FAIL,
                f"{plural(len(without), 'pod')} "
                + (
                    "serves tokens but has no GPU series: its model's power is withheld"
                    if len(without) == 1
                    else "serve tokens but have no GPU series: their models' power is withheld"
                ),
                without_gpus_fix(facts, pods),
                WITHOUT_GPUS,
                examples(sorted(without)),
            )
        )
    if facts.direct:
        return checks
    serving = serving_pods(facts)
    idle = sorted(
        f"{pod_ref(g.namespace, g.pod)} on {g.node} ({plural(g.gpus, 'GPU')})"
        for g in facts.inventory.gpus
        if g.pod and (g.namespace, g.pod) not in serving and "dcgm" not in g.pod.lower()
    )
    if idle:
        checks.append(
            Check(
                "joins",
                WARN,
                f"{plural(len(idle), 'pod')} "
                + ("holds GPUs but serves" if len(idle) == 1 else "hold GPUs but serve")
                + " no tokens (idle, or a server whose series this exporter does not read)",
                "nothing to do for idle GPUs; for a server, see tokens",
                "gpus-that-serve-no-tokens",
                examples(idle),
            )
        )
    return checks


def regions(facts: Facts) -> list[Check]:
    """How the served models' nodes map to grid regions; nodes that fell to the default."""
    nodes = sorted({p.node for s in facts.served for p in s.pods})
    if not nodes:
        return []
    mapping = facts.settings.node_regions
    found = {node: mapping.region_of(node) for node in nodes}
    fell = [node or "(no node name)" for node, (_, matched) in found.items() if not matched]
    counts = Counter(region for region, _ in found.values())
    spread = ", ".join(f"{region} ({n})" for region, n in sorted(counts.items()))
    if fell:
        return [
            Check(
                "regions",
                WARN,
                f"{plural(len(fell), 'node')} of {len(nodes)} matched no grid.nodes pattern and "
                f"count in the default region {mapping.default}",
                "add grid.nodes patterns for them, or set grid.default_region to their region",
                "the-wrong-grid-region",
                examples(fell),
            )
        ]
    return [Check("regions", OK, f"{plural(len(nodes), 'node')} mapped to grid regions: {spread}")]
