"""The cycle: fetch an observation, compute every model's figures, integrate the energy and
CO2 counters, and swap in a new immutable state. Scrapes only ever read `Engine.state`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from exporter.config import Config
from exporter.model import figures as fig
from exporter.model.intensity import GridIntensities, Slot, in_force
from exporter.model.interfaces import GridFeed, Source
from exporter.model.join import ServedModel, join
from exporter.model.lookback import LookbackTracker
from exporter.model.observations import ModelHistory, Observation
from exporter.model.problems import INTERNAL, MISSING_SERIES, Problem, UpstreamError, pod_ref
from exporter.model.settings import FigureSettings
from exporter.model.snapshot import Key, Snapshot
from exporter.model.totals import Totals

log = logging.getLogger("exporter")


@dataclass(frozen=True)
class EngineState:
    """What a scrape sees: the last good snapshot plus the exporter's own health."""

    snapshot: Snapshot | None = None
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    last_cycle_ok: bool = False
    up: Mapping[str, bool] = field(default_factory=dict)  # per upstream, as of the last cycle
    cycle_duration_seconds: float | None = None
    errors_total: Mapping[tuple[str, str], int] = field(default_factory=dict)
    requests_total: Mapping[str, int] = field(default_factory=dict)
    version: int = 0  # increases with every published state (ids of freed objects recur)
    # Why the last cycle failed, one problem per upstream that failed (empty after a good
    # cycle): what the landing page says while figures are not current. Messages carry no
    # credentials (the sources scrub them).
    failure: tuple[Problem, ...] = ()
    # What was wrong upstream in the last good cycle, as logged (sorted by upstream, message).
    problems: tuple[Problem, ...] = ()


