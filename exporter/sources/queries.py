"""Every PromQL expression the Prometheus source runs, built once from the configuration:
the per-cycle queries (a constant number), the follow-up asked only when their rows call for
it, and the look-back query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.config import Config
from exporter.sources import recording
from exporter.sources.dcgm_units import divided, energy_per_joule, utilization_per_ratio
from exporter.sources.promql import GPU_ROW, Builder


@dataclass(frozen=True)
class Queries:
    """Every PromQL expression the source runs, built once from the configuration."""

    power_energy: str
    power_gauge: str
    gpu_count: str
    gpu_holders: str
    shared_gpus: str
    busy: str
    tokens: str
    mig: str
    mig_power: str
    energy_glitches: str
    token_glitches: Mapping[str, str]
    peak_tokens: str
    refresh: str  # every utilization.refresh: peak_tokens, and the recording rules' detection
    recorded: Mapping[str, str]  # per-cycle query -> its recording rule's series

    @classmethod
    def build(cls, config: Config) -> Queries:
        b = Builder(config)
        names = config.upstream.metrics
        peak_tokens = b.peak_tokens()
        per_cycle = {
            "power_energy": (
                divided(
                    b.per_gpu("sum", "increase", names.gpu_energy),
                    energy_per_joule(names.gpu_energy),
                )
                + f" or {b.glitches('gpu', names.gpu_energy, GPU_ROW, gate=True)}"
            ),
            "power_gauge": b.per_gpu("sum", "avg_over_time", names.gpu_power),
            "gpu_count": b.gpu_count(),
            "gpu_holders": b.gpu_holders(),
            "busy": (
                f"{b.per_gpu('avg', 'avg_over_time', names.gpu_engine_active)} or "
                + divided(
                    b.per_gpu("avg", "avg_over_time", names.gpu_util),
                    utilization_per_ratio(names.gpu_util),
                )
            ),
            "tokens": b.tokens(),
            "mig": b.mig(),
        }
        rules = config.prometheus.recording_rules == "auto"
        return cls(
            **per_cycle,
            shared_gpus=b.shared_gpus(),
            mig_power=b.mig_power(),
            energy_glitches=b.glitches("gpu", names.gpu_energy, GPU_ROW),
            token_glitches=b.token_glitches(),
            peak_tokens=peak_tokens,
            refresh=f"{peak_tokens} or {recording.detection()}" if rules else peak_tokens,
            recorded={name: recording.selector(name, q) for name, q in per_cycle.items()},
        )

    def per_cycle(self) -> dict[str, str]:
        return {
            "power_energy": self.power_energy,
            "power_gauge": self.power_gauge,
            "gpu_count": self.gpu_count,
            "gpu_holders": self.gpu_holders,
            "busy": self.busy,
            "tokens": self.tokens,
            "mig": self.mig,
        }

    def follow_up(
        self,
        mig: bool = False,
        shared: bool = False,
        energy_resets: bool = False,
        token_resets: Sequence[str] = (),
    ) -> str:
        """The one query asked after the per-cycle ones, only when their rows call for it:
        the power of MIG GPUs (`mig` found instances), of GPUs more than one pod holds
        (`gpu_holders` found some), and the full step-back test of the energy counter and of
        the token counters of `token_resets` (phases where a counter went backwards). Empty
        when nothing calls for it."""
        parts = [self.mig_power] if mig else []
        parts += [self.shared_gpus] if shared else []
        parts += [self.energy_glitches] if energy_resets else []
        parts += [self.token_glitches[phase] for phase in token_resets]
        return " or ".join(parts)

    def lookback(self) -> dict[str, str]:
        """What is asked every utilization.refresh (with the follow-up, when there is one)."""
        return {"peak_tokens": self.refresh}


# Requests per cycle at most: the per-cycle queries, and one with the follow-up and (every
# utilization.refresh) the look-back.
MAX_PER_CYCLE = 8
# Queries whose failure fails the cycle; the others degrade one figure.
REQUIRED = ("gpu_count", "tokens")
