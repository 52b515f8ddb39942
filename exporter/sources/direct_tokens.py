"""The direct source's token side: each configured pod's token rates per model, read off its
inference servers' pages held in a `SeriesStore`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from exporter.config import Config, DirectPod
from exporter.model.observations import PodTokens
from exporter.model.problems import MISSING_SERIES, Problem, pod_ref
from exporter.sources.direct_gpus import first_label
from exporter.sources.page_parser import Row, base_name
from exporter.sources.plausibility import Plausibility, Refusal
from exporter.sources.promql import COMPUTED_SOURCE_VALUE, REQUIRED_PHASES, TOKEN_PHASES
from exporter.sources.series_store import SeriesKey, SeriesStore, series_key
from exporter.text import redact


class TokenReader:
    def __init__(
        self, config: Config, store: SeriesStore, plausible: Plausibility, upstream: str
    ) -> None:
        self.upstream = upstream
        names = config.upstream.metrics
        self.prompt, self.generation = names.prompt_tokens, names.generation_tokens
        # Which phase each counter on a page counts (see promql.TOKEN_PHASES).
        self.phase_of = {
            base_name(name): phase
            for phase, name in zip(
                TOKEN_PHASES,
                (self.prompt, self.generation, names.requests, names.prompt_tokens_by_source),
                strict=True,
            )
            if name
        }
        self.computed = base_name(names.prompt_tokens_by_source or "")
        self.model_labels = config.upstream.token_labels.model
        self.default_model = config.upstream.default_model
        self.store = store
        self.plausible = plausible

    def counted(self, rows: list[Row]) -> list[Row]:
        """A page's rows less the prompt tokens served otherwise than computed (prefix-cache
        hits, KV transfers): never read, so never kept."""
        if not self.computed:
            return rows
        return [
            row
            for row in rows
            if row[0] != self.computed or row[1].get("source") == COMPUTED_SOURCE_VALUE
        ]

    def _model(self, labels: Mapping[str, str]) -> str:
        return first_label(labels, self.model_labels) or self.default_model

    def models_last_read(self, page: str) -> set[str]:
        """The models an inference server's page named when it was last read."""
        return {self._model(labels) for labels in self.store.labels_on(page)} - {""}

    def check_page(self, url: str, rows: list[Row], problems: list[Problem]) -> bool:
        """Says so when an inference server's page has no token series, or series no model
        can be named for: otherwise its models would just vanish. False: nothing usable."""
        if not rows:
            problems.append(
                Problem(
                    self.upstream,
                    MISSING_SERIES,
                    f"page {redact(url)} has no {self.prompt} or {self.generation} series "
                    "(upstream.metrics)",
                )
            )
            return False
        if not self.default_model and not any(self._model(row[1]) for row in rows):
            problems.append(
                Problem(
                    self.upstream,
                    MISSING_SERIES,
                    f"token series on {redact(url)} carry none of the model labels "
                    f"{', '.join(self.model_labels)}: add the label that names the model to "
                    "upstream.token_labels.model (SGLang's first versions: name), or set "
                    "upstream.default_model for a server whose series name none (TGI)",
                )
            )
            return False
        return True

    def pod_tokens(
        self,
        pod: DirectPod,
        pages: Mapping[str, list[Row]],
        unread_models: Mapping[str, set[str]],
        problems: list[Problem],
    ) -> tuple[list[PodTokens], set[tuple[str, str]]]:
        """The pod's token rates, and the (namespace, model) keys left out this cycle (with
        the models its unreadable pages served when last read)."""
        namespace, name = pod.namespace or "", pod.pod or ""
        ref = pod_ref(namespace, name)
        rates: dict[str, dict[str, float | None]] = defaultdict(dict)
        refused: set[tuple[str, str]] = set()  # (model, phase)
        incomplete: set[str] = set()
        for url in pod.vllm_urls:
            if url not in pages:  # could not be read: what it served last is left out
                incomplete |= unread_models[url]
                continue
            counted: set[SeriesKey] = set()
            for series, labels, _ in pages[url]:
                model = self._model(labels)
                phase = self.phase_of.get(series)
                if not model or phase is None:
                    continue
                key = series_key(url, series, labels)
                if key in counted:
                    continue  # a line the page repeats counts once
                counted.add(key)
                rate = self._rate(key, ref, model, phase, problems)
                phases = rates[model]
                if isinstance(rate, Refusal):
                    refused.add((model, phase))
                if isinstance(rate, float):
                    phases[phase] = (phases.get(phase) or 0.0) + rate
                else:  # refused, or one sample so far (a new series: the others stand)
                    phases.setdefault(phase, None)
        for model, phase in refused:
            rates[model][phase] = None  # one refused series leaves the phase without a rate
        for model, phases in rates.items():
            if any(phases.get(p, 0.0) is None for p in REQUIRED_PHASES):
                incomplete.add(model)  # refused, or no series with two samples yet
        incomplete |= _one_sided(self.upstream, ref, rates, problems)
        rows = [
            PodTokens(
                namespace,
                name,
                model,
                phases["prompt"] or 0.0,
                phases["generation"] or 0.0,
                requests_per_second=phases.get("requests"),
                prompt_computed_tps=phases.get("prompt_computed"),
            )
            for model, phases in sorted(rates.items())
            if model not in incomplete
        ]
        return rows, {(namespace, model) for model in incomplete}

    def _rate(
        self, key: SeriesKey, ref: str, model: str, phase: str, problems: list[Problem]
    ) -> float | Refusal | None:
        """The series' rate over its window; None with one sample so far; the refusal when
        its sample or rate is implausible (said, with what the refusal costs)."""
        refusal = self.store.refused.get(key)
        rate = None if refusal else self.store.windows[key].counter_rate()
        if refusal is None and rate is not None:
            refusal = self.plausible.token_rate(rate)
        if refusal is None:
            return rate
        cost = "model left out this cycle" if phase in REQUIRED_PHASES else f"{phase} withheld"
        problems.append(
            Problem(
                self.upstream,
                refusal.reason,
                f"{key[1]} for {ref} model {model!r} is {refusal.why}; {cost}",
                frozenset({ref}),
            )
        )
        return refusal


def _one_sided(
    upstream: str,
    ref: str,
    rates: Mapping[str, Mapping[str, float | None]],
    problems: list[Problem],
) -> set[str]:
    """The models a pod shows only one of the two token series for: left out, with a
    problem each."""
    out = set()
    for model, phases in rates.items():
        if not all(p in phases for p in REQUIRED_PHASES):
            problems.append(
                Problem(
                    upstream,
                    MISSING_SERIES,
                    f"{ref} model {model!r} has only one of the prompt and generation token "
                    "series; model left out",
                    frozenset({ref}),
                )
            )
            out.add(model)
    return out