class Engine:
    def __init__(
        self,
        config: Config,
        source: Source,
        clock: Callable[[], float] | None = None,
        grid: GridFeed | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.grid = grid
        self.settings = FigureSettings.from_config(config)
        self.clock = clock or (lambda: time.time())  # late-bound: freezegun can move it
        self.state = EngineState()
        self._totals = Totals(source.window)
        self._last_problems: frozenset[Problem] = frozenset()
        self._failures = 0
        self._last_dropped = 0
        self._notices: list[Problem] = []
        self._lookback = LookbackTracker(
            config.utilization.lookback,
            min_idle_w_per_gpu=config.underutilized.min_power_watts_per_gpu or 0.0,
        )
        self._hardware: dict[Key, tuple[str, ...]] = {}  # each model's GPU products
        self.listeners: list[Callable[[], None]] = []  # called after each published state
        self.ready = threading.Event()
        self._fallen_back: frozenset[Slot] = frozenset()

    @property
    def upstreams(self) -> tuple[str, ...]:
        """The source's upstreams, then the live grid providers."""
        return self.source.upstreams + (self.grid.upstreams if self.grid else ())

    def close(self) -> None:
        self.source.close()
        if self.grid is not None:
            self.grid.close()

    # ---- health, as scrapes see it

    def is_stale(self, state: EngineState | None = None, now: float | None = None) -> bool:
        """True when `state`'s (default: the current state's) last good cycle is older than
        `stale_after` intervals. Pass the state you render, read once: a new one may be
        published between two reads."""
        state = self.state if state is None else state
        if state.last_success_at is None:
            return True
        now = self.clock() if now is None else now
        limit = self.config.exporter.stale_after * self.config.exporter.interval
        return now - state.last_success_at > limit

    # ---- one cycle

    def run_cycle(self) -> bool:
        """Fetch and compute once; True on success. Never raises for upstream trouble."""
        started = time.monotonic()
        attempt_at = self.clock()
        errors = dict(self.state.errors_total)
        try:
            observation = self.source.fetch()
        except UpstreamError as exc:
            self._failures += 1
            up = dict(self.state.up)
            failures = []
            for failure in (exc, *exc.also):
                upstream = failure.upstream or self.source.upstreams[0]
                errors[(upstream, failure.reason)] = errors.get((upstream, failure.reason), 0) + 1
                up[upstream] = False
                failures.append(failure.problem(upstream))
            self._log_failure(tuple(failures))
            self._publish(
                attempt_at, started, ok=False, errors=errors, up=up, failure=tuple(failures)
            )
            return False
        for problem in observation.problems:
            key = (problem.upstream, problem.reason)
            errors[key] = errors.get(key, 0) + 1
        if self._failures:
            log.info(
                "upstream %s recovered after %d failed cycle(s)",
                ",".join(self.source.upstreams),
                self._failures,
            )
            self._failures = 0

        snapshot = self.compute(observation)
        self._log_once(observation)
        up = {u: u not in observation.blind for u in self.source.upstreams}
        self._publish(attempt_at, started, ok=True, errors=errors, snapshot=snapshot, up=up)
        self.ready.set()
        return True

    def compute(self, observation: Observation) -> Snapshot:
        """Figures for every served model in `observation`, and the counters they advance."""
        served = join(observation)
        limit = self.config.exporter.max_models
        dropped = 0
        if len(served) > limit:
            # Keep the models drawing the most power; say how many were dropped.
            power = {s.key: sum(p.power_w for p in s.pods) for s in served}
            keep = set(sorted(power, key=lambda k: (-power[k], k))[:limit])
            dropped = len(served) - limit
            served = [s for s in served if s.key in keep]
            if dropped != self._last_dropped:
                log.warning("%d models over exporter.max_models=%d were dropped", dropped, limit)
        self._last_dropped = dropped
        for s in served:
            self._check_hardware(s)
        grid = self._grid(observation.time)
        models = tuple(
            fig.compute(s, self.settings, self._history(observation, s.key), grid) for s in served
        )
        for s, f in zip(served, models, strict=True):
            attributed_gpus = sum(p.gpu_equivalents for p in s.pods)  # what the power is of
            self._lookback.observe(
                f.key,
                observation.time,
                f.total_tokens_per_second,
                f.active,
                f.power_w.get("gpu"),
                attributed_gpus,
            )
        self._lookback.prune(observation.time)
        for key in self._totals.integrate(models, observation.time):
            self._hardware.pop(key, None)
        self._notices = [
            Problem(
                self.source.gpu_upstream,
                MISSING_SERIES,
                f"model {s.namespace}/{s.model}: pods {', '.join(s.pods_without_gpus)} have "
                "token series but no DCGM GPU series; its power figures are withheld",
                frozenset(pod_ref(s.namespace, pod) for pod in s.pods_without_gpus),
            )
            for s in served
            if s.pods_without_gpus
        ]
        nodes = {p.node for s in served for p in s.pods}
        unmapped = sum(1 for node in nodes if not self.settings.node_regions.region_of(node)[1])
        keys = {f.key for f in models}
        return Snapshot(
            taken_at=observation.time,
            models=models,
            energy_joules_total={k: dict(self._totals.energy[k]) for k in keys},
            co2_grams_total={k: dict(self._totals.co2[k]) for k in keys},
            last_seen={k: self._totals.last_seen[k] for k in keys},
            embodied_grams_total={k: v for k, v in self._totals.embodied.items() if k in keys},
            unmapped_nodes=unmapped,
            nodes=len(nodes),
            pods_without_gpus=sum(len(s.pods_without_gpus) for s in served),
            models_dropped=dropped,
            grid=grid,
        )

    def _grid(self, now: float) -> GridIntensities:
        """The intensities in force at `now`; a live value falling back to the annual one
        (or, for marginal, to none) is logged once, and so is its return. Waiting for the
        first value is not falling back, until max_age has passed."""
        slots = self.grid.slots() if self.grid is not None else ()
        grid = in_force(self.settings.regions, slots, now)
        fallen = grid.fallen_back()
        for region, basis in sorted(fallen - self._fallen_back):
            slot = grid.live[(region, basis)]
            why = "none received yet" if slot.value is None else f"older than {slot.max_age:g}s"
            kept = "the annual value is" if basis == "location" else "no value is"
            log.warning(
                "grid region %s: live %s intensity from %s (zone %s) %s; %s in force",
                *(region, basis, slot.source, slot.zone, why, kept),
            )
        for region, basis in sorted(self._fallen_back - fallen):
            log.info("grid region %s: live %s intensity in force again", region, basis)
        self._fallen_back = fallen
        return grid

    # A cycle that fails as the one before did is logged again only every this many cycles.
    REMIND_EVERY = 20

    def _log_failure(self, failures: tuple[Problem, ...]) -> None:
        """A failed cycle's problems at WARNING when they differ from the last cycle's (the
        published state's, empty after a good cycle), else at DEBUG, with a WARNING reminder
        every REMIND_EVERY failed cycles in a row. Compared by upstream, reason and status:
        messages may quote a response body that differs every time."""

        def kinds(problems: tuple[Problem, ...]) -> set[tuple[str, str, int]]:
            return {(p.upstream, p.reason, p.status) for p in problems}

        same = kinds(failures) == kinds(self.state.failure)
        level = logging.DEBUG if same and self._failures % self.REMIND_EVERY else logging.WARNING
        for problem in failures:
            log.log(
                level,
                "upstream %s failed (reason=%s, %d in a row): %s",
                problem.upstream,
                problem.reason,
                self._failures,
                problem.message,
            )

    def _log_once(self, observation: Observation) -> None:
        """Problems are counted every cycle but logged once, while they last; so are the
        notices about pods without GPU series, unless a GPU-side problem names one of their
        pods or the GPU upstream has no usable series at all (either says why already)."""
        gpu_side = self.source.gpu_upstream
        explained = {pod for p in observation.problems if p.upstream == gpu_side for pod in p.pods}
        current = set(observation.problems)
        if gpu_side not in observation.blind:
            current |= {n for n in self._notices if not n.pods & explained}
        for problem in sorted(current - self._last_problems, key=lambda p: p.message):
            log.warning("upstream %s: %s", problem.upstream, problem.message)
        self._last_problems = frozenset(current)

    def _check_hardware(self, served: ServedModel) -> None:
        """A model moved to other GPU products starts its look-back afresh: an idle floor
        and a peak seen on other hardware would misread the new one for a whole look-back."""
        products = tuple(sorted({p.gpu_model for p in served.pods if p.gpu_model}))
        if not products:
            return  # power withheld this cycle: nothing to compare
        before = self._hardware.get(served.key)
        if before is not None and before != products:
            log.info(
                "model %s/%s now runs on %s (was %s): its look-back starts afresh",
                *served.key,
                ", ".join(products),
                ", ".join(before),
            )
            self._lookback.forget(served.key)
        self._hardware[served.key] = products

    def _history(self, observation: Observation, key: Key) -> ModelHistory:
        """The look-back this process has seen, joined with what the source knows (the
        Prometheus source's peak throughput reaches back before this process started)."""
        own = self._lookback.history(key)
        upstream = observation.history.get(key)
        if upstream is None or upstream.peak_tokens_per_second is None:
            return own
        peak = max(upstream.peak_tokens_per_second, own.peak_tokens_per_second or 0.0)
        return ModelHistory(
            peak_tokens_per_second=peak, idle_floor_w_per_gpu=own.idle_floor_w_per_gpu
        )

    def _publish(
        self,
        attempt_at: float,
        started: float,
        *,
        ok: bool,
        errors: dict[tuple[str, str], int],
        snapshot: Snapshot | None = None,
        up: Mapping[str, bool] | None = None,
        failure: tuple[Problem, ...] = (),
    ) -> None:
        previous = self.state
        up = dict(previous.up if up is None else up)
        requests = dict(self.source.requests_by_upstream)
        if self.grid is not None:  # counted by the feed itself, off the cycle
            up.update(self.grid.up)
            errors.update(self.grid.errors_by_upstream)
            requests.update(self.grid.requests_by_upstream)
        self.state = replace(
            previous,
            snapshot=snapshot if snapshot is not None else previous.snapshot,
            last_attempt_at=attempt_at,
            last_success_at=attempt_at if ok else previous.last_success_at,
            last_cycle_ok=ok,
            up=up,
            cycle_duration_seconds=time.monotonic() - started,
            errors_total=errors,
            requests_total=requests,
            version=previous.version + 1,
            failure=failure,
            problems=(
                tuple(sorted(self._last_problems, key=lambda p: (p.upstream, p.message)))
                if ok
                else previous.problems
            ),
        )
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not stop the cycle
                log.exception("listener failed after a cycle")

    # ---- the loop

    def run_forever(self, stop: threading.Event) -> None:
        """One cycle every `exporter.interval` seconds until `stop` is set."""
        interval = self.config.exporter.interval
        next_start = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.run_cycle()
            except Exception:  # a bug must not kill the loop: say so and keep serving
                log.exception("cycle failed unexpectedly")
                errors = dict(self.state.errors_total)
                key = (self.source.upstreams[0], INTERNAL)
                errors[key] = errors.get(key, 0) + 1
                down = dict.fromkeys(self.source.upstreams, False)
                bug = Problem(key[0], INTERNAL, "the exporter failed unexpectedly (see its log)")
                self._publish(
                    self.clock(), started, ok=False, errors=errors, up=down, failure=(bug,)
                )
            next_start += interval
            now = time.monotonic()
            if next_start < now:  # a slow cycle: skip the missed slots
                next_start = now + interval - ((now - next_start) % interval)
            stop.wait(next_start - now)
