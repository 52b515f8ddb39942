"""The demo's live grid: simulated Electricity Maps and WattTime stand-ins on loopback (a
simulated day every 20 minutes, not real data), with throwaway credentials, and the
`grid.live` section that points the exporter at them."""

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
    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="llm-carbon-demo-")
        token, password = secrets.token_hex(12), secrets.token_hex(12)
        self.token_file = Path(self._dir.name) / "electricitymaps-token"
        self.password_file = Path(self._dir.name) / "watttime-password"
        self.token_file.write_text(token)
        self.password_file.write_text(password)
        self.location = GridStandIn(
            ELECTRICITYMAPS, dict(LOCATION), token=token, period_s=60, method=SIMULATED
        )
        self.location.shape = solar_dip
        self.marginal = GridStandIn(
            WATTTIME, dict(MARGINAL), username="demo", password=password, period_s=60
        )
        self.marginal.shape = gas_margin

    def start(self) -> SimulatedGrid:
        self.location.start()
        self.marginal.start()
        return self

    def stop(self) -> None:
        self.location.stop()
        self.marginal.stop()
        self._dir.cleanup()

    def live(self) -> list[dict[str, Any]]:
        """grid.live for the exporter: both providers, refreshed every 10 s."""
        common = {"refresh": "10s", "max_age": "10m"}
        return [
            {
                "provider": ELECTRICITYMAPS,
                "url": self.location.url,
                "token_file": str(self.token_file),
                "zones": dict(ZONES),
                **common,
            },
            {
                "provider": WATTTIME,
                "url": self.marginal.url,
                "username": "demo",
                "password_file": str(self.password_file),
                "zones": dict(REGIONS),
                **common,
            },
        ]

    def describe(self) -> str:
        return (
            f"SIMULATED Electricity Maps ({self.location.url}) and WattTime "
            f"({self.marginal.url}) stand-ins: not real data, a simulated day every "
            f"{DAY_S / 60:g} minutes"
        )
