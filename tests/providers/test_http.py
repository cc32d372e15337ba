"""The shared broker HTTP layer: error mapping, Retry-After handling, limiter use, timeouts, logging."""

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses
from django.conf import settings
from django.test import override_settings
from structlog.testing import capture_logs

from brokers.providers import ratelimit
from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerConfigurationError,
    BrokerError,
    BrokerRateLimitError,
    BrokerTimeoutError,
    BrokerUnavailableError,
)
from brokers.providers.http import DEFAULT_RATE_LIMIT_WAIT_S, BrokerHTTP, parse_retry_after
from brokers.providers.types import RateLimit
from config.logging import REDACTED, formatter, redact_secrets

BASE = "https://broker.example"
ACCOUNTS = f"{BASE}/v1/accounts"
SECRET = "tok-s3cr3t-9f8e7d"


@pytest.fixture
def http():
    return BrokerHTTP(provider_key="demo", display_name="Demo", base_url=BASE + "/")


@pytest.fixture
def limiter():
    return ratelimit.get_limiter()


def raised_by(http, *args, **kwargs) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        http.request("GET", *args, **kwargs)
    return info.value


def make_response(status=429, headers=None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return response


# --- Success, URL building, headers, timeouts -------------------------------------------------


def test_success_returns_the_response_and_joins_relative_paths(http, rsps):
    rsps.get(ACCOUNTS, json={"accounts": ["A1"]})
    response = http.request("GET", "/v1/accounts")
    assert response.status_code == 200
    assert http.json(response) == {"accounts": ["A1"]}
    # base_url had a trailing slash, the path a leading one: no double slash is sent.
    assert rsps.calls[0].request.url == ACCOUNTS


def test_absolute_urls_are_used_as_given(http, rsps):
    rsps.get("https://auth.broker.example/oauth/token", json={"ok": True})
    http.request("GET", "https://auth.broker.example/oauth/token")
    assert rsps.calls[0].request.url == "https://auth.broker.example/oauth/token"


def test_user_agent_from_settings_is_sent(http, rsps):
    rsps.get(ACCOUNTS, json={})
    http.request("GET", "v1/accounts")
    assert rsps.calls[0].request.headers["User-Agent"] == settings.BROKER_HTTP_USER_AGENT
    assert settings.BROKER_HTTP_USER_AGENT.startswith("TradeJournal/")


def test_connect_and_read_timeouts_from_settings_are_passed(rsps):
    with override_settings(BROKER_HTTP_CONNECT_TIMEOUT_S=3.25, BROKER_HTTP_READ_TIMEOUT_S=41.5):
        http = BrokerHTTP(provider_key="demo", display_name="Demo", base_url=BASE)
    rsps.get(ACCOUNTS, json={})
    rsps.post(ACCOUNTS, json={})
    http.request("GET", "/v1/accounts")
    http.request("POST", "/v1/accounts", json={"a": 1})
    assert [c.request.req_kwargs["timeout"] for c in rsps.calls] == [(3.25, 41.5), (3.25, 41.5)]


def test_session_is_reused_across_calls(http, rsps):
    rsps.get(ACCOUNTS, json={}, headers={"Set-Cookie": "sid=abc; Path=/"})
    rsps.get(ACCOUNTS, json={})
    http.request("GET", "/v1/accounts")
    http.request("GET", "/v1/accounts")
    # The cookie set by the first answer goes back with the second request: one session.
    assert rsps.calls[1].request.headers.get("Cookie") == "sid=abc"


# --- Network failures ---------------------------------------------------------------------------


def test_connection_error_is_transient_unavailable(http, rsps):
    rsps.get(ACCOUNTS, body=requests.ConnectionError("connection refused"))
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerUnavailableError
    assert error.transient
    assert error.provider == "demo"
    assert error.status_code is None and error.retry_after is None
    assert "Demo" in str(error)
    # The chained requests exception (with its URL) is not carried along.
    assert error.__cause__ is None and error.__suppress_context__


@pytest.mark.parametrize("exc", [requests.ReadTimeout, requests.ConnectTimeout, requests.Timeout])
def test_timeouts_are_transient_timeout_errors(http, rsps, exc):
    rsps.get(ACCOUNTS, body=exc("too slow"))
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerTimeoutError
    assert error.transient and error.provider == "demo"


# --- Status mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_auth_errors_and_not_retried(http, rsps, limiter, status):
    rsps.get(ACCOUNTS, status=status, json={"error": "bad token"}, headers={"Retry-After": "30"})
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerAuthError
    assert not error.transient
    assert error.status_code == status
    assert f"HTTP {status}" in str(error)
    # An auth failure is not a reason to make every other worker wait.
    assert limiter.try_acquire("demo") == 0


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_are_transient_api_errors(http, rsps, limiter, status):
    rsps.get(ACCOUNTS, status=status, body="oops")
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerAPIError
    assert error.transient
    assert error.status_code == status
    assert limiter.try_acquire("demo") == 0


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_client_errors_are_not_transient(http, rsps, status):
    rsps.get(ACCOUNTS, status=status, json={"error": "nope"})
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerAPIError
    assert not error.transient
    assert error.status_code == status


def test_allowed_statuses_are_returned_to_the_caller(http, rsps):
    rsps.get(ACCOUNTS, status=404, json={"error": "no such account"})
    rsps.get(ACCOUNTS, status=404, json={"error": "no such account"})
    response = http.request("GET", "/v1/accounts", allow_statuses=(404,))
    assert response.status_code == 404 and response.json() == {"error": "no such account"}
    # Without allow_statuses the same answer is an error.
    assert type(raised_by(http, "/v1/accounts")) is BrokerAPIError


def test_allow_statuses_does_not_hide_other_errors(http, rsps):
    rsps.get(ACCOUNTS, status=500)
    error = raised_by(http, "/v1/accounts", allow_statuses=(404,))
    assert type(error) is BrokerAPIError and error.transient


# --- 429 and 503: Retry-After and the shared block ----------------------------------------------


def test_429_with_retry_after_seconds_blocks_every_later_caller(http, rsps, limiter):
    rsps.get(ACCOUNTS, status=429, headers={"Retry-After": "120"})
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerRateLimitError
    assert error.transient
    assert error.retry_after == 120.0
    assert error.status_code == 429
    # Every later caller, whatever its credential, now gets a wait close to 120 s.
    for scope in ("", "someone-else", ratelimit.scope_for("other-token")):
        wait = limiter.try_acquire("demo", scope=scope)
        assert 110 < wait <= 120
    # ... and the HTTP layer does not send another request until then.
    later = raised_by(http, "/v1/accounts")
    assert type(later) is BrokerRateLimitError and 110 < later.retry_after <= 120
    assert len(rsps.calls) == 1


def test_429_with_retry_after_http_date(http, rsps, limiter):
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=90)
    rsps.get(ACCOUNTS, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerRateLimitError
    assert 85 <= error.retry_after <= 90
    assert 80 <= limiter.try_acquire("demo") <= 90


def test_429_without_retry_after_waits_the_default(http, rsps, limiter):
    rsps.get(ACCOUNTS, status=429)
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerRateLimitError
    assert error.retry_after == DEFAULT_RATE_LIMIT_WAIT_S
    assert DEFAULT_RATE_LIMIT_WAIT_S - 10 < limiter.try_acquire("demo") <= DEFAULT_RATE_LIMIT_WAIT_S


def test_429_with_x_ratelimit_reset_epoch(http, rsps, limiter):
    reset = int(time.time()) + 45
    rsps.get(ACCOUNTS, status=429, headers={"X-Ratelimit-Reset": str(reset)})
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerRateLimitError
    assert 40 <= error.retry_after <= 45
    assert 35 <= limiter.try_acquire("demo") <= 45


def test_429_for_one_credential_blocks_that_credential(http, rsps, limiter):
    scope = ratelimit.scope_for("alice-token")
    rsps.get(ACCOUNTS, status=429, headers={"Retry-After": "200"})
    error = raised_by(http, "/v1/accounts", scope=scope)
    assert type(error) is BrokerRateLimitError and error.retry_after == 200
    assert 190 < limiter.try_acquire("demo", scope=scope) <= 200


def test_503_with_retry_after_is_unavailable_and_blocks(http, rsps, limiter):
    rsps.get(ACCOUNTS, status=503, headers={"Retry-After": "30"})
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerUnavailableError
    assert error.transient
    assert error.status_code == 503
    assert error.retry_after == 30.0
    assert 20 < limiter.try_acquire("demo", scope="anyone") <= 30


def test_503_without_retry_after_does_not_block(http, rsps, limiter):
    rsps.get(ACCOUNTS, status=503)
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerUnavailableError
    assert error.retry_after is None
    assert limiter.try_acquire("demo") == 0


# --- parse_retry_after on its own, with a fixed clock -----------------------------------------

NOW = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"Retry-After": " 7 "}, 7.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "Mon, 02 Mar 2026 14:01:30 GMT"}, 90.0),
        # A date in the past means "now", never a negative wait.
        ({"Retry-After": "Mon, 02 Mar 2026 13:59:00 GMT"}, 0.0),
        ({"X-Ratelimit-Reset": str(int(NOW.timestamp()) + 45)}, 45.0),
        ({"x-ratelimit-reset": str(int(NOW.timestamp()) - 5)}, 0.0),
        # Retry-After wins over the reset header.
        ({"Retry-After": "10", "X-Ratelimit-Reset": str(int(NOW.timestamp()) + 45)}, 10.0),
        # An unreadable Retry-After falls back to the reset header.
        ({"Retry-After": "soon", "X-Ratelimit-Reset": str(int(NOW.timestamp()) + 45)}, 45.0),
        ({"Retry-After": "soon"}, None),
        ({"X-Ratelimit-Reset": "tomorrow"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(make_response(headers=headers), now=NOW) == expected


# --- The limiter in front of every call -----------------------------------------------------------


def test_every_call_books_a_slot_and_an_exhausted_bucket_sends_nothing(http, rsps, limiter, monkeypatch):
    monkeypatch.setitem(limiter.limits, "throwaway", (RateLimit("requests", 2, 60.0),))
    http = BrokerHTTP(provider_key="throwaway", display_name="Throwaway", base_url=BASE)
    rsps.get(ACCOUNTS, json={})
    http.request("GET", "/v1/accounts")
    http.request("GET", "/v1/accounts")
    error = raised_by(http, "/v1/accounts")
    assert type(error) is BrokerRateLimitError
    assert 55 < error.retry_after <= 60
    assert len(rsps.calls) == 2


def test_unknown_provider_is_a_configuration_error_before_any_request(rsps):
    http = BrokerHTTP(provider_key="no-such-broker", display_name="Nope", base_url=BASE)
    rsps.get(ACCOUNTS, json={})
    with pytest.raises(BrokerConfigurationError, match="rate_limits.toml"):
        http.request("GET", "/v1/accounts")
    assert len(rsps.calls) == 0


# --- JSON bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"accounts": [{"id": 1}, {"id"', b"<html><body>502 Bad Gateway</body></html>", b"", b"\x00\xff\xfe garbage"],
)
def test_unreadable_json_is_a_transient_api_error(http, rsps, body):
    rsps.get(ACCOUNTS, body=body, status=200, content_type="application/json")
    response = http.request("GET", "/v1/accounts")
    with pytest.raises(BrokerAPIError) as info:
        http.json(response)
    assert info.value.transient
    assert info.value.status_code == 200
    assert "Demo" in str(info.value)


# --- Logging --------------------------------------------------------------------------------------


def http_lines(entries):
    return [e for e in entries if e.get("event") == "broker_http"]


def test_one_structured_log_line_per_call(http, rsps):
    rsps.get(ACCOUNTS, json={})
    rsps.post(f"{BASE}/v1/orders", status=404)
    with capture_logs() as entries:
        http.request("GET", "/v1/accounts")
        with pytest.raises(BrokerAPIError):
            http.request("POST", "/v1/orders")
    lines = http_lines(entries)
    assert len(lines) == 2
    assert [(e["method"], e["path"], e["status"], e["broker"]) for e in lines] == [
        ("GET", "/v1/accounts", 200, "demo"),
        ("POST", "/v1/orders", 404, "demo"),
    ]
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in lines)


