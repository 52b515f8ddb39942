"""The configuration's shape: one frozen struct per section, unknown keys refused, values
checked on the way in (`values`). Checks that need more than one key are in `rules`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from exporter.config.values import (
    Duration,
    Factor,
    LabelName,
    ListenAddress,
    MetricName,
    NonNegativeNumber,
    PositiveNumber,
    Ratio,
    Regex,
    Url,
)

Count = Annotated[int, Meta(gt=0)]
LabelChoices = Annotated[list[LabelName], Meta(min_length=1)]


class Strict(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A config section: unknown keys are errors, values never change after loading."""


class BasicAuth(Strict, frozen=True):
    username: str
    password_file: str


class PrometheusSettings(Strict, frozen=True):
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
    namespaces: str = ""  # a regex (RE2, anchored): only these namespaces' pods; "" = all
    recording_rules: Literal["auto", "off"] = "auto"  # read the exporter's rules when loaded


class UpstreamMetrics(Strict, frozen=True):
    gpu_energy: MetricName
    gpu_power: MetricName
    gpu_util: MetricName
    gpu_engine_active: MetricName
    prompt_tokens: MetricName
    generation_tokens: MetricName
    requests: MetricName | None = None  # finished requests (counter); null: none
    # Prompt tokens by where they came from (vLLM); only source="local_compute" is computed.
    prompt_tokens_by_source: MetricName | None = None


class GpuLabels(Strict, frozen=True):
    namespace: LabelChoices
    pod: LabelChoices
    node: LabelChoices
    gpu_model: LabelChoices
    gpu_id: LabelChoices
    mig_instance: LabelChoices
    mig_profile: LabelChoices
    kubernetes_node: LabelChoices


class TokenLabels(Strict, frozen=True):
    namespace: LabelChoices
    pod: LabelChoices
    model: LabelChoices


class UpstreamSettings(Strict, frozen=True):
    metrics: UpstreamMetrics
    gpu_labels: GpuLabels
    token_labels: TokenLabels
    default_model: str = ""  # for token series without a model label (TGI)


class DirectPod(Strict, frozen=True):
    vllm_urls: Annotated[list[Url], Meta(min_length=1)]
    pod: str | None = None
    namespace: str | None = None
    gpu_uuids: list[str] = []


class DirectSettings(Strict, frozen=True):
    dcgm_urls: list[Url] = []
    pods: list[DirectPod] = []
    node: str | None = None
    window: Duration = Duration(300.0)
    timeout: Duration = Duration(5.0)
    max_response_bytes: Count = 16 * 1024 * 1024


class ExporterSettings(Strict, frozen=True):
    listen: ListenAddress = ListenAddress(":29877")
    interval: Duration = Duration(30.0)
    stale_after: Count = 3
    min_tokens_per_second: NonNegativeNumber = NonNegativeNumber(5.0)
    max_models: Count = 5000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    docs_url: str = ""


class Region(Strict, frozen=True):
    """A grid region; over a built-in one, only the fields given replace its values."""

    name: str = ""
    location: PositiveNumber | None = None
    market: NonNegativeNumber | None = None
    source: str = ""
    market_source: str = ""


class NodeRule(Strict, frozen=True):
    pattern: Regex
    region: str


class LiveGrid(Strict, frozen=True):
    """A live grid-intensity provider: Electricity Maps (location basis, hourly) or WattTime
    (marginal basis). Which keys a provider needs is checked in `rules`."""

    provider: Literal["electricitymaps", "watttime"]
    url: Url | None = None  # None: the provider's public API
    token_file: str | None = None  # electricitymaps
    username: str | None = None  # watttime
    password_file: str | None = None  # watttime
    emission_factor_type: Literal["direct", "lifecycle"] | None = None  # electricitymaps
    refresh: Duration = Duration(900.0)
    max_age: Duration = Duration(3 * 3600.0)
    zones: dict[str, str] | None = None  # grid region -> zone; None: the built-in map


class GridSettings(Strict, frozen=True):
    default_region: str
    regions: dict[str, Region] = {}
    nodes: list[NodeRule] = []
    live: LiveGrid | list[LiveGrid] = []

    def live_providers(self) -> list[tuple[str, LiveGrid]]:
        """(key path, settings) of each live provider, in the order given."""
        if isinstance(self.live, LiveGrid):
            return [("grid.live", self.live)]
        return [(f"grid.live[{i}]", entry) for i, entry in enumerate(self.live)]


