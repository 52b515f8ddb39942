"""The checks of what the figures rest on besides the series: the site defaults in force
(flagged while they are the embedded NRP ones), readings withheld as implausible, node names
that disagree, other problems the cycle met, and live grid data. Pure."""

from __future__ import annotations

from exporter.config import site_defaults_in_force
from exporter.diagnosis.checks import NETWORK, OK, WARN, Check, examples
from exporter.diagnosis.facts import Facts, LiveGrid
from exporter.model.problems import IMPLAUSIBLE, INVALID_VALUE, NODE_MISMATCH, pod_ref
from exporter.text import plural


def defaults(facts: Facts) -> list[Check]:
    s, config = facts.settings, facts.config
    values = {
        "grid.default_region": f"default region {s.node_regions.default}",
        "grid.nodes": f"the NRP's {len(config.grid.nodes)} node patterns",
        "facility.pue": f"PUE {s.pue:g}",
        "facility.host_overhead": f"host overhead {s.host_overhead:g}",
    }
    in_force = site_defaults_in_force(config)
    if not in_force:
        return [Check("defaults", OK, f"site settings configured: {', '.join(values.values())}")]
    snapshot = facts.snapshot
    where = ""
    if "grid.nodes" in in_force and snapshot is not None and snapshot.nodes:
        matched = snapshot.nodes - snapshot.unmapped_nodes
        where = (
            f" ({matched} of {plural(snapshot.nodes, 'node')} matched the NRP's patterns"
            + ("; this is not the NRP" if not matched else "")
            + ")"
        )
    return [
        Check(
            "defaults",
            WARN,
            "the embedded NRP defaults are in force: "
            + ", ".join(values[key] for key in in_force)
            + where,
            "set grid.default_region, grid.nodes and facility for your site",
            "the-nrp-defaults-in-force",
        )
    ]


def readings(facts: Facts) -> list[Check]:
    """Readings withheld as implausible or invalid, node names in disagreement, and the
    cycle's other problems (upstream failures are the upstream check's)."""
    refused = [p.message for p in facts.problems if p.reason in (IMPLAUSIBLE, INVALID_VALUE)]
    mismatched = [p.message for p in facts.problems if p.reason == NODE_MISMATCH]
    known = (IMPLAUSIBLE, INVALID_VALUE, NODE_MISMATCH, *NETWORK)
    # Pods without GPU series are the joins check's.
    joined = {pod_ref(s.namespace, pod) for s in facts.served for pod in s.pods_without_gpus}
    other = [
        f"{p.upstream}: {p.message}"
        for p in facts.problems
        if p.reason not in known and not (p.pods and p.pods <= joined)
    ]
    checks = []
    if refused:
        checks.append(
            Check(
                "readings",
                WARN,
                f"{plural(len(refused), 'reading')} withheld as implausible or invalid",
                "see which exporter or counter produced them; the plausibility.* limits say "
                "what passes",
                "implausible-readings",
                examples(refused),
            )
        )
    if mismatched:
        checks.append(
            Check(
                "nodes",
                WARN,
                f"dcgm-exporter names {plural(len(mismatched), 'node')} differently from "
                "Kubernetes; the Kubernetes name is used for the grid region",
                "set NODE_NAME on dcgm-exporter from spec.nodeName (its Helm chart does)",
                "node-name-mismatch",
                examples(mismatched),
            )
        )
    if other:
        checks.append(
            Check(
                "problems",
                WARN,
                f"{plural(len(other), 'other problem')} this cycle",
                examples=examples(other),
            )
        )
    if not (refused or mismatched):
        checks.insert(0, Check("readings", OK, "no implausible readings, no node-name mismatches"))
    return checks


def requests(facts: Facts) -> list[Check]:
    """Whether the served models' finished requests are counted (the per-request figures),
    and for how many the prompt tokens by source are (J per computed token)."""
    names = facts.config.upstream.metrics
    if not facts.served:
        return []
    if not names.requests:
        return [
            Check("requests", OK, "per-request figures off (upstream.metrics.requests is null)")
        ]
    uncounted = [
        f"{s.model} in {s.namespace}" for s in facts.served if s.requests_per_second is None
    ]
    if uncounted:
        return [
            Check(
                "requests",
                WARN,
                f"no {names.requests} series for {plural(len(uncounted), 'model')}: no "
                "per-request figures for them",
                "set upstream.metrics.requests to the server's finished-request counter "
                "(SGLang: sglang:num_requests_total; TGI: tgi_request_success)",
                "no-request-counter",
                examples(uncounted),
            )
        ]
    by_source = sum(1 for s in facts.served if s.prompt_computed_tps is not None)
    return [
        Check(
            "requests",
            OK,
            f"finished requests counted for every model ({names.requests}); prompt tokens by "
            f"source for {by_source} of {plural(len(facts.served), 'model')}",
        )
    ]


def live_grid(feeds: tuple[LiveGrid, ...]) -> list[Check]:
    """Live grid intensity, where configured: one `LiveGrid` per region and basis."""
    if not feeds:
        return [Check("grid", OK, "annual grid intensities (no live grid data configured)")]
    stale = [f for f in feeds if f.age_seconds is None or f.age_seconds > f.max_age_seconds]
    if not stale:
        return [Check("grid", OK, f"live grid data current for {plural(len(feeds), 'region')}")]
    return [
        Check(
            "grid",
            WARN,
            f"live grid data missing or stale for {plural(len(stale), 'region')}: the annual "
            "intensity stands in for location, marginal has none",
            "check the live provider's credentials and zones",
            "the-wrong-grid-region",
            examples([f"{f.region} {f.basis} from {f.source}" for f in stale]),
        )
    ]
