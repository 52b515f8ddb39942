"""Configuration: one YAML file over embedded defaults (`defaults.yaml`, the NRP's settings),
then environment, then flags; strictly validated into frozen objects.

Every problem becomes a `ConfigError` whose message is one line naming the key path, e.g.
`prometheus.timeout: invalid duration 'soon' (use e.g. 30s, 5m, 1h, 7d)`.

Validation is msgspec's (typed frozen structs, unknown keys refused, error paths); the value
checks it cannot express are the classes below, which `_decode` checks and builds.
"""

from __future__ import annotations

import copy
import math
import re
import typing
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta, Struct

from exporter.durations import parse_duration
from exporter.text import redact


class ConfigError(Exception):
    """A configuration or command-line problem; str() is one line fit for the user."""


# --------------------------------------------------------------------------------------------
# Checked values: msgspec hands these classes to `_decode`, which checks the raw YAML value and
# returns an instance (a str or float, so the rest of the code sees plain values).


class Duration(float):
    """Seconds, from "30s", "5m", "1h30m", "7d" or a number of seconds."""


class PositiveNumber(float):
    """A finite number > 0."""


class NonNegativeNumber(float):
    """A finite number >= 0."""


class Factor(float):
    """A finite multiplier >= 1 (PUE, host overhead)."""


class Ratio(float):
    """A number in [0, 1]."""


class Regex(str):
    """A Python regular expression."""


class Url(str):
    """An http(s) URL, stored without a trailing slash."""


class ListenAddress(str):
    """HOST:PORT or :PORT."""


class LabelName(str):
    """A Prometheus label name."""


class MetricName(str):
    """A Prometheus metric name."""


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {_kind(value)} {_short(value)}")
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)} {_short(value)}")
    return value


def _in_range(value: object, low: float, high: float, what: str) -> float:
    number = _number(value)
    if not low <= number <= high:
        raise ValueError(f"must be {what}, got {number:g}")
    return number


def _positive(value: object) -> float:
    number = _number(value)
    if not number > 0:
        raise ValueError(f"must be greater than 0, got {number:g}")
    return number