class FacilitySettings(Strict, frozen=True):
    pue: Factor = Factor(1.4)
    host_overhead: Factor = Factor(1.2)


class Preset(Strict, frozen=True):
    input_tokens: Count
    output_tokens: Count


class ModelPreset(Strict, frozen=True):
    pattern: Regex
    preset: str


class WorkloadSettings(Strict, frozen=True):
    default_preset: str
    presets: dict[str, Preset]
    models: list[ModelPreset] = []


class Bounds(Strict, frozen=True):
    low: PositiveNumber
    mid: PositiveNumber
    high: PositiveNumber

    def __post_init__(self) -> None:
        if not self.low <= self.mid <= self.high:
            raise ValueError("bounds must satisfy low <= mid <= high")


class Baseline(Strict, frozen=True):
    prefill: Bounds
    decode: Bounds
    note: str = ""
    sources: list[str] = []


class SizeClass(Strict, frozen=True):
    name: str
    below_total_params_b: PositiveNumber | None = None


class ComparisonSettings(Strict, frozen=True):
    always: list[str]
    size_classes: Annotated[list[SizeClass], Meta(min_length=1)]


class GpuSpec(Strict, frozen=True):
    pattern: Regex
    name: str
    bf16_tflops: PositiveNumber
    fp8_tflops: PositiveNumber | None = None
    memory_bandwidth_tbps: PositiveNumber | None = None
    max_power_w: PositiveNumber | None = None
    idle_power_w: PositiveNumber | None = None
    mig_slices: Count | None = None  # compute slices of a whole GPU under MIG (7, or 4)


class ModelSpec(Strict, frozen=True):
    pattern: Regex
    total_params_b: PositiveNumber
    active_params_b: PositiveNumber
    # Unset: fp8 where the served name says FP8, else bf16.
    precision: Literal["bf16", "fp16", "fp8", "fp4", "int4", "int8"] | None = None

    def __post_init__(self) -> None:
        if self.active_params_b > self.total_params_b:
            raise ValueError("active_params_b must not exceed total_params_b")


class CatalogSettings(Strict, frozen=True):
    gpus: list[GpuSpec] = []
    models: list[ModelSpec] = []


class Capacity(Strict, frozen=True):
    pattern: Regex
    tokens_per_second: PositiveNumber


class UtilizationSettings(Strict, frozen=True):
    capacity: list[Capacity] = []
    lookback: Duration = Duration(7 * 86400.0)
    refresh: Duration = Duration(600.0)


class EmbodiedGpu(Strict, frozen=True):
    pattern: Regex
    kg: NonNegativeNumber  # kg CO2e to make one GPU (its board share), cradle to gate
    source: str = "config"


class EmbodiedSettings(Strict, frozen=True):
    lifetime_years: PositiveNumber = PositiveNumber(5.0)
    server_kg_per_gpu: NonNegativeNumber = NonNegativeNumber(375.0)
    unknown_gpu_kg: NonNegativeNumber | None = NonNegativeNumber(150.0)
    gpus: list[EmbodiedGpu] = []


class PlausibilitySettings(Strict, frozen=True):
    max_power_margin: Factor = Factor(1.25)
    max_power_watts_per_gpu: PositiveNumber = PositiveNumber(1500.0)
    max_tokens_per_second: PositiveNumber = PositiveNumber(1_000_000.0)
    max_gpus_per_pod: Count = 64


class UnderutilizedSettings(Strict, frozen=True):
    min_power_watts_per_gpu: NonNegativeNumber = NonNegativeNumber(20.0)
    utilization_below: Ratio | None = Ratio(0.10)
    mfu_below: Ratio | None = Ratio(0.01)
    idle_power_ratio_above: Ratio | None = Ratio(0.5)


class Config(Strict, frozen=True, kw_only=True):
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
    plausibility: PlausibilitySettings = PlausibilitySettings()
    embodied: EmbodiedSettings = EmbodiedSettings()


def as_dict(section: Struct) -> dict[str, Any]:
    """A section's fields as a plain mapping (one level)."""
    return msgspec.structs.asdict(section)
