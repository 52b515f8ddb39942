"""Checks that need more than one key (or a built-in table), run once a document has the
right shape. Each yields every problem it finds as (key path, message)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence, Set

from exporter.config.schema import Config, LiveGrid
from exporter.config.values import HEADER_NAME, regex_problem, selector_problem
from exporter.data import grid_region_codes

Problems = Iterator[tuple[str, str]]
# A Prometheus URL that already names the API (the exporter appends /api/v1/query).
QUERY_PATH = re.compile(r"/api/v1(/[a-z_]*)?$")


def problems(config: Config) -> Problems:
    """Every problem in `config`, section by section."""
    yield from _timing(config)
    yield from _prometheus(config)
    if config.source == "direct":
        yield from _direct(config)
    yield from _grid(config)
    yield from _workload(config)


def _timing(config: Config) -> Problems:
    window_key = "direct.window" if config.source == "direct" else "prometheus.window"
    window = config.direct.window if config.source == "direct" else config.prometheus.window
    interval = config.exporter.interval
    if window < 1:
        yield window_key, "must be at least 1s"
    if interval < 1:
        yield "exporter.interval", "must be at least 1s (every cycle queries the upstream)"
    if window < 1 or interval < 1:
        return  # the comparisons below would only repeat it
    if interval > window:
        # Power is known as a mean over the window: cycles further apart would leave gaps in
        # the energy and CO2 counters.
        yield (
            "exporter.interval",
            f"{interval:g}s is longer than {window_key} ({window:g}s): the counters would "
            "miss energy",
        )
    if config.utilization.lookback < window:
        yield (
            "utilization.lookback",
            f"{config.utilization.lookback:g}s is shorter than {window_key} ({window:g}s)",
        )


def _prometheus(config: Config) -> Problems:
    settings = config.prometheus
    for key in ("gpu_selector", "token_selector"):
        problem = selector_problem(getattr(settings, key))
        if problem:
            yield f"prometheus.{key}", problem
    problem = regex_problem(settings.namespaces)
    if problem:
        yield "prometheus.namespaces", problem
    if settings.bearer_token_file and settings.basic_auth:
        yield "prometheus.basic_auth", "set bearer_token_file or basic_auth, not both"
    if settings.url and QUERY_PATH.search(settings.url):
        yield (
            "prometheus.url",
            "ends in the query path, which the exporter appends: give the base URL "
            "(e.g. http://prometheus:9090, or Mimir's .../prometheus)",
        )
    for name, value in settings.headers.items():
        if name.lower() == "authorization":
            yield (
                f"prometheus.headers.{name}",
                "do not put Authorization here; use bearer_token_file or basic_auth",
            )
        if not HEADER_NAME.fullmatch(name):
            yield f"prometheus.headers.{name}", "not a valid HTTP header name"
        if any(c in value for c in "\r\n\0"):
            yield f"prometheus.headers.{name}", "the value contains a line break"  # not shown


def _direct(config: Config) -> Problems:
    if not config.direct.pods:
        yield "direct.pods", "direct mode needs the pod's inference server URLs (--vllm-url)"
    if not config.direct.dcgm_urls:
        yield "direct.dcgm_urls", "direct mode needs a dcgm-exporter /metrics URL (--dcgm-url)"
    for j in _repeated(config.direct.dcgm_urls):
        yield f"direct.dcgm_urls[{j}]", "listed twice: its GPUs would count twice"
    owner: dict[str, int] = {}
    for i, pod in enumerate(config.direct.pods):
        if not pod.pod:
            yield (
                f"direct.pods[{i}].pod",
                "the pod's name is required (--pod or POD_NAME; Kubernetes sets HOSTNAME to it "
                "in the pod)",
            )
        if not pod.namespace:
            yield f"direct.pods[{i}].namespace", "required (--namespace or POD_NAMESPACE)"
        repeated = set(_repeated(pod.vllm_urls))
        for j, url in enumerate(pod.vllm_urls):
            if j in repeated:
                yield (
                    f"direct.pods[{i}].vllm_urls[{j}]",
                    "listed twice: its tokens would count twice",
                )
            elif owner.setdefault(url, i) != i:
                yield (
                    f"direct.pods[{i}].vllm_urls[{j}]",
                    f"already listed for direct.pods[{owner[url]}]: its tokens would count "
                    "for both pods",
                )


def _repeated(items: Sequence[str]) -> Iterator[int]:
    """The positions of items already listed before."""
    return (j for j, item in enumerate(items) if item in items[:j])


def unknown_region(name: str, known: Set[str]) -> str:
    """The error for a region code nobody defines, with the nearest known code if any
    (codes are case-sensitive: eGRID's are upper case)."""
    same = [code for code in known if code.casefold() == name.casefold()]
    near = same or difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    hint = f" (did you mean {near[0]!r}?)" if near else " (grid.regions defines new ones)"
    return f"unknown region {name!r}{hint}"


def _grid(config: Config) -> Problems:
    builtin = grid_region_codes()
    known = builtin | set(config.grid.regions)
    for name, region in config.grid.regions.items():
        if name not in builtin and region.location is None:
            yield f"grid.regions.{name}.location", "required for a region not built in"
    if config.grid.default_region not in known:
        yield "grid.default_region", unknown_region(config.grid.default_region, known)
    for i, rule in enumerate(config.grid.nodes):
        if rule.region not in known:
            yield f"grid.nodes[{i}].region", unknown_region(rule.region, known)
    first: dict[str, str] = {}
    for path, live in config.grid.live_providers():
        if first.setdefault(live.provider, path) != path:
            yield (
                f"{path}.provider",
                f"{live.provider} is already configured at {first[live.provider]}",
            )
        yield from _live(path, live, known)


# The credential keys each live provider reads.
_CREDENTIALS = {"electricitymaps": ("token_file",), "watttime": ("username", "password_file")}


def _live(path: str, live: LiveGrid, known: frozenset[str] | set[str]) -> Problems:
    own = " and ".join(_CREDENTIALS[live.provider])
    for provider, keys in _CREDENTIALS.items():
        for key in keys:
            given = getattr(live, key) is not None
            if provider == live.provider and not given:
                yield f"{path}.{key}", f"required for provider {live.provider}"
            elif provider != live.provider and given:
                yield (
                    f"{path}.{key}",
                    f"belongs to provider {provider}; {live.provider} reads {own}",
                )
    if live.provider == "watttime":
        if live.emission_factor_type is not None:
            yield (
                f"{path}.emission_factor_type",
                "applies to provider electricitymaps only (WattTime's co2_moer is a "
                "marginal operating emission rate)",
            )
        if live.zones is None:
            yield (
                f"{path}.zones",
                "required for provider watttime: a WattTime region for each grid region "
                "(look one up with WattTime's /v3/region-from-loc); there is no built-in map",
            )
    if live.refresh < 1:
        yield f"{path}.refresh", "must be at least 1s"
    elif live.max_age < live.refresh:
        yield (
            f"{path}.max_age",
            f"{live.max_age:g}s is shorter than {path}.refresh ({live.refresh:g}s): live "
            "values would fall back to the annual ones between refreshes",
        )
    for region, zone in (live.zones or {}).items():
        if region not in known:
            yield f"{path}.zones.{region}", unknown_region(region, known)
        if not zone.strip():
            yield f"{path}.zones.{region}", f"empty {live.provider} zone"


def _workload(config: Config) -> Problems:
    presets = config.workload.presets
    if config.workload.default_preset not in presets:
        yield "workload.default_preset", f"unknown preset {config.workload.default_preset!r}"
    for i, rule in enumerate(config.workload.models):
        if rule.preset not in presets:
            yield f"workload.models[{i}].preset", f"unknown preset {rule.preset!r}"
    for i, name in enumerate(config.comparison.always):
        if name not in config.baselines:
            yield f"comparison.always[{i}]", f"unknown baseline {name!r}"
    for i, size in enumerate(config.comparison.size_classes):
        if size.name not in config.baselines:
            yield (
                f"comparison.size_classes[{i}].name",
                f"no baseline named {size.name!r} for this size class",
            )


def named_files(config: Config) -> list[tuple[str, str]]:
    """(key path, path) of every file the configuration names for serve to read: secrets
    and the CA bundle, read at each request (so a missing one fails every request, not
    the start)."""
    files: dict[str, str | None] = {}
    prometheus = config.prometheus
    if config.source == "prometheus":
        files["prometheus.ca_file"] = prometheus.ca_file
        files["prometheus.bearer_token_file"] = prometheus.bearer_token_file
        if prometheus.basic_auth:
            files["prometheus.basic_auth.password_file"] = prometheus.basic_auth.password_file
    for path, live in config.grid.live_providers():
        files[f"{path}.token_file"] = live.token_file
        files[f"{path}.password_file"] = live.password_file
    return [(key, named) for key, named in files.items() if named]
