"""The Electricity Maps and WattTime providers against the stand-ins on loopback (real HTTP,
as the providers document their APIs): requests and credentials on the wire, the values and
units read, every failure an UpstreamError with a reason, WattTime's token renewed before it
expires and once when refused, and no secret in any message."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.demo.grid_standin import ELECTRICITYMAPS, WATTTIME, Fault, GridStandIn
from exporter.model.problems import (
    AUTH_FILE,
    CONNECT,
    HTTP_STATUS,
    INVALID_VALUE,
    MALFORMED,
    TIMEOUT,
    UpstreamError,
)
from exporter.sources.electricitymaps import ElectricityMaps
from exporter.sources.grid_providers import RetryLater
from exporter.sources.watttime import RENEW_BEFORE_S, TOKEN_LIFETIME_S, WattTime, current

EM_TOKEN = "em-key-0123456789"
WT_PASSWORD = "wt: pässword"
LB = 0.45359237


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def em() -> Iterator[GridStandIn]:
    server = GridStandIn(ELECTRICITYMAPS, {"US-CAL-CISO": 151, "KR": None}, token=EM_TOKEN)
    yield server.start()
    server.stop()


@pytest.fixture
def wt() -> Iterator[GridStandIn]:
    server = GridStandIn(WATTTIME, {"CAISO_NORTH": 900.0}, username="nrp", password=WT_PASSWORD)
    yield server.start()
    server.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(EM_TOKEN + "\n")
    return path


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(WT_PASSWORD + "\n")
    return path


def failure(call, reason: str) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        call()
    assert caught.value.reason == reason, str(caught.value)
    return caught.value


# ---------------------------------------------------------------- Electricity Maps


def test_em_request_on_the_wire_and_the_value(em: GridStandIn, token_file: Path) -> None:
    provider = ElectricityMaps(str(token_file), em.url + "/")
    value = provider.fetch("US-CAL-CISO")
    assert value.grams_per_kwh == 151.0
    assert value.at == time.time() // 3600 * 3600  # the hour it applies to
    assert not value.estimated and value.method == ""
    [seen] = em.requests
    assert seen.path == "/v3/carbon-intensity/latest"
    assert seen.params == {"zone": "US-CAL-CISO", "emissionFactorType": "direct"}
    assert seen.headers["auth-token"] == EM_TOKEN
    assert "authorization" not in seen.headers
    assert seen.headers["accept"] == "application/json"
    token_file.write_text("rotated-key")
    failure(lambda: provider.fetch("US-CAL-CISO"), HTTP_STATUS)  # re-read: the new key is sent
    assert em.requests[-1].headers["auth-token"] == "rotated-key"
    assert provider.requests_made == 2


def test_em_lifecycle_and_estimates(em: GridStandIn, token_file: Path) -> None:
    em.method = "TIME_SLICER_AVERAGE"
    value = ElectricityMaps(str(token_file), em.url, "lifecycle").fetch("US-CAL-CISO")
    assert em.requests[0].params["emissionFactorType"] == "lifecycle"
    assert value.estimated and value.method == "TIME_SLICER_AVERAGE"


def answer(**changes: object) -> bytes:
    body = {
        "zone": "US-CAL-CISO",
        "carbonIntensity": 151,
        "datetime": "2026-11-26T12:00:00.000Z",
        "updatedAt": "2026-11-26T11:45:00.000Z",
        "emissionFactorType": "direct",
        "isEstimated": False,
        "estimationMethod": None,
    }
    return json.dumps({**body, **changes}).encode()


@pytest.mark.parametrize(
    ("fault", "reason", "says"),
    [
        (Fault(body=answer(carbonIntensity=None)), INVALID_VALUE, "carbonIntensity is 'None'"),
        (Fault(body=answer(carbonIntensity=-3)), INVALID_VALUE, "carbonIntensity is -3"),
        (Fault(body=answer(zone="US-NY-NYIS")), MALFORMED, "answer is for zone 'US-NY-NYIS'"),
        (Fault(body=answer(emissionFactorType="lifecycle")), MALFORMED, "got 'lifecycle'"),
        (Fault(body=answer(datetime="yesterday")), MALFORMED, "datetime 'yesterday'"),
        (Fault(body=answer(datetime="2026-11-26T12:00:00")), MALFORMED, "with a time zone"),
        (Fault(body=b"<html>maintenance</html>"), MALFORMED, "did not answer a JSON object"),
        (Fault(body=b'{"zone": "US-CAL'), MALFORMED, "did not answer a JSON object"),
        (Fault(status=500, body=b"upstream exploded"), HTTP_STATUS, "HTTP 500"),
        (Fault(status=503), HTTP_STATUS, "HTTP 503"),
    ],
)
def test_em_bad_answers(
    em: GridStandIn, token_file: Path, fault: Fault, reason: str, says: str
) -> None:
    em.faults.append(fault)
    error = failure(lambda: ElectricityMaps(str(token_file), em.url).fetch("US-CAL-CISO"), reason)
    assert says in str(error)
    assert "US-CAL-CISO" in str(error)


def test_em_null_value_as_the_stand_in_serves_it(em: GridStandIn, token_file: Path) -> None:
    failure(lambda: ElectricityMaps(str(token_file), em.url).fetch("KR"), INVALID_VALUE)


def test_em_refusals_say_why_without_the_key(em: GridStandIn, token_file: Path) -> None:
    token_file.write_text("wrong-key")
    error = failure(lambda: ElectricityMaps(str(token_file), em.url).fetch("KR"), HTTP_STATUS)
    assert "HTTP 401" in str(error) and "The provided token is invalid" in str(error)
    # A server that echoes the key back in its error: it is scrubbed.
    token_file.write_text(EM_TOKEN)
    em.faults.append(Fault(status=401, body=f'{{"error": "bad key {EM_TOKEN}"}}'.encode()))
    error = failure(lambda: ElectricityMaps(str(token_file), em.url).fetch("KR"), HTTP_STATUS)
    assert EM_TOKEN not in str(error) and "<redacted>" in str(error)
    # Echoed where the message's 300 characters of the error would cut it: none of it shows.
    error_text = "x" * 290 + " " + EM_TOKEN
    em.faults.append(Fault(status=401, body=json.dumps({"error": error_text}).encode()))
    error = failure(lambda: ElectricityMaps(str(token_file), em.url).fetch("KR"), HTTP_STATUS)
    assert EM_TOKEN[:8] not in str(error)
    unknown = failure(lambda: ElectricityMaps(str(token_file), em.url).fetch("XX"), HTTP_STATUS)
    assert "HTTP 404" in str(unknown)


def test_em_429_carries_retry_after(em: GridStandIn, token_file: Path) -> None:
    em.faults.append(Fault(status=429, headers={"Retry-After": "120"}))
    with pytest.raises(RetryLater) as caught:
        ElectricityMaps(str(token_file), em.url).fetch("US-CAL-CISO")
    assert caught.value.retry_after == 120 and caught.value.reason == HTTP_STATUS


def test_em_slow_dead_and_keyless(em: GridStandIn, token_file: Path, tmp_path: Path) -> None:
    em.faults.append(Fault(delay=3.0))
    slow = ElectricityMaps(str(token_file), em.url, timeout=0.3)
    started = time.monotonic()
    failure(lambda: slow.fetch("US-CAL-CISO"), TIMEOUT)
    assert time.monotonic() - started < 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    failure(lambda: ElectricityMaps(str(token_file), closed).fetch("KR"), CONNECT)
    asked = len(em.requests)
    missing = str(tmp_path / "no-such-token")
    error = failure(lambda: ElectricityMaps(missing, em.url).fetch("KR"), AUTH_FILE)
    assert missing in str(error) and len(em.requests) == asked  # nothing sent without a key


# ---------------------------------------------------------------- WattTime


def test_wt_login_then_bearer_on_the_wire(wt: GridStandIn, password_file: Path) -> None:
    provider = WattTime("nrp", str(password_file), wt.url)
    value = provider.fetch("CAISO_NORTH")
    assert value.grams_per_kwh == pytest.approx(900 * LB)
    assert value.at == time.time() // 300 * 300  # the current 5-minute point
    assert value.estimated and value.method == "forecast"
    login, data = wt.requests
    assert login.path == "/login"
    basic = base64.b64decode(login.headers["authorization"].removeprefix("Basic "))
    assert basic.decode() == f"nrp:{WT_PASSWORD}"
    assert data.path == "/v3/forecast"
    assert data.params == {"region": "CAISO_NORTH", "signal_type": "co2_moer", "horizon_hours": "1"}
    [token] = wt.tokens
    assert data.headers["authorization"] == f"Bearer {token}"
    provider.fetch("CAISO_NORTH")
    assert [r.path for r in wt.requests][2:] == ["/v3/forecast"]  # the token is reused


def test_wt_renews_the_token_five_minutes_before_it_expires(
    wt: GridStandIn, password_file: Path
) -> None:
    now = [time.time()]
    provider = WattTime("nrp", str(password_file), wt.url, clock=lambda: now[0])
    provider.fetch("CAISO_NORTH")
    now[0] += TOKEN_LIFETIME_S - RENEW_BEFORE_S - 1
    provider.fetch("CAISO_NORTH")
    assert provider.logins == 1
    now[0] += 2
    provider.fetch("CAISO_NORTH")
    assert provider.logins == 2
    assert [r.path for r in wt.requests] == [
        "/login",
        *["/v3/forecast"] * 2,
        "/login",
        "/v3/forecast",
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_wt_token_expiring_mid_run_logs_in_once_more(
    wt: GridStandIn, password_file: Path, status: int
) -> None:
    wt.token_lifetime_s, wt.expired_status = 0.3, status
    provider = WattTime("nrp", str(password_file), wt.url)
    provider.fetch("CAISO_NORTH")
    time.sleep(0.5)  # the server's token expired; the exporter's 30 minutes have not
    value = provider.fetch("CAISO_NORTH")
    assert value.grams_per_kwh == pytest.approx(900 * LB)
    paths = [r.path for r in wt.requests]
    assert paths == ["/login", "/v3/forecast", "/v3/forecast", "/login", "/v3/forecast"]
    assert provider.logins == 2


def test_wt_a_region_outside_the_plan_gives_up_with_the_reason_without_logging_in_again(
    wt: GridStandIn, password_file: Path
) -> None:
    provider = WattTime("nrp", str(password_file), wt.url)
    provider.fetch("CAISO_NORTH")
    for _ in range(3):  # a token in use: one more login, then the 403 is taken at its word
        error = failure(lambda: provider.fetch("PJM_NJ"), HTTP_STATUS)
        assert "HTTP 403" in str(error) and "Invalid scope" in str(error)
        assert "PJM_NJ" in str(error)
    paths = [r.path for r in wt.requests]
    assert paths == ["/login", "/v3/forecast", "/v3/forecast", "/login", *["/v3/forecast"] * 3]
    # A 403 to a token logged in for the request itself is not an expired token.
    fresh = WattTime("nrp", str(password_file), wt.url)
    failure(lambda: fresh.fetch("PJM_NJ"), HTTP_STATUS)
    assert fresh.logins == 1


def test_wt_wrong_password_says_where_without_it(wt: GridStandIn, password_file: Path) -> None:
    password_file.write_text("guess")
    error = failure(lambda: WattTime("nrp", str(password_file), wt.url).fetch("X"), HTTP_STATUS)
    text = str(error)
    assert "HTTP 403" in text and "/login" in text and "password_file" in text
    assert "guess" not in text and base64.b64encode(b"nrp:guess").decode() not in text


@pytest.mark.parametrize(
    "body", [b'{"token": ""}', b"{}", b"tok-123-plain", b'{"token": "two words"}']
)
def test_wt_login_without_a_usable_token_never_echoes_it(
    wt: GridStandIn, password_file: Path, body: bytes
) -> None:
    wt.faults.append(Fault(body=body, path="/login"))
    error = failure(lambda: WattTime("nrp", str(password_file), wt.url).fetch("X"), MALFORMED)
    assert "without a usable token" in str(error) and "tok-123" not in str(error)


def test_wt_a_token_echoed_in_an_error_is_scrubbed(wt: GridStandIn, password_file: Path) -> None:
    provider = WattTime("nrp", str(password_file), wt.url)
    provider.fetch("CAISO_NORTH")
    [token] = wt.tokens
    wt.faults.append(Fault(status=500, body=f"token {token} rejected".encode()))
    error = failure(lambda: provider.fetch("CAISO_NORTH"), HTTP_STATUS)
    assert token not in str(error)


def test_wt_429_and_a_percentile_answer(wt: GridStandIn, password_file: Path) -> None:
    provider = WattTime("nrp", str(password_file), wt.url)
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 300))
    wt.faults.append(Fault(status=429, headers={"Retry-After": later}, path="/login"))
    with pytest.raises(RetryLater) as login:  # "100 requests in 5 minutes" on /login
        provider.fetch("CAISO_NORTH")
    assert login.value.retry_after == pytest.approx(300, abs=2)
    wt.faults.append(Fault(status=429, headers={"Retry-After": "30"}, path="/v3/forecast"))
    with pytest.raises(RetryLater) as caught:
        provider.fetch("CAISO_NORTH")
    assert caught.value.retry_after == 30
    index = {
        "data": [{"point_time": "2024-06-18T18:40:00+00:00", "value": 96.0}],
        "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "percentile"},
    }
    wt.faults.append(Fault(body=json.dumps(index).encode(), path="/v3/forecast"))
    error = failure(lambda: provider.fetch("CAISO_NORTH"), MALFORMED)
    assert "meta.units is 'percentile'" in str(error)  # an index is not a rate in lb/MWh


def test_wt_the_point_in_force_is_the_last_that_has_begun() -> None:
    t0 = 1_800_000_000.0 // 300 * 300
    body = {
        "data": [
            {"point_time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t)), "value": v}
            for t, v in ((t0, 800), (t0 + 300, 700), (t0 + 600, 600))
        ],
        "meta": {"region": "R", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh"},
    }
    assert current(body, "R", t0 + 400).grams_per_kwh == pytest.approx(700 * LB)
    assert current(body, "R", t0 + 400).at == t0 + 300
    assert current(body, "R", t0 - 10).at == t0  # none begun yet: the first
    with pytest.raises(UpstreamError, match=r"meta\.region"):
        current(body, "OTHER", t0)
    with pytest.raises(UpstreamError, match="no meta, or no data"):
        current({**body, "data": []}, "R", t0)


def test_wt_a_forecast_generated_long_ago_dates_from_its_generation() -> None:
    # WattTime renews its forecast every five minutes; one generated two hours before its
    # point in force is two hours old, however recent that point's time.
    t0 = 1_800_000_000.0 // 300 * 300
    body = {
        "data": [{"point_time": iso(t0 + 300 * i), "value": 800} for i in range(12)],
        "meta": {
            "region": "R",
            "signal_type": "co2_moer",
            "units": "lbs_co2_per_mwh",
            "generated_at": iso(t0),
        },
    }
    assert current(body, "R", t0 + 3000).at == t0  # generated before its point 10
    assert current(body, "R", t0 + 100).at == t0  # fresh: the point's own time
    body["meta"]["generated_at"] = "yesterday"
    with pytest.raises(UpstreamError, match=r"meta\.generated_at 'yesterday'"):
        current(body, "R", t0)


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