def test_failed_connection_is_logged_once_per_try_without_status(http, rsps, settings):
    rsps.get(ACCOUNTS, body=requests.ConnectionError("refused"))
    with capture_logs() as entries:
        with pytest.raises(BrokerUnavailableError):
            http.request("GET", "/v1/accounts")
    lines = http_lines(entries)
    assert len(lines) == 1 + settings.BROKER_HTTP_RETRIES
    assert all(line["status"] is None and line["path"] == "/v1/accounts" for line in lines)


def test_query_string_never_reaches_the_log(http, rsps):
    rsps.get(ACCOUNTS, json={})
    with capture_logs() as entries:
        http.request("GET", f"/v1/accounts?token={SECRET}&page=2")
        http.request("GET", "/v1/accounts", params={"access_token": SECRET})
        http.request("GET", f"{ACCOUNTS}?t={SECRET}")
    # The token really was sent ...
    assert all(SECRET in c.request.url for c in rsps.calls)
    lines = http_lines(entries)
    assert len(lines) == 3
    assert [e["path"] for e in lines] == ["/v1/accounts"] * 3
    # ... and it appears nowhere in what was logged.
    assert SECRET not in json.dumps(entries, default=str)


def test_rendered_log_line_has_the_fields_and_no_query(http, rsps, caplog):
    """Through the real structlog pipeline (redaction + renderer) into stdlib logging."""
    rsps.get(ACCOUNTS, json={})
    with caplog.at_level(logging.INFO, logger="brokers.http"):
        http.request("GET", f"/v1/accounts?token={SECRET}")
    render = formatter("console")  # the one our handler uses (config/logging.py)
    rendered = [render.format(r) for r in caplog.records if r.name == "brokers.http"]
    assert len(rendered) == 1
    line = rendered[0]
    assert "broker_http" in line
    for fragment in ("method=GET", "path=/v1/accounts", "status=200", "duration_ms=", "broker=demo"):
        assert fragment in line
    assert SECRET not in line and "token=" not in line


