"""The checklist in order, and what it adds up to: figures for every served model (exit 0),
or something that blocks them (exit 1). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.diagnosis import checks, context, served
from exporter.diagnosis.checks import FAIL, Check
from exporter.diagnosis.facts import Facts
from exporter.diagnosis.served import ModelReport
from exporter.text import plural

EXIT_OK, EXIT_BLOCKED = 0, 1


@dataclass(frozen=True)
class Diagnosis:
    source: str
    where: str
    checks: tuple[Check, ...]
    models: tuple[ModelReport, ...]
    read: bool = True  # False: the upstream could not be read at all

    @property
    def blocked(self) -> tuple[Check, ...]:
        """The failed checks: each blocks some or all figures."""
        return tuple(c for c in self.checks if c.status == FAIL)

    @property
    def exit_status(self) -> int:
        return EXIT_BLOCKED if self.blocked else EXIT_OK

    @property
    def conclusion(self) -> str:
        if not self.blocked:
            return f"Figures can be computed for every served model ({len(self.models)})."
        failed = f"Figures are blocked: {plural(len(self.blocked), 'check')} failed"
        if not self.read:
            return "Figures are blocked: the upstream could not be read."
        if not self.models:
            return f"{failed}; no served model was found."
        with_figures = sum(1 for m in self.models if m.figures)
        return f"{failed}; {with_figures} of {len(self.models)} served models have figures."


def diagnose(facts: Facts) -> Diagnosis:
    """Every check, in the order the data flows; nothing past the upstream when it could not
    be read."""
    found = checks.upstream(facts)
    models: tuple[ModelReport, ...] = ()
    if not facts.failure:
        models = served.reports(facts)
        found += checks.dcgm(facts) + checks.gpu_pods(facts)
        found += checks.tokens(facts) + checks.replicas(facts)
        found += served.model_checks(facts, models) + served.joins(facts) + served.regions(facts)
        if models:  # what the figures rest on, once there are figures
            found += context.defaults(facts) + context.readings(facts) + context.requests(facts)
            found += context.live_grid(facts.live_grid)
    return Diagnosis(facts.config.source, facts.where, tuple(found), models, not facts.failure)