def _regex(value: object) -> str:
    text = _string(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {text!r}: {exc}") from None
    return text


def _listen(value: object) -> str:
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid listen address {text!r} (use HOST:PORT or :PORT)")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"invalid listen address {text!r} (bracket IPv6 hosts: [::1]:29877)")
    return text


def _url(value: object) -> str:
    text = _string(value)
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError(f"invalid URL {redact(text)!r} (want http:// or https://)")
    if re.search(r"[?#]", text):
        raise ValueError(
            f"URL {redact(text.split('?')[0].split('#')[0])!r} carries a query or fragment: "
            "paths are appended to it, and credentials belong in bearer_token_file or basic_auth"
        )
    return text.rstrip("/")


def _prometheus_name(pattern: str, what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _string(value)
        if not re.fullmatch(pattern, text):
            raise ValueError(f"invalid Prometheus {what} {text!r}")
        return text

    return check


_label_name = _prometheus_name(r"[a-zA-Z_][a-zA-Z0-9_]*", "label name")
_metric_name = _prometheus_name(r"[a-zA-Z_:][a-zA-Z0-9_:]*", "metric name")


_CHECKS: dict[type, Callable[[object], Any]] = {
    Duration: parse_duration,
    PositiveNumber: _positive,
    NonNegativeNumber: lambda v: _in_range(v, 0.0, math.inf, ">= 0"),
    Factor: lambda v: _in_range(v, 1.0, math.inf, ">= 1"),
    Ratio: lambda v: _in_range(v, 0.0, 1.0, "between 0 and 1"),
    Regex: _regex,
    Url: _url,
    ListenAddress: _listen,
    LabelName: _label_name,
    MetricName: _metric_name,
}


def _decode(kind: type, value: object) -> Any:
    """msgspec's hook for the checked classes: the checked value as an instance of `kind`."""
    check = _CHECKS.get(kind)
    if check is None:
        raise NotImplementedError(kind)
    return kind(check(value))


Count = Annotated[int, Meta(gt=0)]
LabelChoices = Annotated[list[LabelName], Meta(min_length=1)]


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = r'(?:"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)'  # PromQL strings
_MATCHER = rf"\s*(?:[a-zA-Z_][a-zA-Z0-9_]*|{_QUOTED})\s*(?:=~|!~|!=|=)\s*{_QUOTED}\s*"
_MATCHERS = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*,?\s*")


def selector_problem(selector: str) -> str:
    """Why `selector` (PromQL label matchers, with or without braces) is not one, or ""."""
    text = selector.strip()
    if text.startswith("{") != text.endswith("}"):
        return f"unbalanced braces in {selector!r}"
    text = text.strip("{}").strip()
    if not text or _MATCHERS.fullmatch(text):
        return ""
    return f'{text!r} is not a list of label matchers (label="value", =~, != or !~)'


class Strict(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A config section: unknown keys are errors, values never change after loading."""


class BasicAuth(Strict):
    username: str
    password_file: str


class PrometheusSettings(Strict):
    url: Url | None = None
    timeout: Duration = Duration(10.0)
    window: Duration = Duration(300.0)
    bearer_token_file: str | None = None
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = {}
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    max_response_bytes: Count = 64 * 1024 * 1024
    gpu_selector: str = ""
    token_selector: str = ""

    def __post_init__(self) -> None:
        if self.bearer_token_file and self.basic_auth:
            raise ValueError("set bearer_token_file or basic_auth, not both")
        for name in self.headers:
            if name.lower() == "authorization":
                raise ValueError(
                    "headers: do not put Authorization here; use bearer_token_file or basic_auth"
                )


class UpstreamMetrics(Strict):
    gpu_energy: MetricName
    gpu_power: MetricName
    gpu_util: MetricName
    gpu_engine_active: MetricName
    prompt_tokens: MetricName
    generation_tokens: MetricName


class GpuLabels(Strict):
    namespace: LabelChoices
    pod: LabelChoices
    node: LabelChoices
    gpu_model: LabelChoices
    gpu_id: LabelChoices


class TokenLabels(Strict):
    namespace: LabelChoices
    pod: LabelChoices
    model: LabelChoices


class UpstreamSettings(Strict):
    metrics: UpstreamMetrics
    gpu_labels: GpuLabels
    token_labels: TokenLabels
    default_model: str = ""  # for token series without a model label (TGI)


class DirectPod(Strict):
    vllm_urls: Annotated[list[Url], Meta(min_length=1)]
    pod: str | None = None
    namespace: str | None = None
    gpu_uuids: list[str] = []


class DirectSettings(Strict):
    dcgm_urls: list[Url] = []
    pods: list[DirectPod] = []
    node: str | None = None
    window: Duration = Duration(300.0)
    timeout: Duration = Duration(5.0)
    max_response_bytes: Count = 16 * 1024 * 1024


class ExporterSettings(Strict):
    listen: ListenAddress = ListenAddress(":29877")
    interval: Duration = Duration(30.0)
    stale_after: Count = 3
    min_tokens_per_second: NonNegativeNumber = NonNegativeNumber(5.0)
    max_models: Count = 5000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    docs_url: str = ""


class Region(Strict):
    """A grid region; over a built-in one, only the fields given replace its values."""

    name: str = ""
    location: PositiveNumber | None = None
    market: NonNegativeNumber | None = None
    source: str = ""
    market_source: str = ""


class NodeRule(Strict):
    pattern: Regex
    region: str


class GridSettings(Strict):
    default_region: str
    regions: dict[str, Region] = {}
    nodes: list[NodeRule] = []


class FacilitySettings(Strict):
    pue: Factor = Factor(1.4)
    host_overhead: Factor = Factor(1.2)


class Preset(Strict):
    input_tokens: Count
    output_tokens: Count


class ModelPreset(Strict):
    pattern: Regex
    preset: str


class WorkloadSettings(Strict):
    default_preset: str
    presets: dict[str, Preset]
    models: list[ModelPreset] = []


class Bounds(Strict):
    low: PositiveNumber
    mid: PositiveNumber
    high: PositiveNumber

    def __post_init__(self) -> None:
        if not self.low <= self.mid <= self.high:
            raise ValueError("bounds must satisfy low <= mid <= high")


class Baseline(Strict):
    prefill: Bounds
    decode: Bounds
    note: str = ""
    sources: list[str] = []


class SizeClass(Strict):
    name: str
    below_total_params_b: PositiveNumber | None = None


class ComparisonSettings(Strict):
    always: list[str]
    size_classes: Annotated[list[SizeClass], Meta(min_length=1)]


class GpuSpec(Strict):
    pattern: Regex
    name: str
    bf16_tflops: PositiveNumber
    fp8_tflops: PositiveNumber | None = None
    memory_bandwidth_tbps: PositiveNumber | None = None
    max_power_w: PositiveNumber | None = None
    idle_power_w: PositiveNumber | None = None


class ModelSpec(Strict):
    pattern: Regex
    total_params_b: PositiveNumber
    active_params_b: PositiveNumber
    # Unset: fp8 where the served name says FP8, else bf16.
    precision: Literal["bf16", "fp16", "fp8", "fp4", "int4", "int8"] | None = None

    def __post_init__(self) -> None:
        if self.active_params_b > self.total_params_b:
            raise ValueError("active_params_b must not exceed total_params_b")


class CatalogSettings(Strict):
    gpus: list[GpuSpec] = []
    models: list[ModelSpec] = []


class Capacity(Strict):
    pattern: Regex
    tokens_per_second: PositiveNumber


class UtilizationSettings(Strict):
    capacity: list[Capacity] = []
    lookback: Duration = Duration(7 * 86400.0)
    refresh: Duration = Duration(600.0)


class UnderutilizedSettings(Strict):
    min_power_watts_per_gpu: NonNegativeNumber = NonNegativeNumber(20.0)
    utilization_below: Ratio | None = Ratio(0.10)
    mfu_below: Ratio | None = Ratio(0.01)
    idle_power_ratio_above: Ratio | None = Ratio(0.5)


class Config(Strict, kw_only=True):
    source: Literal["prometheus", "direct"] = "prometheus"
    prometheus: PrometheusSettings = PrometheusSettings()
    direct: DirectSettings = DirectSettings()
    upstream: UpstreamSettings
    exporter: ExporterSettings = ExporterSettings()
    grid: GridSettings
    facility: FacilitySettings = FacilitySettings()
    workload: WorkloadSettings
    baselines: dict[str, Baseline]
    comparison: ComparisonSettings
    catalog: CatalogSettings = CatalogSettings()
    utilization: UtilizationSettings = UtilizationSettings()
    underutilized: UnderutilizedSettings = UnderutilizedSettings()


def as_dict(section: Struct) -> dict[str, Any]:
    """A section's fields as a plain mapping (one level)."""
    return msgspec.structs.asdict(section)


def _references(config: Config) -> tuple[str, str] | None:
    """The first cross-reference problem as (key path, message): checks that need more than
    one key, run once the document has the right shape."""
    from exporter.model.grid import builtin_regions  # the built-in table is data, not config

    window_key = "direct.window" if config.source == "direct" else "prometheus.window"
    window = config.direct.window if config.source == "direct" else config.prometheus.window
    if window < 1:
        return window_key, "must be at least 1s"
    if config.exporter.interval < 1:
        return "exporter.interval", "must be at least 1s (every cycle queries the upstream)"
    for key in ("gpu_selector", "token_selector"):
        problem = selector_problem(getattr(config.prometheus, key))
        if problem:
            return f"prometheus.{key}", problem
    for name, value in config.prometheus.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            return f"prometheus.headers.{name}", "not a valid HTTP header name"
        if any(c in value for c in "\r\n\0"):
            return f"prometheus.headers.{name}", "the value contains a line break"  # not shown
    if config.exporter.interval > window:
        # Power is known as a mean over the window: cycles further apart would leave
        # gaps in the energy and CO2 counters.
        return (
            "exporter.interval",
            f"{config.exporter.interval:g}s is longer than {window_key} ({window:g}s): "
            "the counters would miss energy",
        )
    if config.utilization.lookback < window:
        return "utilization.lookback", f"shorter than {window_key}"
    if config.source == "direct":
        if not config.direct.pods:
            return "direct.pods", "direct mode needs the pod's inference server URLs (--vllm-url)"
        if not config.direct.dcgm_urls:
            return "direct.dcgm_urls", "direct mode needs a dcgm-exporter /metrics URL (--dcgm-url)"
        owner: dict[str, int] = {}
        for i, pod in enumerate(config.direct.pods):
            if not pod.pod or not pod.namespace:
                return (
                    f"direct.pods[{i}]",
                    "pod and namespace are required (--pod, --namespace, or POD_NAME and "
                    "POD_NAMESPACE)",
                )
            for j, url in enumerate(pod.vllm_urls):
                if owner.setdefault(url, i) != i:
                    return (
                        f"direct.pods[{i}].vllm_urls[{j}]",
                        f"already listed for direct.pods[{owner[url]}]: its tokens would "
                        "count for both pods",
                    )

    builtin = builtin_regions()
    known_regions = set(builtin) | set(config.grid.regions)
    for name, region in config.grid.regions.items():
        if name not in builtin and region.location is None:
            return f"grid.regions.{name}.location", "required for a region not built in"
    if config.grid.default_region not in known_regions:
        return "grid.default_region", f"unknown region {config.grid.default_region!r}"
    for i, rule in enumerate(config.grid.nodes):
        if rule.region not in known_regions:
            return f"grid.nodes[{i}].region", f"unknown region {rule.region!r}"
    presets = config.workload.presets
    if config.workload.default_preset not in presets:
        return "workload.default_preset", f"unknown preset {config.workload.default_preset!r}"
    for i, rule in enumerate(config.workload.models):
        if rule.preset not in presets:
            return f"workload.models[{i}].preset", f"unknown preset {rule.preset!r}"
    for i, name in enumerate(config.comparison.always):
        if name not in config.baselines:
            return f"comparison.always[{i}]", f"unknown baseline {name!r}"
    for i, size in enumerate(config.comparison.size_classes):
        if size.name not in config.baselines:
            return (
                f"comparison.size_classes[{i}].name",
                f"no baseline named {size.name!r} for this size class",
            )
    return None


# --------------------------------------------------------------------------------------------
# Loading


def default_document() -> dict[str, Any]:
    """The embedded defaults as a plain mapping (a fresh copy)."""
    text = resources.files("exporter").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def read_document(path: str) -> dict[str, Any]:
    """The mapping in a YAML file, or ConfigError with a one-line reason."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {_kind(data)}")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else replaces."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested mapping, creating mappings on the way. A part of the path the
    document holds as something else (`prometheus: [1]`, then PROMETHEUS_URL) is an error
    that names it."""
    *parents, last = dotted.split(".")
    node = document
    for depth, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"{where}: expected a mapping, got {_kind(node)} {_short(node)}")
    node[last] = value


def build(document: Mapping[str, Any]) -> Config:
    """Validate a complete document (defaults already merged in)."""
    try:
        config = msgspec.convert(document, Config, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, document, Config)) from None
    problem = _references(config)
    if problem:
        raise ConfigError(f"{problem[0]}: {problem[1]}")
    return config


def load(
    path: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the file at `path`, then environment, then `overrides` (dotted keys)."""
    document = default_document()
    if path:
        document = merge(document, read_document(path))
    env = environ or {}
    if env.get("PROMETHEUS_URL"):
        set_path(document, "prometheus.url", env["PROMETHEUS_URL"])
    if env.get("PROMETHEUS_BEARER_TOKEN_FILE"):
        set_path(document, "prometheus.bearer_token_file", env["PROMETHEUS_BEARER_TOKEN_FILE"])
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_path(document, dotted, value)
    _pod_identity(document, env)
    return build(document)


def _pod_identity(document: dict[str, Any], env: Mapping[str, str]) -> None:
    """In direct mode, fill a pod's missing name and namespace from the downward API
    environment (POD_NAME, POD_NAMESPACE; HOSTNAME is the pod name in Kubernetes) and the
    node from NODE_NAME."""
    direct = document.get("direct")
    if document.get("source") != "direct" or not isinstance(direct, dict):
        return
    if not direct.get("node") and env.get("NODE_NAME"):
        direct["node"] = env["NODE_NAME"]
    for pod in direct.get("pods") or []:
        if isinstance(pod, dict):
            if not pod.get("pod"):
                pod["pod"] = env.get("POD_NAME") or env.get("HOSTNAME")
            if not pod.get("namespace"):
                pod["namespace"] = env.get("POD_NAMESPACE") or "default"


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_TYPES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def describe_validation_error(
    exc: msgspec.ValidationError, document: object, kind: type, prefix: str = ""
) -> str:
    """A msgspec error as one line, `key.path: what is wrong`."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    message, path = match["message"], prefix + (match["path"] or "")
    if "[...]" in path:  # msgspec does not name the key of a bad mapping entry: find it
        found = _locate(document, kind, prefix)
        if found:
            return found
    field = re.fullmatch(r"Object (contains unknown|missing required) field `(.+)`", message)
    if field:
        path = f"{path}.{field[2]}"
        message = "unknown key" if field[1] == "contains unknown" else "required key is missing"
    else:
        message = re.sub(r"`(\w+)`", lambda m: _TYPES.get(m[1], m[1]), message)
        message = message.replace("Expected ", "expected ").replace("Invalid ", "invalid ")
        secret = re.search(r"headers|auth|token|password", path)  # never echo those values
        if re.search(r", got an? \w+$", message) and not secret:
            message += f" {_short(_value_at(document, match['path'] or ''))}"
        choices = _literal_choices(kind, match["path"] or "")
        if message.startswith("invalid enum value") and choices:
            message += f" (one of: {', '.join(map(str, choices))})"
    where = path.lstrip(".")
    line = f"{where}: {message}" if where else message
    return " ".join(line.splitlines())


def _locate(document: object, kind: type, path: str) -> str | None:
    """The error of the first bad entry in a mapping of sections (`grid.regions`, `baselines`,
    ...), converting the entries one by one so the message can name the entry's key."""
    if not isinstance(document, Mapping) or not _is_struct(kind):
        return None
    hints = typing.get_type_hints(kind)
    for name in msgspec.structs.fields(kind):
        value = document.get(name.name)
        field_type = hints[name.name]
        where = f"{path}.{name.name}"
        if typing.get_origin(field_type) is dict and isinstance(value, Mapping):
            entry_type = typing.get_args(field_type)[1]
            for key, entry in value.items():
                try:
                    msgspec.convert(entry, entry_type, strict=False, dec_hook=_decode)
                except msgspec.ValidationError as exc:
                    return describe_validation_error(exc, entry, entry_type, f"{where}.{key}")
            continue
        for candidate in typing.get_args(field_type) or (field_type,):
            found = _locate(value, candidate, where)
            if found:
                return found
    return None


def _value_at(document: object, path: str) -> object:
    """The raw value at `path` (`.a.b[0].c`) in a document."""
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        if name and isinstance(document, Mapping):
            document = document.get(name)
        elif index and isinstance(document, list) and int(index) < len(document):
            document = document[int(index)]
        else:
            return None
    return document


def _literal_choices(kind: object, path: str) -> tuple[object, ...]:
    """The values a Literal field allows, found by following `path` (`.a.b[0].c`) from
    `kind`; () where the path leads elsewhere."""
    for name, _ in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        kind = _non_null(kind)
        if name:
            kind = typing.get_type_hints(kind).get(name) if _is_struct(kind) else None
        else:
            args = typing.get_args(kind)
            kind = args[0] if typing.get_origin(kind) is list and args else None
    kind = _non_null(kind)
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()


def _non_null(kind: object) -> object:
    """`X` for an optional `X | None`, else the type itself."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if type(None) in typing.get_args(kind) and len(args) == 1:
        return args[0]
    return kind


def _is_struct(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, Struct)


def _kind(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
