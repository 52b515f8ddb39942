"""Stand-ins for the live grid-intensity APIs, on loopback, serving simulated values: the
demo shows a live basis from them without an API key, and the tests drive the exporter's
providers against them (slow, failing, rate-limited, expiring tokens).

Each speaks its API as the provider documents it; where the documents are silent the
behaviour is this stand-in's own choice, marked "choice" below.

Electricity Maps v3 (API reference, developer hub; auth error bodies from the help centre):
`GET /v3/carbon-intensity/latest?zone=Z[&emissionFactorType=direct|lifecycle]` with header
`auth-token`; 200 with one object: zone, carbonIntensity (gCO2eq/kWh), datetime (the start of
the period the value applies to), updatedAt, createdAt, emissionFactorType (default
lifecycle), isEstimated, estimationMethod. A missing or wrong token: 401 with the documented
bodies (the status is observed, not documented). Unknown zone: 404 (choice).

WattTime v3 (OpenAPI description, transition guide): `GET /login` with HTTP Basic ->
`{"token": ...}`; `GET /v3/forecast?region=R&signal_type=co2_moer[&horizon_hours=H]` with
`Authorization: Bearer`; 200 with `data` points (point_time, value in lbs CO2/MWh) every
data_point_period_seconds from the start of the current period, and `meta` (region,
signal_type, units, warnings, model, generated_at...). Missing region or signal_type: 422; a
region outside the account's plan: 403 "Invalid scope" (status documented, text from v2).
Wrong login: 403 with an HTML page (v2's behaviour; choice). Expired or unknown token: 401 by
default, or 403 (`expired_status`; v3 documents neither: choice)."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ELECTRICITYMAPS, WATTTIME = "electricitymaps", "watttime"
EM_LATEST = "/v3/carbon-intensity/latest"
WT_LOGIN, WT_FORECAST = "/login", "/v3/forecast"
WT_DOCS = "https://www.watttime.org/api-documentation/#introduction"


@dataclass(frozen=True)
class Fault:
    """The answer to one coming request (to `path`, or to any): after `delay` seconds,
    `status` with `body` (raw bytes; None: the usual answer) and `headers`."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    path: str | None = None


@dataclass(frozen=True)
class Seen:
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    at: float


