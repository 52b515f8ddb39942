"""The checks of what the upstream serves, before any model: the query API itself, DCGM's
power series and their pod labels, the inference servers' token series. Pure: `Facts` in,
`Check`s out; each failed check carries its fix in one sentence and a troubleshooting link."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from exporter.diagnosis.facts import Facts, GpuGroup, TokenGroup
from exporter.model.observations import ENERGY_COUNTER
from exporter.model.problems import (
    AUTH_FILE,
    CONNECT,
    HTTP_STATUS,
    MALFORMED,
    PARTIAL,
    QUERY_ERROR,
    TIMEOUT,
    TOO_LARGE,
    Problem,
)
from exporter.sources.dcgm_units import BASE_UNIT_ENERGY
from exporter.sources.servers import server_title
from exporter.text import plural

OK, WARN, FAIL = "ok", "warn", "fail"
EXAMPLES = 5  # examples listed under a check; the rest are counted


@dataclass(frozen=True)
class Check:
    """One line of the checklist. `doc` is an anchor of docs/troubleshooting.md."""

    name: str
    status: str  # OK, WARN or FAIL (FAIL: figures are blocked)
    summary: str
    fix: str = ""
    doc: str = ""
    examples: tuple[str, ...] = ()


def examples(items: list[str]) -> tuple[str, ...]:
    """At most EXAMPLES of `items`, and how many more there are."""
    shown = items[:EXAMPLES]
    more = len(items) - len(shown)
    return (*shown, f"... and {more} more") if more else tuple(shown)


# ---- the upstream

NETWORK = (CONNECT, TIMEOUT, HTTP_STATUS, QUERY_ERROR, MALFORMED, TOO_LARGE, AUTH_FILE, PARTIAL)
UNREACHABLE = "the-upstream-cannot-be-read"
UNAUTHORISED = "401-or-403-from-the-upstream"


# In direct mode, how each upstream's page is given and where it usually is.
DCGM_PAGE = (
    "--dcgm-url (direct.dcgm_urls)",
    "dcgm-exporter's page on this pod's node (http://NODE_IP:9400/metrics)",
)
SERVER_PAGE = (
    "--vllm-url (direct.pods[].vllm_urls)",
    "the inference server's own /metrics on its API port (vLLM: http://127.0.0.1:8000/metrics)",
)


def fix_for(problem: Problem, direct: bool) -> tuple[str, str]:
    """(the fix in one sentence, the troubleshooting anchor) for an upstream failure, for
    the source in use."""
    unauthorised = problem.status in (401, 403) or problem.reason == AUTH_FILE
    fix = _direct_fix(problem) if direct else _prometheus_fix(problem)
    return fix, UNAUTHORISED if unauthorised else UNREACHABLE


def _prometheus_fix(problem: Problem) -> str:
    if problem.status in (401, 403) or problem.reason == AUTH_FILE:
        return (
            "give the exporter credentials the upstream accepts: prometheus.bearer_token_file "
            "or basic_auth (and headers, e.g. X-Scope-OrgID for Mimir), from a readable file"
        )
    fixes = {
        CONNECT: "check the URL, and that this host can reach it (DNS, port, NetworkPolicy; "
        "TLS: prometheus.ca_file)",
        TIMEOUT: "raise prometheus.timeout, or narrow the selectors so the queries cost less",
        HTTP_STATUS: "set the URL to the base the query API answers under (/api/v1/query is "
        "appended; Mimir: .../prometheus), without redirects",
        QUERY_ERROR: "point the URL at a Prometheus-compatible query API (Prometheus, Thanos, "
        "Mimir, VictoriaMetrics), and check its query limits",
        MALFORMED: "point the URL at the query API itself, not a UI, a proxy's login page or "
        "Grafana",
        TOO_LARGE: "raise prometheus.max_response_bytes, or narrow the selectors",
        PARTIAL: "a store behind the querier failed: fix it, or query the stores that answer",
    }
    return fixes.get(problem.reason, "see the message, and the log at --log-level debug")


def _direct_fix(problem: Problem) -> str:
    """The fix for a page that could not be read: direct mode has no credentials, TLS or
    query settings, only the pages' URLs, a timeout and a size cap."""
    flag, page = DCGM_PAGE if problem.upstream == "dcgm" else SERVER_PAGE
    if problem.status in (401, 403):
        return (
            f"point {flag} at a page served without authentication (its own port, not a "
            "proxy in front of it): the direct source sends no credentials"
        )
    fixes = {
        CONNECT: f"check {flag}, usually {page}, and that this pod can reach it (DNS, port, "
        "NetworkPolicy)",
        TIMEOUT: "raise direct.timeout (per page), or see why the page answers so slowly",
        HTTP_STATUS: f"set {flag} to the page itself, path included, usually {page}, without "
        "redirects",
        MALFORMED: f"point {flag} at the Prometheus text page itself, usually {page}, not a "
        "UI, a proxy's login page or another service",
        TOO_LARGE: "raise direct.max_response_bytes",
    }
    return fixes.get(problem.reason, "see the message, and the log at --log-level debug")


