"""Configuration: one YAML file over embedded defaults (`defaults.yaml`, the NRP's settings),
then environment, then flags; strictly validated into frozen objects.

Every problem becomes a `ConfigError` whose message is one line naming the key path, e.g.
`prometheus.timeout: invalid duration 'soon' (use e.g. 30s, 5m, 1h, 7d)`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from exporter.durations import parse_duration
from exporter.text import redact


class ConfigError(Exception):
    """A configuration or command-line problem; str() is one line fit for the user."""


def _check_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid listen address {value!r} (use HOST:PORT or :PORT)")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"invalid listen address {value!r} (bracket IPv6 hosts: [::1]:29877)")
    return value


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"invalid URL {redact(value)!r} (want http:// or https://)")
    return value.rstrip("/")


def _check_label_name(value: str) -> str:
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", value):
        raise ValueError(f"invalid Prometheus label name {value!r}")
    return value


def _check_metric_name(value: str) -> str:
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", value):
        raise ValueError(f"invalid Prometheus metric name {value!r}")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Regex = Annotated[str, AfterValidator(_check_regex)]
Positive = Annotated[float, Field(gt=0), AfterValidator(_finite)]
NonNegative = Annotated[float, Field(ge=0), AfterValidator(_finite)]
Ratio = Annotated[float, Field(ge=0, le=1)]
LabelName = Annotated[str, AfterValidator(_check_label_name)]
MetricName = Annotated[str, AfterValidator(_check_metric_name)]
LabelChoices = Annotated[list[LabelName], Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class BasicAuth(Strict):
    username: str
    password_file: str


class PrometheusSettings(Strict):
    url: Annotated[str, AfterValidator(_check_url)] | None = None
    timeout: Duration = 10.0
    window: Duration = 300.0
    bearer_token_file: str | None = None
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = {}
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    max_response_bytes: Annotated[int, Field(gt=0)] = 64 * 1024 * 1024
    gpu_selector: str = ""
    token_selector: str = ""

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSettings:
        if self.bearer_token_file and self.basic_auth:
            raise ValueError("set bearer_token_file or basic_auth, not both")
        for name in self.headers:
            if name.lower() == "authorization":
                raise ValueError(
                    "headers: do not put Authorization here; use bearer_token_file or basic_auth"
                )
        return self


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


Url = Annotated[str, AfterValidator(_check_url)]


class DirectPod(Strict):
    vllm_urls: Annotated[list[Url], Field(min_length=1)]
    pod: str | None = None
    namespace: str | None = None
    gpu_uuids: list[str] = []


class DirectSettings(Strict):
    dcgm_urls: list[Url] = []
    pods: list[DirectPod] = []
    node: str | None = None
    window: Duration = 300.0
    timeout: Duration = 5.0
    max_response_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024


class ExporterSettings(Strict):
    listen: Annotated[str, AfterValidator(_check_listen)] = ":29877"
    interval: Duration = 30.0
    stale_after: Annotated[int, Field(ge=1)] = 3
    min_tokens_per_second: NonNegative = 5.0
    max_models: Annotated[int, Field(gt=0)] = 5000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    docs_url: str = ""


class Region(Strict):
    name: str = ""
    location: Positive | None = None
    market: NonNegative | None = None
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
    pue: Annotated[float, Field(ge=1), AfterValidator(_finite)] = 1.4
    host_overhead: Annotated[float, Field(ge=1), AfterValidator(_finite)] = 1.2


class Preset(Strict):
    input_tokens: Annotated[int, Field(gt=0)]
    output_tokens: Annotated[int, Field(gt=0)]


class ModelPreset(Strict):
    pattern: Regex
    preset: str


class WorkloadSettings(Strict):
    default_preset: str
    presets: dict[str, Preset]
    models: list[ModelPreset] = []


class Bounds(Strict):
    low: Positive
    mid: Positive
    high: Positive

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not self.low <= self.mid <= self.high:
            raise ValueError("bounds must satisfy low <= mid <= high")
        return self


class Baseline(Strict):
    prefill: Bounds
    decode: Bounds
    note: str = ""
    sources: list[str] = []


class SizeClass(Strict):
    name: str
    below_total_params_b: Positive | None = None


class ComparisonSettings(Strict):
    always: list[str]
    size_classes: Annotated[list[SizeClass], Field(min_length=1)]


class GpuSpec(Strict):
    pattern: Regex
    name: str
    bf16_tflops: Positive
    fp8_tflops: Positive | None = None
    memory_bandwidth_tbps: Positive | None = None
    max_power_w: Positive | None = None
    idle_power_w: Positive | None = None


class ModelSpec(Strict):
    pattern: Regex
    total_params_b: Positive
    active_params_b: Positive
    precision: Literal["bf16", "fp16", "fp8", "fp4", "int4", "int8"] = "bf16"

    @model_validator(mode="after")
    def _active_le_total(self) -> ModelSpec:
        if self.active_params_b > self.total_params_b:
            raise ValueError("active_params_b must not exceed total_params_b")
        return self


class CatalogSettings(Strict):
    gpus: list[GpuSpec] = []
    models: list[ModelSpec] = []


class Capacity(Strict):
    pattern: Regex
    tokens_per_second: Positive


class UtilizationSettings(Strict):
    capacity: list[Capacity] = []
    lookback: Duration = 7 * 86400.0
    refresh: Duration = 600.0


class UnderutilizedSettings(Strict):
    min_power_watts_per_gpu: NonNegative = 20.0
    utilization_below: Ratio | None = 0.10
    mfu_below: Ratio | None = 0.01
    idle_power_ratio_above: Ratio | None = 0.5


class Config(Strict):
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

    @model_validator(mode="after")
    def _references(self) -> Config:
        from exporter.grid import builtin_regions  # the built-in table is data, not config

        window_key = "direct.window" if self.source == "direct" else "prometheus.window"
        window = self.direct.window if self.source == "direct" else self.prometheus.window
        if window < 1:
            raise _Ref(window_key, "must be at least 1s")
        if self.exporter.interval > window:
            # Power is known as a mean over the window: cycles further apart would leave
            # gaps in the energy and CO2 counters.
            raise _Ref(
                "exporter.interval",
                f"{self.exporter.interval:g}s is longer than "
                f"{window_key} ({window:g}s): the counters would miss energy",
            )
        if self.utilization.lookback < window:
            raise _Ref("utilization.lookback", f"shorter than {window_key}")
        if self.source == "direct":
            if not self.direct.pods:
                raise _Ref(
                    "direct.pods", "direct mode needs the pod's inference server URLs (--vllm-url)"
                )
            if not self.direct.dcgm_urls:
                raise _Ref(
                    "direct.dcgm_urls",
                    "direct mode needs a dcgm-exporter /metrics URL (--dcgm-url)",
                )
            for i, pod in enumerate(self.direct.pods):
                if not pod.pod or not pod.namespace:
                    raise _Ref(
                        f"direct.pods[{i}]",
                        "pod and namespace are required (--pod, "
                        "--namespace, or POD_NAME and POD_NAMESPACE)",
                    )

        known_regions = set(builtin_regions()) | set(self.grid.regions)
        for name, region in self.grid.regions.items():
            if name not in builtin_regions() and region.location is None:
                raise _Ref(f"grid.regions.{name}.location", "required for a region not built in")
        if self.grid.default_region not in known_regions:
            raise _Ref("grid.default_region", f"unknown region {self.grid.default_region!r}")
        for i, rule in enumerate(self.grid.nodes):
            if rule.region not in known_regions:
                raise _Ref(f"grid.nodes[{i}].region", f"unknown region {rule.region!r}")
        if self.workload.default_preset not in self.workload.presets:
            raise _Ref(
                "workload.default_preset", f"unknown preset {self.workload.default_preset!r}"
            )
        for i, rule in enumerate(self.workload.models):
            if rule.preset not in self.workload.presets:
                raise _Ref(f"workload.models[{i}].preset", f"unknown preset {rule.preset!r}")
        for i, name in enumerate(self.comparison.always):
            if name not in self.baselines:
                raise _Ref(f"comparison.always[{i}]", f"unknown baseline {name!r}")
        for i, size in enumerate(self.comparison.size_classes):
            if size.name not in self.baselines:
                raise _Ref(
                    f"comparison.size_classes[{i}].name",
                    f"no baseline named {size.name!r} for this size class",
                )
        return self


class _Ref(ValueError):
    """A cross-reference problem that already knows its key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


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
    """Set `a.b.c` in a nested mapping, creating mappings on the way."""
    *parents, last = dotted.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def build(document: Mapping[str, Any]) -> Config:
    """Validate a complete document (defaults already merged in)."""
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


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


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem in a pydantic error as `key.path: what is wrong`."""
    error = exc.errors(include_url=False)[0]
    loc = list(error["loc"])
    message = str(error["msg"])
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _Ref):
        return str(ctx_error)
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{_format_loc(loc)}: unknown key"
    if kind == "missing":
        return f"{_format_loc(loc)}: required key is missing"
    # pydantic prefixes messages of validator errors with "Value error, "
    message = re.sub(r"^(Value|Assertion) error, ", "", message)
    if kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message} (got {_kind(error.get('input'))} {_short(error.get('input'))})"
    where = _format_loc(loc)
    line = f"{where}: {message}" if where else message
    return " ".join(line.splitlines())


def _format_loc(loc: list[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item).startswith(("function-", "constrained-")):
            continue  # pydantic's names for validator steps, not keys
        elif re.fullmatch(r"[A-Za-z0-9_.\-]+", str(item)):
            parts.append(("." if parts else "") + str(item))
        else:
            parts.append(f"[{str(item)!r}]")
    return "".join(parts)


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
