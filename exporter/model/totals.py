"""The energy and CO2 counters: each model's window-mean power integrated over the time
between cycles, kept for the life of the process (and forgotten after a day unseen)."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.model.figures import SCOPES, ModelFigures
from exporter.model.snapshot import Key

TTL_SECONDS = 86400.0  # forget the counters of a model unseen this long


class Totals:
    def __init__(self, window: float) -> None:
        self.window = window  # power is a mean over this many seconds
        self.energy: dict[Key, dict[str, float]] = {}
        self.co2: dict[Key, dict[tuple[str, str], float]] = {}
        self.last_seen: dict[Key, float] = {}
        self.embodied: dict[Key, float] = {}
        self._integrated_at: dict[Key, float] = {}

    def integrate(self, models: Iterable[ModelFigures], now: float) -> list[Key]:
        """Advance the counters by mean power x elapsed time; returns the models forgotten.

        The elapsed time is capped at the window: power is only known as a mean over it. A
        model missing from a successful cycle restarts its clock when it returns, as on a
        first sighting: nothing is known of its power while it was gone."""
        models = list(models)
        present = {f.key for f in models}
        for key in [k for k in self._integrated_at if k not in present]:
            del self._integrated_at[key]
        for f in models:
            self._advance(f, now)
        stale = [k for k, seen in self.last_seen.items() if now - seen > TTL_SECONDS]
        for key in stale:
            for table in (
                self.energy,
                self.co2,
                self.embodied,
                self._integrated_at,
                self.last_seen,
            ):
                table.pop(key, None)
        return stale

    def _advance(self, f: ModelFigures, now: float) -> None:
        key = f.key
        self.last_seen[key] = now
        energy = self.energy.setdefault(key, dict.fromkeys(SCOPES, 0.0))
        co2 = self.co2.setdefault(key, {})
        for scope_basis in f.co2_grams_per_hour:
            co2.setdefault(scope_basis, 0.0)
        embodied_per_hour = f.footprint.embodied_grams_per_hour
        if embodied_per_hour is not None:
            self.embodied.setdefault(key, 0.0)
        if not f.power_w:
            self._integrated_at.pop(key, None)
            return
        previous = self._integrated_at.get(key)
        self._integrated_at[key] = now
        if previous is None or now <= previous:
            return
        elapsed = min(now - previous, self.window)
        for scope, watts in f.power_w.items():
            energy[scope] += watts * elapsed
        for scope_basis, grams_per_hour in f.co2_grams_per_hour.items():
            co2[scope_basis] += grams_per_hour / 3600.0 * elapsed
        if embodied_per_hour is not None:
            self.embodied[key] += embodied_per_hour / 3600.0 * elapsed