def upstream(facts: Facts) -> list[Check]:
    """Whether the upstream answers, as what; every failure with its fix."""
    failed = [*facts.failure, *(p for p in facts.problems if p.reason in NETWORK)]
    checks = []
    for problem in failed:
        fix, doc = fix_for(problem, facts.direct)
        checks.append(Check("upstream", FAIL, f"{problem.upstream}: {problem.message}", fix, doc))
    if facts.direct:
        read = [
            f"{u}: {ok} of {plural(total, 'page')} read" for u, (ok, total) in facts.pages.items()
        ]
        if not failed:
            checks.append(Check("upstream", OK, "; ".join(read) or "no pages configured"))
    elif not facts.failure:
        what = f": {facts.api}" if facts.api else " (a Prometheus-compatible API)"
        text = f"{facts.where} answers queries{what}"
        shard = facts.config.prometheus.namespaces
        if shard:
            text += f"; reading only namespaces matching {shard!r} (prometheus.namespaces)"
        checks.insert(0, Check("upstream", OK, text))
    return checks


# ---- DCGM


def _no_dcgm_fix(direct: bool) -> str:
    if direct:
        flag, page = DCGM_PAGE
        return (
            f"point {flag} at {page}, or set upstream.metrics.gpu_energy and gpu_power to the "
            f"names its series carry (dcgm-exporter 4.9 and later: {BASE_UNIT_ENERGY})"
        )
    return (
        "scrape dcgm-exporter (a ServiceMonitor or PodMonitor for its DaemonSet), or set "
        "upstream.metrics and prometheus.gpu_selector to match its series (dcgm-exporter 4.9 "
        f"and later: upstream.metrics.gpu_energy: {BASE_UNIT_ENERGY})"
    )


def _exporter_own(group: GpuGroup, serving: set[tuple[str, str]]) -> bool:
    """A pod label that names dcgm-exporter itself: the scrape target's own pod, not the pod
    the GPU is allocated to."""
    return "dcgm" in group.pod.lower() and (group.namespace, group.pod) not in serving


def serving_pods(facts: Facts) -> set[tuple[str, str]]:
    """(namespace, pod) of every pod with token series, of any server."""
    pods = {(t.namespace, t.pod) for t in facts.inventory.tokens}
    pods |= {(s.namespace, p.pod) for s in facts.served for p in s.pods}
    return pods | {(s.namespace, pod) for s in facts.served for pod in s.pods_without_gpus}