# --- redact_secrets -----------------------------------------------------------------------------


def test_redact_secrets_at_any_depth():
    event = {
        "event": "login token refreshed",
        "password": "hunter2",
        "api_key": "k-1",
        "apiKey": "k-2",
        "Authorization": "Bearer abc",
        "client_secret": "cs",
        "sec": "s",
        "t": "short-token",
        "cid": 42,
        "broker": "demo",
        "status": 200,
        "request": {
            "headers": {"authorization": "Bearer xyz", "accept": "json"},
            "body": [{"username": "alice", "password": "p1"}, ("x", {"refresh_token": "rt"})],
            "nested": {"deeper": {"credentials": {"user": "u"}, "count": 3}},
        },
    }
    out = redact_secrets(None, "info", event)
    # The event text itself is never replaced, even when it mentions a token.
    assert out["event"] == "login token refreshed"
    for key in ("password", "api_key", "apiKey", "Authorization", "client_secret", "sec", "t", "cid"):
        assert out[key] == REDACTED, key
    assert out["broker"] == "demo" and out["status"] == 200
    request = out["request"]
    assert request["headers"] == {"authorization": REDACTED, "accept": "json"}
    assert request["body"][0] == {"username": "alice", "password": REDACTED}
    assert isinstance(request["body"][1], tuple)
    assert request["body"][1] == ("x", {"refresh_token": REDACTED})
    assert request["nested"]["deeper"] == {"credentials": REDACTED, "count": 3}
    # Nothing secret survives anywhere.
    dumped = json.dumps(out)
    for secret in ("hunter2", "k-1", "k-2", "Bearer", "short-token", "p1", 'rt"', 'cs"'):
        assert secret not in dumped, secret
    # The caller's dict is not modified.
    assert event["request"]["headers"]["authorization"] == "Bearer xyz"


