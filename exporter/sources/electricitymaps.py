"""Electricity Maps API v3: the latest carbon intensity of a zone, for the location basis.

`GET {url}/v3/carbon-intensity/latest?zone=Z&emissionFactorType=direct` with the API key in
the `auth-token` header; the answer is one object with `zone`, `carbonIntensity` (gCO2eq/kWh),
`datetime` (the period the value applies to), `emissionFactorType`, `isEstimated` and
`estimationMethod` (Electricity Maps' API reference, developer hub and getting-started
pages). Direct (combustion) factors by default: the annual fallback, eGRID's CO2 rates, is
direct too, so falling back does not switch accounting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from exporter.model.intensity import LiveValue
from exporter.model.problems import MALFORMED, UpstreamError
from exporter.sources.grid_providers import (
    TIMEOUT_S,
    HttpProvider,
    answer_json,
    intensity,
    timestamp,
)
from exporter.text import redact

DEFAULT_URL = "https://api.electricitymap.org"
LATEST = "/v3/carbon-intensity/latest"


class ElectricityMaps(HttpProvider):
    name = "electricitymaps"
    basis = "location"

    def __init__(
        self,
        token_file: str,
        url: str | None = None,
        emission_factor_type: str = "direct",
        timeout: float = TIMEOUT_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        auth = {"bearer_token_file": token_file, "token_header": "auth-token"}
        super().__init__(url or DEFAULT_URL, timeout, clock, **auth)
        self.factor_type = emission_factor_type

    def fetch(self, zone: str) -> LiveValue:
        where = f"{redact(self.url)}{LATEST} (zone {zone})"
        params = {"zone": zone, "emissionFactorType": self.factor_type}
        response = self.http.fetch(self.url + LATEST, params)
        return latest(answer_json(self.http, response, where, self.clock()), zone, self.factor_type)


def latest(body: Mapping[str, Any], zone: str, factor_type: str) -> LiveValue:
    """The value of a /latest answer for `zone`, checked: it must be for that zone and, where
    it says, for the emission factors asked for."""
    where = f"Electricity Maps zone {zone}"
    answered = body.get("zone", zone)
    if answered != zone:
        raise UpstreamError(MALFORMED, f"{where}: the answer is for zone {str(answered)[:40]!r}")
    kind = body.get("emissionFactorType", factor_type)
    if kind != factor_type:
        raise UpstreamError(
            MALFORMED, f"{where}: asked for {factor_type} emission factors, got {str(kind)[:20]!r}"
        )
    grams = intensity(body.get("carbonIntensity"), "carbonIntensity", where)
    at = timestamp(body.get("datetime"), "datetime", where)
    method = body.get("estimationMethod")
    return LiveValue(
        grams_per_kwh=grams,
        at=at,
        estimated=body.get("isEstimated") is True,
        method=method if isinstance(method, str) else "",
    )
