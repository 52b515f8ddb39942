"""The demo's live grid: simulated Electricity Maps and WattTime stand-ins on loopback (a
simulated day every 20 minutes, not real data), with throwaway credentials, and the
`grid.live` section that points the exporter at them. The integration tests run the same
with values of their own."""

from __future__ import annotations

import math
import secrets
import tempfile
from pathlib import Path
from typing import Any

from exporter.demo.grid_standin import ELECTRICITYMAPS, WATTTIME, GridStandIn

DAY_S = 1200.0  # one simulated day
SIMULATED = "SIMULATED"  # the estimationMethod the stand-in reports: shown on /metrics
# Simulated daily means per zone, near the regions' annual values; location in g/kWh,
# marginal in lb/MWh (what each API serves).
LOCATION = {"US-CAL-CISO": 210.0, "US-CENT-SWPP": 420.0, "US-NY-NYIS": 250.0}
MARGINAL = {"CAISO_NORTH": 880.0}
ZONES = {"CAMX": "US-CAL-CISO", "MROW": "US-CENT-SWPP", "NYCW": "US-NY-NYIS"}
REGIONS = {"CAMX": "CAISO_NORTH"}


def solar_dip(t: float) -> float:
    """Intensity relative to the daily mean: lowest at simulated noon, highest at night."""
    return 1.0 - 0.4 * math.sin(2 * math.pi * (t % DAY_S) / DAY_S)


def gas_margin(t: float) -> float:
    """The marginal plant changes less than the mix: a smaller swing, later in the day."""
    return 1.0 + 0.1 * math.sin(2 * math.pi * (t % DAY_S) / DAY_S + 1.0)


class SimulatedGrid:
    """An Electricity Maps and a WattTime stand-in with throwaway credentials. The defaults
    are the demo's; the tests give their own values, zones and timing."""

    def __init__(
        self,
        location: dict[str, float | None] | None = None,
        marginal: dict[str, float | None] | None = None,
        zones: dict[str, str] | None = None,
        regions: dict[str, str] | None = None,
        period_s: float = 60.0,
        refresh: str = "10s",
        max_age: str = "10m",
        method: str | None = SIMULATED,
        simulated_day: bool = True,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="llm-carbon-grid-")
        token, password = secrets.token_hex(12), secrets.token_hex(12)
        self.token_file = Path(self._dir.name) / "electricitymaps-token"
        self.password_file = Path(self._dir.name) / "watttime-password"
        self.token_file.write_text(token)
        self.password_file.write_text(password)
        self.zones = dict(ZONES if zones is None else zones)
        self.regions = dict(REGIONS if regions is None else regions)
        self.timing = {"refresh": refresh, "max_age": max_age}
        self.location = GridStandIn(
            ELECTRICITYMAPS,
            dict(LOCATION if location is None else location),
            token=token,
            period_s=period_s,
            method=method,
        )
        self.marginal = GridStandIn(
            WATTTIME,
            dict(MARGINAL if marginal is None else marginal),
            username="demo",
            password=password,
            period_s=period_s,
        )
        if simulated_day:
            self.location.shape, self.marginal.shape = solar_dip, gas_margin

    def start(self) -> SimulatedGrid:
        self.location.start()
        self.marginal.start()
        return self

    def stop(self) -> None:
        self.location.stop()
        self.marginal.stop()
        self._dir.cleanup()

    def live(self) -> list[dict[str, Any]]:
        """grid.live for the exporter: both providers (a provider without zones left out)."""
        return [
            entry
            for entry in (
                {
                    "provider": ELECTRICITYMAPS,
                    "url": self.location.url,
                    "token_file": str(self.token_file),
                    "zones": self.zones,
                    **self.timing,
                },
                {
                    "provider": WATTTIME,
                    "url": self.marginal.url,
                    "username": "demo",
                    "password_file": str(self.password_file),
                    "zones": self.regions,
                    **self.timing,
                },
            )
            if entry["zones"]
        ]

    def describe(self) -> str:
        return (
            f"SIMULATED Electricity Maps ({self.location.url}) and WattTime "
            f"({self.marginal.url}) stand-ins: not real data, a simulated day every "
            f"{DAY_S / 60:g} minutes"
        )