def test_redaction_is_in_the_configured_pipeline(caplog):
    import structlog

    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        structlog.get_logger("tests.redaction").info("connect", api_key=SECRET, extra={"token": SECRET})
    (record,) = [r for r in caplog.records if r.name == "tests.redaction"]
    assert SECRET not in record.getMessage()
    assert REDACTED in record.getMessage()


@responses.activate
def test_a_connection_dropped_mid_body_is_a_transient_outage():
    responses.get("https://broker.example/v1/fills", body=requests.exceptions.ChunkedEncodingError("cut"))
    http = BrokerHTTP(provider_key="demo", display_name="Demo", base_url="https://broker.example")
    with pytest.raises(BrokerUnavailableError) as info:
        http.request("GET", "/v1/fills")
    assert info.value.transient


# --- request-level retries ------------------------------------------------------------------
@pytest.mark.parametrize("status", [502, 503, 504])
def test_an_idempotent_request_failing_transiently_is_sent_again_and_counted(http, rsps, status):
    rsps.get(ACCOUNTS, status=status)
    rsps.get(ACCOUNTS, status=status)
    rsps.get(ACCOUNTS, json={"ok": True})
    assert http.request("GET", "/v1/accounts").json() == {"ok": True}
    assert len(rsps.calls) == 3 and http.retries == 2