def dcgm(facts: Facts) -> list[Check]:
    """DCGM's power series: present, read how (energy counter or gauge) on which nodes."""
    names = facts.config.upstream.metrics
    groups = facts.inventory.gpus
    if not groups:
        where = "the dcgm-exporter pages" if facts.direct else "Prometheus"
        selector = facts.config.prometheus.gpu_selector
        return [
            Check(
                "dcgm",
                FAIL,
                f"no DCGM power series ({names.gpu_energy} or {names.gpu_power}) in {where}"
                + (
                    f" matching {{{selector.strip('{}')}}}" if selector and not facts.direct else ""
                ),
                _no_dcgm_fix(facts.direct),
                "no-dcgm-series",
            )
        ]
    by_node: dict[str, list[GpuGroup]] = defaultdict(list)
    for group in groups:
        by_node[group.node or "(no node label)"].append(group)
    gauge_only = sorted(
        node
        for node, held in by_node.items()
        if not any(ENERGY_COUNTER in g.readings for g in held)
    )
    gpus = sum(g.gpus for g in groups)
    checks = [
        Check(
            "dcgm", OK, f"{plural(gpus, 'GPU')} on {plural(len(by_node), 'node')} have power series"
        )
    ]
    counter = len(by_node) - len(gauge_only)
    summary = f"energy counter on {plural(counter, 'node')}"
    if gauge_only:
        summary += (
            f"; the power gauge, sampled, on {plural(len(gauge_only), 'node')} without "
            f"{names.gpu_energy}"
        )
    checks.append(Check("power", OK, summary, examples=examples(gauge_only)))
    return checks


def gpu_pods(facts: Facts) -> list[Check]:
    """Whether GPU series name the pod the GPU is allocated to, or only dcgm-exporter's own
    pod, or none."""
    groups = facts.inventory.gpus
    if not groups:
        return []
    serving = serving_pods(facts)
    labelled = [g for g in groups if g.pod]
    own = [g for g in labelled if _exporter_own(g, serving)]
    workload = [g for g in labelled if not _exporter_own(g, serving)]
    doc = "gpu-series-without-the-workloads-pod"
    mapping = (
        "run dcgm-exporter with its Kubernetes mapping on (DCGM_EXPORTER_KUBERNETES=true, the "
        "kubelet pod-resources socket mounted)"
    )
    if not labelled:
        choices = ", ".join(facts.config.upstream.gpu_labels.pod)
        if facts.direct and all(p.gpu_uuids for p in facts.config.direct.pods):
            return [Check("gpu pods", OK, "no pod labels on GPU series; pods claim GPUs by id")]
        return [
            Check(
                "gpu pods",
                FAIL,
                f"no GPU series carries a pod label ({choices})",
                mapping
                + (" or claim the pod's GPUs by direct.pods[].gpu_uuids" if facts.direct else ""),
                doc,
            )
        ]
    if own and not workload:
        pods = sorted({f"{g.namespace}/{g.pod} on {g.node}" for g in own})
        return [
            Check(
                "gpu pods",
                FAIL,
                "every GPU series carries dcgm-exporter's own pod, not the pod the GPU is "
                "allocated to (the honorLabels mistake, or the exporter's Kubernetes mapping off)",
                "keep the workload's labels: honorLabels: true on the ServiceMonitor, or keep "
                "the exported_pod and exported_namespace labels a relabeling drops; and " + mapping,
                doc,
                examples(pods),
            )
        ]
    checks = [Check("gpu pods", OK, _labelled_by(workload, own, groups))]
    if own:
        nodes = sorted({g.node for g in own} - {g.node for g in workload})
        if nodes:
            checks.append(
                Check(
                    "gpu pods",
                    WARN,
                    f"GPUs on {plural(len(nodes), 'node')} carry only dcgm-exporter's own pod",
                    "see the honorLabels and Kubernetes mapping settings of their dcgm-exporter",
                    doc,
                    examples(nodes),
                )
            )
    return checks


def _labelled_by(
    workload: list[GpuGroup], own: list[GpuGroup], groups: tuple[GpuGroup, ...]
) -> str:
    counts: dict[str, int] = defaultdict(int)
    for group in workload:
        counts[group.pod_label] += group.gpus
    named = ", ".join(f"{label} on {plural(n, 'GPU')}" for label, n in sorted(counts.items()))
    free = sum(g.gpus for g in groups if not g.pod) + sum(g.gpus for g in own)
    return f"GPU series name the pod using them: {named}" + (
        f"; {plural(free, 'GPU')} allocated to no pod" if free else ""
    )