class GridStandIn(ThreadingHTTPServer):
    """One provider's API on 127.0.0.1 (an OS-assigned port). `values`: zone -> value in the
    provider's unit (g/kWh, lb/MWh; None answers a null), scaled by `shape(time)`."""

    daemon_threads = True

    def __init__(
        self,
        api: str,
        values: dict[str, float | None],
        *,
        token: str = "",
        username: str = "",
        password: str = "",
        period_s: float | None = None,
        token_lifetime_s: float = 1800.0,
        expired_status: int = 401,
        method: str | None = None,
        shape: Callable[[float], float] = lambda t: 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api, self.values, self.shape = api, values, shape
        self.token, self.username, self.password = token, username, password
        self.period_s = period_s or (3600.0 if api == ELECTRICITYMAPS else 300.0)
        self.token_lifetime_s, self.expired_status = token_lifetime_s, expired_status
        self.method = method  # Electricity Maps' estimationMethod (None: measured)
        self.clock = clock or (lambda: time.time())
        self.faults: deque[Fault] = deque()
        self.requests: list[Seen] = []
        self.tokens: dict[str, float] = {}  # WattTime token -> expiry
        self.released = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> GridStandIn:
        threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},  # a quick stop
            daemon=True,
            name=f"{self.api}-standin",
        ).start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hung up mid-answer are expected here: quiet."""

    def data_requests(self) -> list[Seen]:
        data = EM_LATEST if self.api == ELECTRICITYMAPS else WT_FORECAST
        return [r for r in self.requests if r.path == data]

    def value(self, zone: str, now: float) -> float | None:
        base = self.values[zone]
        return None if base is None else base * self.shape(now)

    def next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path in (None, path):
                    self.faults.remove(fault)
                    return fault
        return None

    def period_start(self, now: float) -> float:
        return now - now % self.period_s


def iso(t: float, millis: bool = True) -> str:
    moment = datetime.fromtimestamp(t, timezone.utc)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.isoformat(timespec="seconds")


class _Handler(BaseHTTPRequestHandler):
    server: GridStandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        stand_in = self.server
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        with stand_in._lock:
            stand_in.requests.append(Seen(parts.path, params, headers, stand_in.clock()))
        fault = stand_in.next_fault(parts.path)
        if fault is not None and fault.delay:
            stand_in.released.wait(fault.delay)
        if fault is not None and fault.body is not None:
            self._send(fault.status, fault.body, fault.headers)
            return
        answer = _electricitymaps if stand_in.api == ELECTRICITYMAPS else _watttime
        status, body = answer(stand_in, parts.path, params, headers)
        if fault is not None and fault.status != 200:
            status = fault.status
        extra = fault.headers if fault else {}
        if isinstance(body, bytes):
            self._send(status, body, {"Content-Type": "text/html", **extra})
        else:
            self._send(status, json.dumps(body).encode(), extra)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        # A client that gave up (its timeout, in the slow cases) breaks the pipe: expected.
        with contextlib.suppress(OSError):
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


Answer = tuple[int, Any]


def _electricitymaps(
    stand_in: GridStandIn, path: str, params: dict[str, str], headers: dict[str, str]
) -> Answer:
    if path != EM_LATEST:
        return 404, {"error": "Not found", "message": f"no route {path}"}
    given = headers.get("auth-token")
    if given is None:
        return 401, {
            "error": "Invalid auth-token",
            "message": "Please provide a valid authentication header. See "
            "https://portal.electricitymaps.com/docs/getting-started#authorization for details",
        }
    if given != stand_in.token:
        return 401, {
            "error": "Invalid auth-token",
            "message": "The provided token is invalid. If this token used to work, please "
            "visit https://help.electricitymaps.com to get support",
        }
    zone = params.get("zone", "")
    if zone not in stand_in.values:
        return 404, {"error": "Zone not found", "message": f"Unknown zone {zone!r}"}  # choice
    now = stand_in.clock()
    value = stand_in.value(zone, now)
    return 200, {
        "zone": zone,
        "carbonIntensity": None if value is None else round(value, 3),
        "datetime": iso(stand_in.period_start(now)),
        "updatedAt": iso(now),
        "createdAt": iso(now - 3 * 86400),
        "emissionFactorType": params.get("emissionFactorType", "lifecycle"),
        "isEstimated": stand_in.method is not None,
        "estimationMethod": stand_in.method,
    }


def _error(error: str, message: str) -> dict[str, str]:
    return {"error": error, "message": message, "docs": WT_DOCS}


def _watttime(
    stand_in: GridStandIn, path: str, params: dict[str, str], headers: dict[str, str]
) -> Answer:
    now = stand_in.clock()
    if path == WT_LOGIN:
        return _login(stand_in, headers.get("authorization", ""), now)
    if path != WT_FORECAST:
        return 404, _error("NOT_FOUND", f"no route {path}")
    token = headers.get("authorization", "").removeprefix("Bearer ")
    if stand_in.tokens.get(token, 0.0) <= now:
        return stand_in.expired_status, _error("INVALID_TOKEN", "token missing or expired")
    region, signal = params.get("region"), params.get("signal_type")
    hours = params.get("horizon_hours", "24")
    if not region or not signal or not hours.isdigit() or int(hours) > 72:
        return 422, _error("INVALID_QUERY_PARAMS", "region, signal_type and horizon_hours")
    if region not in stand_in.values or signal != "co2_moer":
        return 403, _error(
            "Invalid query parameters",
            "Invalid scope. You do not have sufficient access to this resource. Please note "
            "that all users are allowed free access to CAISO_NORTH.",
        )
    start, step = stand_in.period_start(now), stand_in.period_s
    value = stand_in.value(region, now)
    points = max(1, int(hours) * 3600 // int(step))
    return 200, {
        "data": [
            {"point_time": iso(start + i * step, millis=False), "value": value}
            for i in range(points)
        ],
        "meta": {
            "data_point_period_seconds": int(step),
            "region": region,
            "signal_type": signal,
            "units": "lbs_co2_per_mwh",
            "warnings": [],
            "model": {"date": "2023-03-01"},
            "generated_at_period_seconds": int(step),
            "generated_at": iso(start, millis=False),
        },
    }


def _login(stand_in: GridStandIn, authorization: str, now: float) -> Answer:
    expected = f"{stand_in.username}:{stand_in.password}".encode()
    if authorization != "Basic " + base64.b64encode(expected).decode():
        return 403, b"<html><head><title>403 Forbidden</title></head></html>"  # v2's page
    token = secrets.token_hex(16)
    with stand_in._lock:
        stand_in.tokens[token] = now + stand_in.token_lifetime_s
    return 200, {"token": token}