def test_a_timeout_or_dropped_connection_of_a_read_is_sent_again(http, rsps):
    rsps.get(ACCOUNTS, body=requests.ReadTimeout("slow"))
    rsps.get(ACCOUNTS, body=requests.ConnectionError("reset"))
    rsps.get(ACCOUNTS, json={})
    http.request("GET", "/v1/accounts")
    assert len(rsps.calls) == 3 and http.retries == 2


def test_requests_are_sent_again_only_so_often_then_the_error_reaches_the_run(http, rsps):
    rsps.get(ACCOUNTS, status=503)
    error = raised_by(http, "/v1/accounts")
    assert isinstance(error, BrokerUnavailableError) and error.transient
    assert len(rsps.calls) == 1 + settings.BROKER_HTTP_RETRIES


def test_a_post_that_may_have_been_applied_is_never_sent_again(http, rsps):
    rsps.post(ACCOUNTS, status=503)
    rsps.post(f"{BASE}/v1/orders", body=requests.ReadTimeout("slow"))
    with pytest.raises(BrokerUnavailableError):
        http.request("POST", "/v1/accounts")
    with pytest.raises(BrokerTimeoutError):
        http.request("POST", "/v1/orders")
    assert len(rsps.calls) == 2 and http.retries == 0


def test_a_post_that_never_left_is_sent_again(http, rsps):
    rsps.post(ACCOUNTS, body=requests.ConnectTimeout("no route"))
    rsps.post(ACCOUNTS, json={"token": "t"})
    assert http.request("POST", "/v1/accounts").json() == {"token": "t"}
    assert http.retries == 1


def test_statuses_a_retry_cannot_cure_and_long_waits_go_straight_to_the_run(http, rsps):
    rsps.get(ACCOUNTS, status=501)
    rsps.get(f"{BASE}/v1/fills", status=503, headers={"Retry-After": "120"})
    assert isinstance(raised_by(http, "/v1/accounts"), BrokerAPIError)
    assert isinstance(raised_by(http, "/v1/fills"), BrokerUnavailableError)
    assert len(rsps.calls) == 2 and http.retries == 0


def test_a_500_on_a_read_is_sent_again_but_not_on_a_write(http, rsps):
    rsps.get(ACCOUNTS, status=500)
    rsps.get(ACCOUNTS, json={"accounts": []})
    assert http.request("GET", "/v1/accounts").json() == {"accounts": []}
    rsps.post(ACCOUNTS, status=500)
    with pytest.raises(BrokerAPIError):
        http.request("POST", "/v1/accounts")
    assert http.retries == 1 and len(rsps.calls) == 3


def test_a_provider_may_declare_500_deterministic(rsps):
    http = BrokerHTTP(provider_key="demo", display_name="Demo", base_url=BASE, transient_statuses=frozenset({502, 503}))
    rsps.get(ACCOUNTS, status=500)
    error = raised_by(http, "/v1/accounts")
    assert isinstance(error, BrokerAPIError) and error.status_code == 500
    assert http.retries == 0 and len(rsps.calls) == 1


def test_every_resend_books_its_own_rate_limit_slot(http, rsps, monkeypatch):
    booked = []
    real = ratelimit.get_limiter().acquire
    monkeypatch.setattr(ratelimit.get_limiter(), "acquire", lambda *a, **k: booked.append(1) or real(*a, **k))
    rsps.get(ACCOUNTS, status=502)
    rsps.get(ACCOUNTS, json={})
    http.request("GET", "/v1/accounts")
    assert len(booked) == 2
