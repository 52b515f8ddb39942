"""WattTime API v3: the current marginal operating emission rate (MOER) of a region, for the
marginal basis.

Log in with HTTP Basic at `{url}/login` for a bearer token ("Your access token will expire
after 30 minutes"); read `GET {url}/v3/forecast?region=R&signal_type=co2_moer`, whose first
point "holds data that applies to the current time period, aka the real-time data point" and
"should be relied on exclusively for real-time services" (WattTime's v3 OpenAPI description
and transition guide). Values are in lbs CO2/MWh (`meta.units`); g/kWh = lb/MWh x 0.45359237.

`horizon_hours=1`: the smallest horizon the published schema allows (0 appears only in the
SDK and the transition guide), so one answer is twelve 5-minute points, not 288.

A token is renewed five minutes before its 30 minutes are up, and once more on a 401 or 403
(v3 documents neither for an expired token; WattTime's v2 answered 403, the Carbon Aware SDK
retries once on both). A region that answers 403 to a token just obtained is outside the plan:
its 403s are taken at their word until it answers again, without logging in for each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from exporter.model.grid import LB_PER_MWH_TO_G_PER_KWH
from exporter.model.intensity import LiveValue
from exporter.model.problems import MALFORMED, UpstreamError
from exporter.sources.grid_providers import (
    TIMEOUT_S,
    HttpProvider,
    answer_json,
    intensity,
    timestamp,
)
from exporter.sources.http import HttpResponse
from exporter.text import redact

DEFAULT_URL = "https://api.watttime.org"
LOGIN = "/login"
FORECAST = "/v3/forecast"
SIGNAL = "co2_moer"
UNITS = "lbs_co2_per_mwh"
TOKEN_LIFETIME_S = 1800.0
RENEW_BEFORE_S = 300.0


class WattTime(HttpProvider):
    name = "watttime"
    basis = "marginal"

    def __init__(
        self,
        username: str,
        password_file: str,
        url: str | None = None,
        timeout: float = TIMEOUT_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(url or DEFAULT_URL, timeout, clock, basic_auth=(username, password_file))
        self._token: str | None = None
        self._token_at = 0.0
        self.logins = 0
        self._forbidden: set[str] = set()  # regions that refused a fresh token (403)

    def fetch(self, zone: str) -> LiveValue:
        where = f"{redact(self.url)}{FORECAST} (region {zone})"
        logins = self.logins
        response = self._forecast(zone)
        fresh = self.logins != logins  # the token was obtained for this request
        if response.status == 401 or (
            response.status == 403 and not fresh and zone not in self._forbidden
        ):
            self._token = None  # expired or revoked: log in again, once
            response = self._forecast(zone)
        if response.status == 403:
            self._forbidden.add(zone)
        else:
            self._forbidden.discard(zone)
        now = self.clock()
        return current(answer_json(self.http, response, where, now), zone, now)

    def _forecast(self, zone: str) -> HttpResponse:
        params = {"region": zone, "signal_type": SIGNAL, "horizon_hours": "1"}
        bearer = {"Authorization": f"Bearer {self._bearer()}"}
        return self.http.fetch(self.url + FORECAST, params, auth=bearer)

    def _bearer(self) -> str:
        """A token with at least five of its 30 minutes left, logging in if needed."""
        now = self.clock()
        if self._token is None or now - self._token_at >= TOKEN_LIFETIME_S - RENEW_BEFORE_S:
            self._token = self._login()
            self._token_at = now
        return self._token

    def _login(self) -> str:
        where = f"{redact(self.url)}{LOGIN}"
        self.logins += 1
        response = self.http.fetch(self.url + LOGIN)
        if response.status >= 300:
            where = f"{where} (check username and password_file)"
            answer_json(self.http, response, where, self.clock())
        try:
            token = answer_json(self.http, response, where, self.clock()).get("token")
        except UpstreamError:
            token = None  # never echo a login answer: it may hold the token
        if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
            raise UpstreamError(MALFORMED, f"{where} answered without a usable token")
        return token


def current(body: Mapping[str, Any], zone: str, now: float) -> LiveValue:
    """The point of a forecast answer in force at `now` (the last one that has begun; the
    first if none has), in g/kWh, checked: co2_moer in lb/MWh, for `zone`. It dates from
    its point's time or the forecast's `meta.generated_at`, whichever is older: a forecast
    WattTime stopped renewing ages as its data does."""
    where = f"WattTime region {zone}"
    meta = body.get("meta")
    data = body.get("data")
    if not isinstance(meta, dict) or not isinstance(data, list) or not data:
        raise UpstreamError(MALFORMED, f"{where}: no meta, or no data points")
    for key, wanted in (("units", UNITS), ("signal_type", SIGNAL), ("region", zone)):
        got = meta.get(key, wanted if key != "units" else None)
        if got != wanted:
            raise UpstreamError(
                MALFORMED, f"{where}: meta.{key} is {str(got)[:40]!r}, not {wanted}"
            )
    points = []
    for point in data:
        if not isinstance(point, dict):
            raise UpstreamError(MALFORMED, f"{where}: a data point is not an object")
        points.append((timestamp(point.get("point_time"), "point_time", where), point))
    begun = [p for p in points if p[0] <= now]
    at, point = max(begun, key=lambda p: p[0]) if begun else min(points, key=lambda p: p[0])
    pounds = intensity(point.get("value"), "value", where)
    if meta.get("generated_at") is not None:
        at = min(at, timestamp(meta["generated_at"], "meta.generated_at", where))
    return LiveValue(pounds * LB_PER_MWH_TO_G_PER_KWH, at, estimated=True, method="forecast")