# ---- inference servers


def tokens(facts: Facts) -> list[Check]:
    """Token series of the configured server, with the labels the join needs; other
    servers' series where the configured one has none."""
    metric = facts.config.upstream.metrics.prompt_tokens
    title = server_title(metric)
    mine = [t for t in facts.inventory.tokens if t.metric == metric]
    others = [t for t in facts.inventory.tokens if t.metric != metric and t.series]
    doc = "no-inference-server-series"
    if not mine:
        found = sorted({t.metric for t in others})
        summary = f"no {title} token series ({metric})"
        if found:
            titles = ", ".join(f"{server_title(m)} ({m})" for m in found)
            fix = f"set upstream.metrics to the names of the server you run: found {titles}"
        elif facts.direct:
            flag, page = SERVER_PAGE
            fix = f"point {flag} at {page}, or set upstream.metrics to the names its series carry"
        else:
            fix = (
                "scrape the inference servers' /metrics (a PodMonitor), or set upstream.metrics "
                "and prometheus.token_selector to match their series"
            )
        return [Check("tokens", FAIL, summary, fix, doc)]
    checks = [_labels(facts, title, metric, mine)]
    if others and not facts.direct:
        found = sorted({server_title(t.metric) for t in others})
        checks.append(
            Check(
                "tokens",
                WARN,
                f"{', '.join(found)} series are present too, and not read",
                "run one exporter per server type, each with its upstream.metrics",
                doc,
            )
        )
    return checks


def _labels(facts: Facts, title: str, metric: str, mine: list[TokenGroup]) -> Check:
    labels = facts.config.upstream.token_labels
    default_model = facts.config.upstream.default_model
    missing = {
        "namespace": [t for t in mine if not t.namespace],
        "pod": [t for t in mine if not t.pod],
        "model": [t for t in mine if not t.model and not default_model],
    }
    absent = {key: rows for key, rows in missing.items() if rows}
    if absent:
        named = "; ".join(
            f"{plural(sum(t.series for t in rows), 'series', 'series')} without "
            f"{' or '.join(getattr(labels, key))}"
            for key, rows in absent.items()
        )
        fix = (
            "set upstream.token_labels.model to the label that names the model, or "
            "upstream.default_model for a server whose series name no model"
            if facts.direct  # the pod's namespace and name are the configured ones
            else "scrape them with the pod's namespace and pod labels (a PodMonitor adds them), "
            "set upstream.token_labels to the labels that carry them, or upstream.default_model "
            "for a server whose series name no model"
        )
        return Check(
            "tokens",
            FAIL,
            f"{title} series ({metric}) lack labels the join needs: {named}",
            fix,
            "no-inference-server-series",
        )
    pods = {(t.namespace, t.pod) for t in mine}
    models = {(t.namespace, t.model) for t in mine}
    return Check(
        "tokens",
        OK,
        f"{title} series ({metric}) from {plural(len(pods), 'pod')}, "
        f"{plural(len(models), 'model')}, with namespace, pod and model labels",
    )


def replicas(facts: Facts) -> list[Check]:
    """Series an HA pair of Prometheus servers stores twice, which a querier must dedup."""
    doubled = {label: n for label, n in facts.inventory.replicas.items() if n > 1}
    if not doubled:
        return []
    label, count = next(iter(doubled.items()))
    return [
        Check(
            "replicas",
            WARN,
            f"series carry {label} with {count} values: copies from an HA pair, which add up "
            "to double the token rates and energy unless the querier deduplicates them",
            f"query through a Thanos Querier with --query.replica-label={label} (deduplication "
            "on), or point the exporter at one replica",
            "doubled-figures-behind-thanos",
        )
    ]
