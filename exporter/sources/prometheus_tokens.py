"""Rows of the Prometheus source's `tokens` query as observations: one `PodTokens` per pod and
model. A row that cannot be used is a `Problem`, and every rate passes `plausibility` first."""

from __future__ import annotations

from collections.abc import Mapping

from exporter.model.observations import PodTokens
from exporter.model.problems import IMPLAUSIBLE, MISSING_SERIES, Problem, pod_ref
from exporter.sources.plausibility import Plausibility
from exporter.sources.prometheus_rows import UPSTREAM, GpuKey, Results, row_key
from exporter.sources.promql import GLITCH, PHASE, REQUIRED_PHASES, RESETS, TOKEN_PHASES, TOKEN_ROW


def token_rows(
    results: Results, plausible: Plausibility, problems: list[Problem]
) -> tuple[list[PodTokens], set[tuple[str, str]], list[tuple[str, str, str]]]:
    """Token rates per pod and model, the (namespace, model) keys left out, and every (pod,
    model) served. A model with a refused or one-sided row (a pod with prompt tokens but not
    generation tokens, or the other way round: a partial result), or a token counter that
    stepped back, is left out this cycle, with a problem, rather than shown with a wrong rate.
    A refused request or computed-prompt rate withholds only the figures that divide by it."""
    rates: dict[GpuKey, dict[str, float | None]] = {}
    left_out: set[tuple[str, str]] = set()

    def refuse(key: GpuKey, phase: str, reason: str, why: str) -> None:
        required = phase in REQUIRED_PHASES
        then = "model left out this cycle" if required else f"{phase} figures withheld"
        text = f"query tokens: {key[0]}/{key[1]} model {key[2]!r} {phase}{why}; {then}"
        problems.append(Problem(UPSTREAM, reason, text, frozenset({pod_ref(key[0], key[1])})))
        if required:
            left_out.add((key[0], key[2]))
        rates.setdefault(key, {})[phase] = None

    unnamed: set[str] = set()  # pods whose token series name no model
    for sample in results["tokens"]:
        key, phase = row_key(sample, TOKEN_ROW), sample.labels.get(PHASE, "")
        if key[0] and key[1] and not key[2]:
            unnamed.add(pod_ref(key[0], key[1]))
        if not all(key) or phase not in TOKEN_PHASES:
            continue
        if GLITCH in sample.labels:  # before RESETS: a failed follow-up tags its gate rows
            refuse(key, phase, IMPLAUSIBLE, ": a counter stepped back, not to zero")
            continue
        if RESETS in sample.labels:
            continue
        refusal = plausible.token_rate(sample.value)
        if refusal is not None:
            refuse(key, phase, refusal.reason, f" is {refusal.why}")
        elif phase not in rates.get(key, {}):  # a refusal of this phase stands
            rates.setdefault(key, {})[phase] = sample.value
    left_out |= _one_sided(rates, problems)
    if unnamed:
        problems.append(_unnamed(sorted(unnamed)))
    rows = [
        PodTokens(
            namespace=ns,
            pod=pod,
            model=model,
            prompt_tps=phases["prompt"] or 0.0,
            generation_tps=phases["generation"] or 0.0,
            requests_per_second=phases.get("requests"),
            prompt_computed_tps=phases.get("prompt_computed"),
        )
        for (ns, pod, model), phases in sorted(rates.items())
        if (ns, model) not in left_out
    ]
    served = [(key[0], key[1], key[2]) for key in rates]
    return rows, left_out, served


def _unnamed(pods: list[str]) -> Problem:
    examples = ", ".join(pods[:3]) + (f" and {len(pods) - 3} more" if len(pods) > 3 else "")
    return Problem(
        UPSTREAM,
        MISSING_SERIES,
        f"query tokens: the token series of pods {examples} carry none of the model labels "
        "(upstream.token_labels.model; SGLang's first versions: name): add the label that "
        "names the model there, or set upstream.default_model for a server whose series "
        "name none (TGI); those pods are left out",
        frozenset(pods),
    )


def _one_sided(
    rates: Mapping[GpuKey, Mapping[str, float | None]], problems: list[Problem]
) -> set[tuple[str, str]]:
    """The (namespace, model) keys of pods with only one of the two token series (a partial
    result): left out, with a problem each."""
    out = set()
    for key, phases in rates.items():
        for missing in (p for p in REQUIRED_PHASES if p not in phases):
            out.add((key[0], key[2]))
            problems.append(
                Problem(
                    UPSTREAM,
                    MISSING_SERIES,
                    f"pod {key[0]}/{key[1]} model {key[2]!r} has no {missing} token series; "
                    "model left out this cycle",
                    frozenset({pod_ref(key[0], key[1])}),
                )
            )
    return out
