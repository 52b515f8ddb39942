"""The direct-scrape source (sidecar mode, and the demo): reads inference-server and
dcgm-exporter /metrics pages itself, keeps per-series history (`SeriesStore`), and computes
windowed rates and means, so no Prometheus query API is needed. What is read off the pages is
`direct_gpus` (GPUs, power) and `direct_tokens` (token rates); this module fetches the pages
and decides what an unreadable page costs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping

from exporter.config import Config
from exporter.model.mig import PRESENCE_FIELDS
from exporter.model.observations import Observation, PodGpus, PodTokens, pods_serving
from exporter.model.problems import (
    HTTP_STATUS,
    MALFORMED,
    MISSING_SERIES,
    Problem,
    UpstreamError,
    pod_ref,
)
from exporter.sources.direct_gpus import DcgmReader, first_label
from exporter.sources.direct_tokens import TokenReader
from exporter.sources.http import HttpFetcher, HttpOptions
from exporter.sources.page_parser import Row, base_name, parse
from exporter.sources.plausibility import Plausibility, Refusal
from exporter.sources.series_store import SeriesKey, SeriesStore
from exporter.sources.servers import server_name
from exporter.text import redact

Failures = dict[str, dict[str, UpstreamError]]  # upstream -> page URL -> why it was not read


def _models_left_out(models: set[str]) -> str:
    named = f"models {', '.join(sorted(models))}" if models else "its models"
    return f"{named} left out this cycle"


class DirectSource:
    name = "direct"
    gpu_upstream = "dcgm"
    reads = "pages"

    def __init__(
        self,
        config: Config,
        fetcher: HttpFetcher | None = None,
        clock: Callable[[], float] | None = None,
        window_clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        settings = config.direct
        # The inference server's name in the `upstream` label and in logs (vllm, sglang, tgi).
        self.server = server_name(config.upstream.metrics.prompt_tokens)
        self.upstreams = (self.server, "dcgm")
        self.window = settings.window
        self.http = fetcher or HttpFetcher(
            HttpOptions(
                timeout=settings.timeout,
                max_response_bytes=settings.max_response_bytes,
                setting="direct",
                accept="text/plain; version=0.0.4",
            )
        )
        self.clock = clock or (lambda: time.time())
        # Windows are timed by a clock that never steps back: after an NTP step back every
        # new sample would look older than the last and be dropped, freezing every rate.
        # An injected clock (tests, the benchmark) times both unless a window clock is given.
        self.window_clock = window_clock or clock or (lambda: time.monotonic())
        names = config.upstream.metrics
        # The fields the figures read, and those that only show which pod holds a GPU (a MIG
        # instance's row may carry no other).
        self._gpu_names = tuple(
            dict.fromkeys(
                (
                    names.gpu_energy,
                    names.gpu_power,
                    names.gpu_util,
                    names.gpu_engine_active,
                    *PRESENCE_FIELDS,
                )
            )
        )
        token_counters = (
            names.prompt_tokens,
            names.generation_tokens,
            names.requests,
            names.prompt_tokens_by_source,
        )
        self._token_names = tuple(n for n in token_counters if n)
        self._counters = {base_name(n) for n in (names.gpu_energy, *self._token_names)}
        self._power = base_name(names.gpu_power)
        self.plausible = Plausibility(config)
        self.store = SeriesStore(self.window, self._judge)
        self.gpus = DcgmReader(config, self.store, self.plausible)
        # Busy gauges have a ceiling: what reads as fully busy in their unit (1 or 100).
        self._ceilings = dict(self.gpus.busy_scale)
        self.tokens = TokenReader(config, self.store, self.plausible, self.server)
        self._requests = dict.fromkeys(self.upstreams, 0)

    def _judge(
        self, name: str, labels: Mapping[str, str], value: float, previous: float | None
    ) -> Refusal | None:
        """Whether a sample may enter its window (see `plausibility`): finite, not negative,
        not a DCGM blank, within its field's ceiling; a power gauge within what its GPU can
        draw; a counter not stepping back without a restart."""
        refusal = self.plausible.sample(value, self._ceilings.get(name, math.inf))
        if refusal is None and name == self._power:
            product = first_label(labels, self.config.upstream.gpu_labels.gpu_model)
            refusal = self.plausible.gpu_power(value, 1, product)
        if refusal is None and name in self._counters and previous is not None:
            refusal = self.plausible.counter_step(previous, value)
        return refusal

    @property
    def requests_by_upstream(self) -> dict[str, int]:
        return dict(self._requests)

    def close(self) -> None:
        self.http.close()

    # ---- one cycle

    def fetch(self) -> Observation:
        now = self.clock()
        settings = self.config.direct
        problems: list[Problem] = []
        seen: set[SeriesKey] = set()
        failed: Failures = {"dcgm": {}, self.server: {}}
        self.store.start_cycle()
        vllm_urls = list(dict.fromkeys(u for pod in settings.pods for u in pod.vllm_urls))
        dcgm = self._read_all(settings.dcgm_urls, "dcgm", self._gpu_names, seen, failed)
        tokens = self._read_all(
            vllm_urls, self.server, self._token_names, seen, failed, self.tokens.counted
        )
        pages = {"dcgm": len(set(settings.dcgm_urls)), self.server: len(vllm_urls)}
        _fail_if_wholly_unread(failed, pages)
        # What each unreadable inference-server page served when last read: left out now.
        unread_models = {url: self.tokens.models_last_read(url) for url in failed[self.server]}
        problems += self._unread_pages(failed, unread_models, dcgm)
        self.store.forget(seen, set(failed["dcgm"]) | set(failed[self.server]))
        blind = self._blind(dcgm, tokens, problems)
        # Said once already: no GPU page at all, or a page that could not be read (whose
        # pods then have no GPU series).
        quiet = "dcgm" in blind or bool(failed["dcgm"])
        gpu_rows, token_rows = self._pods(dcgm, tokens, unread_models, quiet, problems)
        return Observation(
            time=now,
            gpus=tuple(gpu_rows),
            tokens=tuple(token_rows),
            problems=tuple(problems),
            blind=frozenset(blind),
        )

    def _read_all(
        self,
        urls: Iterable[str],
        upstream: str,
        names: tuple[str, ...],
        seen: set[SeriesKey],
        failed: Failures,
        keep: Callable[[list[Row]], list[Row]] | None = None,
    ) -> dict[str, list[Row]]:
        """The rows of every page of one upstream that could be read (those `keep` keeps),
        each recorded in the store as of when its response arrived (pages are read one after
        another, and a page's latency must not turn into a rate error)."""
        pages: dict[str, list[Row]] = {}
        for url in urls:
            try:
                rows = self._page(url, upstream, names)
            except UpstreamError as exc:
                failed[upstream][url] = exc
                continue
            if keep is not None:
                rows = keep(rows)
            self.store.record(url, rows, self.window_clock(), seen)
            pages[url] = rows
        return pages

    def _page(self, url: str, upstream: str, names: Iterable[str]) -> list[Row]:
        self._requests[upstream] += 1
        try:
            status, body = self.http.get(url)
        except UpstreamError as exc:
            raise UpstreamError(exc.reason, f"{upstream} {exc}", upstream, exc.status) from None
        if status >= 400:
            raise UpstreamError(
                HTTP_STATUS,
                self.http.scrub(f"{upstream} HTTP {status} from {redact(url)}: ")
                + self.http.excerpt(body),
                upstream,
                status,
            )
        text = body.decode("utf-8", "replace")
        if text.lstrip()[:1] == "<":  # an HTML error or login page served with 200
            raise UpstreamError(
                MALFORMED,
                f"{upstream} page {redact(url)} is HTML, not Prometheus text exposition: "
                f"{self.http.excerpt(body)}",
                upstream,
            )
        try:
            return list(parse(text, names))
        except ValueError as exc:
            raise UpstreamError(
                MALFORMED,
                f"{upstream} page {redact(url)} is not Prometheus "
                f"text exposition: {str(exc)[:120]}",
                upstream,
            ) from None

    def _unread_pages(
        self,
        failed: Failures,
        unread_models: Mapping[str, set[str]],
        read: Mapping[str, list[Row]],
    ) -> list[Problem]:
        """Some pages could not be read: their pods' problem, said once per page. A pod whose
        GPUs another page read this cycle shows too (one dcgm-exporter under two URLs) keeps
        its power."""
        problems = []
        # Pods whose GPU series a page read this cycle shows: asked only when one failed.
        kept = (
            self._configured(self.gpus.owners(row[1] for rows in read.values() for row in rows))
            if failed["dcgm"]
            else []
        )
        for url, exc in failed["dcgm"].items():
            held = self._configured(self.gpus.owners(self.store.labels_on(url)))
            pods = [p for p in held if p not in kept]
            if pods:
                cost = f"power of pods {', '.join(pods)} withheld this cycle"
            elif held:
                cost = f"pods {', '.join(held)} read from another page, their power kept"
            else:
                cost = "no power from it this cycle"
            problems.append(
                Problem("dcgm", exc.reason, f"{exc}; {cost}", frozenset(pods), exc.status)
            )
        for url, exc in failed[self.server].items():
            pods = [
                pod_ref(p.namespace or "", p.pod or "")
                for p in self.config.direct.pods
                if url in p.vllm_urls
            ]
            cost = _models_left_out(unread_models[url])
            problems.append(
                Problem(self.server, exc.reason, f"{exc}; {cost}", frozenset(pods), exc.status)
            )
        return problems

    def _configured(self, owners: set[tuple[str, str]]) -> list[str]:
        """The configured pods among `owners` (GPU series' pod labels), as namespace/pod."""
        return sorted(
            pod_ref(p.namespace or "", p.pod or "")
            for p in self.config.direct.pods
            if (p.namespace, p.pod) in owners
        )

    def _blind(
        self,
        dcgm: Mapping[str, list[Row]],
        tokens: Mapping[str, list[Row]],
        problems: list[Problem],
    ) -> set[str]:
        """The upstreams whose readable pages all lack the series the figures need."""
        blind = set()
        usable = [self.tokens.check_page(url, rows, problems) for url, rows in tokens.items()]
        if usable and not any(usable):  # one server down is that pod's problem
            blind.add(self.server)
        if dcgm and not any(dcgm.values()):
            problems.append(
                Problem(
                    "dcgm",
                    MISSING_SERIES,
                    "no GPU series on any dcgm-exporter page (check upstream.metrics)",
                )
            )
            blind.add("dcgm")  # said once here, not again for every pod
        return blind

    def _pods(
        self,
        dcgm: Mapping[str, list[Row]],
        tokens: Mapping[str, list[Row]],
        unread_models: Mapping[str, set[str]],
        quiet: bool,
        problems: list[Problem],
    ) -> tuple[list[PodGpus], list[PodTokens]]:
        """Every configured pod's GPUs and token rates. A model incomplete in one pod is
        left out in all (its other replicas alone would understate it), and a pod that
        served a left-out model cannot split its power: its GPUs are left out too."""
        dcgm, echoes = self.gpus.without_echoes(dcgm)
        problems += echoes
        index = self.gpus.index(dcgm)
        gpu_rows, token_rows = [], []
        left_out: set[tuple[str, str]] = set()
        served: list[tuple[str, str, str]] = []  # (namespace, pod, model)
        for pod in self.config.direct.pods:
            gpus = self.gpus.pod_gpus(pod, dcgm, index, [] if quiet else problems)
            if gpus is not None:
                gpu_rows.append(gpus)
            rows, incomplete = self.tokens.pod_tokens(pod, tokens, unread_models, problems)
            token_rows.extend(rows)
            left_out |= incomplete
            served += [(r.namespace, r.pod, r.model) for r in rows]
            served += [(ns, pod.pod or "", model) for ns, model in incomplete]
        token_rows = [t for t in token_rows if (t.namespace, t.model) not in left_out]
        unsure = pods_serving(served, left_out)
        return [g for g in gpu_rows if (g.namespace, g.pod) not in unsure], token_rows


def _fail_if_wholly_unread(failed: Failures, pages: Mapping[str, int]) -> None:
    """An upstream none of whose pages could be read fails the cycle (each such upstream is
    said, so each reads down)."""
    wholly = [
        next(iter(errors.values()))
        for upstream, errors in failed.items()
        if errors and len(errors) == pages[upstream]
    ]
    if wholly:
        first, *others = wholly
        first.also = tuple(others)
        raise first
