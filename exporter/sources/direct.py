"""The direct-scrape source (sidecar mode, and the demo): reads inference-server and
dcgm-exporter /metrics pages itself, keeps per-series history, and computes windowed rates
and means, so no Prometheus query API is needed.

Only each configured pod's own GPUs count: DCGM series whose pod labels name the pod, or
whose GPU id is configured for it. A GPU that other pods also hold (MIG instances, time-sliced
copies) is counted once per pod, at its whole power, and flagged (attribution="shared_gpu");
replicas of one model that share it count it once between them (see aggregation.join).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.config import Config, DirectPod
from exporter.observations import (
    ENERGY_COUNTER,
    POWER_GAUGE,
    Observation,
    PodGpus,
    PodTokens,
    SharedGpu,
    pods_serving,
)
from exporter.rates import SeriesWindow
from exporter.sources.exposition import Row, base_name, parse
from exporter.sources.http_api import (
    HTTP_STATUS,
    INVALID_VALUE,
    MALFORMED,
    MISSING_SERIES,
    HttpFetcher,
    HttpOptions,
    UpstreamError,
    describe_invalid,
    is_valid_value,
    snippet,
)
from exporter.text import redact

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # (page, name, labels)


def _first(labels: Mapping[str, str], choices: Iterable[str]) -> str:
    return next((labels[c] for c in choices if labels.get(c)), "")


@dataclass(frozen=True)
class _Gpu:
    page: str
    gpu_id: str
    node: str
    product: str


def _models_left_out(models: set[str]) -> str:
    named = f"models {', '.join(sorted(models))}" if models else "its models"
    return f"{named} left out this cycle"


class DirectSource:
    name = "direct"
    upstreams = ("vllm", "dcgm")
    gpu_upstream = "dcgm"

    def __init__(
        self,
        config: Config,
        fetcher: HttpFetcher | None = None,
        clock: Callable[[], float] | None = None,
        window_clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        settings = config.direct
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
        self._gpu_names = (
            names.gpu_energy,
            names.gpu_power,
            names.gpu_util,
            names.gpu_engine_active,
        )
        self._token_names = (names.prompt_tokens, names.generation_tokens)
        # Gauges with a ceiling: a ratio, and a percentage.
        self._bounds = {base_name(names.gpu_engine_active): 1.0, base_name(names.gpu_util): 100.0}
        self._series: dict[SeriesKey, SeriesWindow] = {}
        # Pods that claim a GPU by its id (direct.pods[].gpu_uuids) hold it, whatever the DCGM
        # labels say.
        self._claimed: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for pod in settings.pods:
            for gpu_id in pod.gpu_uuids:
                self._claimed[gpu_id].add((pod.namespace or "", pod.pod or ""))
        self._invalid: dict[SeriesKey, float] = {}  # this cycle's invalid samples
        self._requests = dict.fromkeys(self.upstreams, 0)

    @property
    def requests_by_upstream(self) -> dict[str, int]:
        return dict(self._requests)

    def close(self) -> None:
        self.http.close()

    # ---- fetching

    def _page(self, url: str, upstream: str, names: Iterable[str]) -> list[Row]:
        self._requests[upstream] += 1
        try:
            status, body = self.http.get(url)
        except UpstreamError as exc:
            raise UpstreamError(exc.reason, f"{upstream} {exc}", upstream) from None
        if status >= 400:
            raise UpstreamError(
                HTTP_STATUS,
                self.http.scrub(f"{upstream} HTTP {status} from {redact(url)}: {snippet(body)}"),
                upstream,
            )
        text = body.decode("utf-8", "replace")
        if text.lstrip()[:1] == "<":  # an HTML error or login page served with 200
            raise UpstreamError(
                MALFORMED,
                f"{upstream} page {redact(url)} is HTML, not Prometheus text exposition: "
                f"{snippet(body)}",
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

    def _record(self, page: str, rows: list[Row], now: float, seen: set[SeriesKey]) -> None:
        """Adds each row's sample to its series' window. A NaN, infinite or negative sample,
        or one above its field's ceiling, never enters a window (it would spoil every rate
        and mean over it for a whole window): its series is marked invalid for this cycle."""
        for name, labels, value in rows:
            key = (page, name, tuple(sorted(labels.items())))
            seen.add(key)
            if not is_valid_value(value) or value > self._bounds.get(name, math.inf):
                self._invalid[key] = value
                continue
            window = self._series.get(key)
            if window is None:
                window = self._series[key] = SeriesWindow(self.window)
            window.add(now, value)

    def fetch(self) -> Observation:
        now = self.clock()
        settings = self.config.direct
        problems: list[tuple[str, str, str]] = []
        seen: set[SeriesKey] = set()
        self._invalid = {}

        failed: dict[str, dict[str, UpstreamError]] = {"dcgm": {}, "vllm": {}}

        def read(url: str, upstream: str, names: tuple[str, ...]) -> list[Row] | None:
            try:
                rows = self._page(url, upstream, names)
            except UpstreamError as exc:
                failed[upstream][url] = exc
                return None
            # Stamped when its response arrived: pages are read one after another, and a
            # page's latency must not turn into a rate error.
            self._record(url, rows, self.window_clock(), seen)
            return rows

        read_dcgm = {url: read(url, "dcgm", self._gpu_names) for url in settings.dcgm_urls}
        vllm_urls = list(dict.fromkeys(u for pod in settings.pods for u in pod.vllm_urls))
        read_tokens = {url: read(url, "vllm", self._token_names) for url in vllm_urls}
        pages_of = {"dcgm": read_dcgm, "vllm": read_tokens}
        # An upstream none of whose pages could be read fails the cycle (each such upstream
        # is said, so each reads down).
        wholly = [
            next(iter(errors.values()))
            for upstream, errors in failed.items()
            if errors and len(errors) == len(pages_of[upstream])
        ]
        if wholly:
            first, *others = wholly
            first.also = tuple(others)
            raise first
        # What each unreadable inference-server page served when last read: left out now.
        unread_models = {url: self._models_last_read(url) for url in failed["vllm"]}
        for upstream, errors in failed.items():
            # Some pages could not be read: their pods' problem, said once per page.
            for url, exc in errors.items():
                cost = (
                    _models_left_out(unread_models[url])
                    if upstream == "vllm"
                    else self._power_withheld(url)
                )
                problems.append((upstream, exc.reason, f"{exc}; {cost}"))
        dcgm = {url: rows for url, rows in read_dcgm.items() if rows is not None}
        tokens = {url: rows for url, rows in read_tokens.items() if rows is not None}
        # A series gone from a page that was read no longer counts; an unread page's
        # series are kept, both for their history and to know what it served.
        unread = set(failed["dcgm"]) | set(failed["vllm"])
        for key in [k for k in self._series if k not in seen and k[0] not in unread]:
            del self._series[key]
        blind = set()
        usable = [self._check_token_page(url, rows, problems) for url, rows in tokens.items()]
        if usable and not any(usable):  # one server down is that pod's problem
            blind.add("vllm")
        if dcgm and not any(dcgm.values()):
            problems.append(
                (
                    "dcgm",
                    MISSING_SERIES,
                    "no GPU series on any dcgm-exporter page (check upstream.metrics)",
                )
            )
            blind.add("dcgm")  # said once here, not again for every pod

        gpu_rows, token_rows = [], []
        left_out: set[tuple[str, str]] = set()
        served: list[tuple[str, str, str]] = []  # (namespace, pod, model)
        # Said once already: no GPU page at all, or a page that could not be read (whose pods
        # then have no GPU series).
        quiet = "dcgm" in blind or bool(failed["dcgm"])
        for pod in settings.pods:
            gpus = self._pod_gpus(pod, dcgm, [] if quiet else problems)
            if gpus is not None:
                gpu_rows.append(gpus)
            rows, incomplete = self._pod_tokens(pod, tokens, unread_models, problems)
            token_rows.extend(rows)
            left_out |= incomplete
            served += [(r.namespace, r.pod, r.model) for r in rows]
            served += [(ns, pod.pod or "", model) for ns, model in incomplete]
        # A model incomplete in one pod is left out in all: its other replicas alone would
        # understate it; and a pod that served a left-out model cannot split its power.
        token_rows = [t for t in token_rows if (t.namespace, t.model) not in left_out]
        unsure = pods_serving(served, left_out)
        gpu_rows = [g for g in gpu_rows if (g.namespace, g.pod) not in unsure]
        return Observation(
            time=now,
            gpus=tuple(gpu_rows),
            tokens=tuple(token_rows),
            problems=tuple(problems),
            blind=frozenset(blind),
        )

    def _describe(self, name: str, value: float) -> str:
        bound = self._bounds.get(name)
        if is_valid_value(value) and bound is not None:
            return f"above its ceiling of {bound:g}"
        return describe_invalid(value)

    def _check_token_page(self, url: str, rows: list[Row], problems: list) -> bool:
        """Says so when an inference server's page has no token series, or series no model
        can be named for: otherwise its models would just vanish. False: nothing usable."""
        names = self.config.upstream.metrics
        labels = self.config.upstream.token_labels.model
        if not rows:
            problems.append(
                (
                    "vllm",
                    MISSING_SERIES,
                    f"page {redact(url)} has no {names.prompt_tokens} or "
                    f"{names.generation_tokens} series (upstream.metrics)",
                )
            )
        elif not self.config.upstream.default_model and not any(
            _first(row[1], labels) for row in rows
        ):
            problems.append(
                (
                    "vllm",
                    MISSING_SERIES,
                    f"token series on {redact(url)} carry no model label "
                    f"({', '.join(labels)}): set upstream.default_model (TGI has none)",
                )
            )
        else:
            return True
        return False

    # ---- one pod's tokens

    def _pod_tokens(
        self,
        pod: DirectPod,
        pages: Mapping[str, list[Row]],
        unread_models: Mapping[str, set[str]],
        problems: list,
    ) -> tuple[list[PodTokens], set[tuple[str, str]]]:
        """The pod's token rates, and the (namespace, model) keys left out this cycle (with
        the models its unreadable pages served when last read)."""
        names = self.config.upstream.metrics
        model_labels = self.config.upstream.token_labels.model
        default_model = self.config.upstream.default_model
        rates: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        incomplete: set[str] = set()
        phases: dict[str, set[int]] = defaultdict(set)
        for url in pod.vllm_urls:
            if url not in pages:  # could not be read: what it served last is left out
                incomplete |= unread_models[url]
                continue
            for name, labels, value in pages[url]:
                model = _first(labels, model_labels) or default_model
                if not model:
                    continue
                phase = 0 if name == base_name(names.prompt_tokens) else 1
                phases[model].add(phase)
                key = (url, name, tuple(sorted(labels.items())))
                if key in self._invalid:
                    problems.append(
                        (
                            "vllm",
                            INVALID_VALUE,
                            f"{name} for {pod.namespace}/{pod.pod} model {model!r} is "
                            f"{describe_invalid(value)}; model left out this cycle",
                        )
                    )
                    incomplete.add(model)
                    continue
                rate = self._series[key].counter_rate()
                if rate is None:
                    incomplete.add(model)  # one sample so far: a rate needs two
                else:
                    rates[model][phase] += rate
        for model, seen in phases.items():
            if len(seen) < 2:
                problems.append(
                    (
                        "vllm",
                        MISSING_SERIES,
                        f"{pod.namespace}/{pod.pod} model {model!r} has "
                        "only one of the prompt and generation token series; model left out",
                    )
                )
                incomplete.add(model)
        return [
            PodTokens(pod.namespace or "", pod.pod or "", model, prompt, generation)
            for model, (prompt, generation) in sorted(rates.items())
            if model not in incomplete
        ], {(pod.namespace or "", model) for model in incomplete}

    def _power_withheld(self, url: str) -> str:
        """What an unreadable dcgm-exporter page costs this cycle: the power of the pods
        whose GPUs it held when last read."""
        labels = self.config.upstream.gpu_labels
        held = set()
        for page, _, key in self._series:
            if page == url:
                series_labels = dict(key)
                held.add(
                    (_first(series_labels, labels.namespace), _first(series_labels, labels.pod))
                )
        pods = sorted(
            f"{p.namespace}/{p.pod}"
            for p in self.config.direct.pods
            if (p.namespace, p.pod) in held
        )
        return (
            f"power of pods {', '.join(pods)} withheld this cycle"
            if pods
            else "no power from it this cycle"
        )

    def _models_last_read(self, url: str) -> set[str]:
        """The models an inference server's page named when it was last read."""
        model_labels = self.config.upstream.token_labels.model
        default_model = self.config.upstream.default_model
        return {
            _first(dict(labels), model_labels) or default_model
            for page, _, labels in self._series
            if page == url
        } - {""}

    # ---- one pod's GPUs

    def _pod_gpus(
        self, pod: DirectPod, pages: Mapping[str, list[Row]], problems: list
    ) -> PodGpus | None:
        labels_cfg = self.config.upstream.gpu_labels
        names = self.config.upstream.metrics
        wanted_ids = set(pod.gpu_uuids)
        mine: dict[_Gpu, dict[str, list[float]]] = {}
        bad: list[tuple[str, str, float]] = []  # (field, GPU id, sample) of invalid samples
        holders: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
        for page, rows in pages.items():
            for name, labels, _ in rows:
                gpu_id = _first(labels, labels_cfg.gpu_id)
                owner = (_first(labels, labels_cfg.namespace), _first(labels, labels_cfg.pod))
                if owner[1]:  # pods only: the docs' "other pods use other slices"
                    holders[(page, gpu_id)].add(owner)
                if not (owner == (pod.namespace, pod.pod) or gpu_id in wanted_ids):
                    continue
                gpu = _Gpu(
                    page,
                    gpu_id,
                    _first(labels, labels_cfg.node),
                    _first(labels, labels_cfg.gpu_model),
                )
                key = (page, name, tuple(sorted(labels.items())))
                if key in self._invalid:
                    bad.append((name, gpu.gpu_id, self._invalid[key]))
                    mine.setdefault(gpu, {})  # still one of the pod's GPUs, reading or not
                    continue
                window = self._series[key]
                value = (
                    window.updated_counter_rate()
                    if name == base_name(names.gpu_energy)
                    else window.mean()
                )
                if value is not None:
                    # MIG instances repeat their GPU's readings: one value per GPU and field.
                    fields = mine.setdefault(gpu, {})
                    fields[name] = [*fields.get(name, []), value]
        energy, power = base_name(names.gpu_energy), base_name(names.gpu_power)
        busy_fields = {base_name(names.gpu_engine_active): 1.0, base_name(names.gpu_util): 100.0}
        consequences = {energy: "trying the power gauge", power: "power gauge not used"}
        for field, gpu_id, value in bad:
            problems.append(
                (
                    "dcgm",
                    INVALID_VALUE,
                    f"{field} of GPU {gpu_id} for {pod.namespace}/{pod.pod} is "
                    f"{self._describe(field, value)}; "
                    f"{consequences.get(field, 'busy ratio withheld')} this cycle",
                )
            )
        bad_fields = {field for field, _, _ in bad}
        for f in mine.values():
            for field in bad_fields & {energy, power}:
                f.pop(field, None)  # one GPU's bad reading spoils the field for the pod
        if not mine:
            if not bad:
                problems.append(
                    (
                        "dcgm",
                        MISSING_SERIES,
                        f"no GPU series for pod "
                        f"{pod.namespace}/{pod.pod} (pod labels or direct.pods[].gpu_uuids)",
                    )
                )
            return None

        if all(energy in f for f in mine.values()):
            watts = [max(f[energy]) / 1000 for f in mine.values()]  # mJ/s -> W
            source = ENERGY_COUNTER
        elif all(power in f for f in mine.values()):
            watts = [max(f[power]) for f in mine.values()]
            source = POWER_GAUGE
        else:
            problems.append(
                (
                    "dcgm",
                    MISSING_SERIES,
                    f"no valid power reading yet for every GPU of {pod.namespace}/{pod.pod}",
                )
            )
            return None
        busy = []
        for f in mine.values():
            for field, scale in busy_fields.items():
                if field in f:
                    busy.append(max(f[field]) / scale)
                    break
        busy_bad = bool(bad_fields & busy_fields.keys())
        me = {(pod.namespace, pod.pod)}
        held_by = [
            len(holders.get((g.page, g.gpu_id), set()) | self._claimed.get(g.gpu_id, set()) | me)
            for g in mine
        ]
        shared = tuple(
            SharedGpu(g.gpu_id, w, n) for g, w, n in zip(mine, watts, held_by, strict=True) if n > 1
        )
        first = next(iter(mine))
        return PodGpus(
            namespace=pod.namespace or "",
            pod=pod.pod or "",
            node=first.node or self.config.direct.node or "",
            gpu_model=first.product,
            gpus=len(mine),
            power_w=sum(watts),
            power_source=source,
            shared=shared,
            busy_ratio=sum(busy) / len(busy) if len(busy) == len(mine) and not busy_bad else None,
        )
