"""Hardening from an attacker's chair: bad input is a clear refusal naming the field, limits hold.

One test (or a few) per defect of issue 10 that is not about secrets (those are in
test_security.py): login throttling, Sync-now and Test-connection limits, capped and scoped
Retry-After, inputs that once gave a 500, environments, control characters, production
settings and the Content Security Policy, and a strict API.
"""

import base64
import os
import subprocess
import sys
from io import StringIO

import pytest
import requests
import responses
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpRequest
from django.test import Client

from brokers import periodic_tasks, services
from brokers.crypto import UNREADABLE_MESSAGE
from brokers.models import BrokerConnection, SyncLog
from brokers.providers import ratelimit
from brokers.providers.errors import BrokerUnavailableError
from brokers.providers.http import BrokerHTTP, parse_retry_after
from brokers.providers.types import AuthResult
from tests.e2e.realprocess import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "alice-password-1"


def quiet(owner, label="Quiet", broker_type="demo", **kwargs) -> BrokerConnection:
    kwargs.setdefault("credentials", {"api_key": "quiet-key"})
    return services.connection_create(owner=owner, broker_type=broker_type, label=label, sync_enabled=False, **kwargs)


def api_client(user) -> Client:
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {services.api_token_create(owner=user, name='test')[1]}"
    return client


# --- 5. Login throttling ------------------------------------------------------------------


def login(username, password, address="10.0.0.1"):
    return Client(REMOTE_ADDR=address).post("/login/", {"username": username, "password": password})


def test_wrong_passwords_lock_the_username_with_a_clear_message(trader, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login("alice", "wrong", address="10.0.0.1").status_code == 200
    locked = login("alice", "wrong", address="10.0.0.2")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    # From yet another address, even the right password waits: the lock is per username.
    assert login("alice", PASSWORD, address="10.0.0.3").status_code == 429


def test_wrong_passwords_from_one_address_lock_that_address_for_every_username(trader, other_trader, settings):
    for name in ["x1", "x2", "x3", "x4", "x5"][: settings.AXES_FAILURE_LIMIT]:
        login(name, "wrong", address="10.9.9.9")
    assert login("bob", "bob-password-1", address="10.9.9.9").status_code == 429
    assert login("bob", "bob-password-1", address="10.1.1.1").status_code == 302


def test_an_admin_lifts_a_lockout(trader, admin_client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login("alice", "wrong")
    assert login("alice", PASSWORD, address="10.0.0.7").status_code == 429
    assert admin_client.get("/admin/axes/accessattempt/").status_code == 200
    attempts = list(AccessAttempt.objects.filter(username="alice").values_list("pk", flat=True))
    admin_client.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": attempts, "post": "yes"}
    )
    assert not AccessAttempt.objects.filter(username="alice").exists()
    assert login("alice", PASSWORD, address="10.0.0.7").status_code == 302


def test_only_our_proxies_entries_of_x_forwarded_for_are_believed(settings):
    from telemetry.client_ip import client_ip

    request = HttpRequest()
    request.META = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9"}
    assert client_ip(request) == "10.0.0.1"
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(request) == "203.0.113.9"  # the client wrote 6.6.6.6 itself


# --- 6. Sync-now by toggling, and Test connection -----------------------------------------


def test_toggling_auto_sync_shares_the_sync_now_allowance(client, trader, settings):
    settings.SYNC_NOW_RATE_LIMIT = "3/d"
    connection = quiet(trader)
    client.force_login(trader)
    url = f"/brokers/{connection.pk}/settings/"
    for _ in range(3):
        assert client.post(url, {"sync_enabled": "on", "sync_interval_min": "15"}).status_code == 302
        assert client.post(url, {"sync_interval_min": "15"}).status_code == 302
    refused = client.post(url, {"sync_enabled": "on", "sync_interval_min": "15"}, follow=True)
    assert refused.redirect_chain[-1][0] == f"/brokers/#connection-{connection.pk}"
    assert "switched auto-sync" in refused.content.decode()
    connection.refresh_from_db()
    assert not connection.sync_enabled
    assert connection.sync_logs.count() == 3
    # The same allowance on the API.
    response = api_client(trader).patch(
        f"/api/connections/{connection.pk}/", {"sync_enabled": True}, content_type="application/json"
    )
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    connection.refresh_from_db()
    assert not connection.sync_enabled and connection.sync_logs.count() == 3


def test_test_connection_is_throttled_per_trader(client, trader, other_trader, settings):
    settings.TEST_CONNECTION_RATE_LIMIT = "2/d"
    data = {"broker_type": "demo", "action": "test", "cred_api_key": "k", "cred_scenario": "normal"}
    client.force_login(trader)
    for _ in range(2):
        assert "The broker accepted the login." in client.post("/brokers/add/", data).content.decode()
    refused = client.post("/brokers/add/", data)
    assert refused.status_code == 429 and "tested logins several times" in refused.content.decode()
    fragment = client.post("/brokers/add/", data, HTTP_HX_REQUEST="true")
    assert "tested logins several times" in fragment.content.decode()
    other = Client()
    other.force_login(other_trader)
    assert "The broker accepted the login." in other.post("/brokers/add/", data).content.decode()


def test_tradovate_logins_are_counted_per_user_so_one_trader_cannot_use_up_anothers():
    limiter = ratelimit.get_limiter()
    mine, theirs = ratelimit.scope_for("alice"), ratelimit.scope_for("bob")
    for _ in range(8):
        assert limiter.try_acquire("tradovate", scope=mine, buckets=("auth",)) == 0
    assert limiter.try_acquire("tradovate", scope=mine, buckets=("auth",)) > 0
    assert limiter.try_acquire("tradovate", scope=theirs, buckets=("auth",)) == 0


# --- 7. Retry-After capped, and scoped to the credential ----------------------------------


def answer(status=503, **headers) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return response


def test_retry_after_is_capped_by_the_setting(settings):
    assert parse_retry_after(answer(**{"Retry-After": "999999999"})) == 3600
    settings.BROKER_RETRY_AFTER_MAX_S = 120
    assert parse_retry_after(answer(**{"Retry-After": "999999999"})) == 120
    assert parse_retry_after(answer(**{"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"})) == 120
    assert parse_retry_after(answer(**{"X-Ratelimit-Reset": "99999999999"})) == 120
    assert parse_retry_after(answer(**{"Retry-After": "²"})) is None


@responses.activate
def test_a_503_blocks_only_the_credential_that_got_it_and_not_for_days():
    http = BrokerHTTP(provider_key="alpaca", display_name="Alpaca", base_url="https://paper-api.alpaca.markets")
    responses.get("https://paper-api.alpaca.markets/v2/account", status=503, headers={"Retry-After": "999999999"})
    mine, theirs = ratelimit.scope_for("key-a"), ratelimit.scope_for("key-b")
    with pytest.raises(BrokerUnavailableError) as info:
        http.request("GET", "/v2/account", scope=mine)
    assert info.value.retry_after == 3600
    limiter = ratelimit.get_limiter()
    assert 3500 < limiter.try_acquire("alpaca", scope=mine) <= 3600
    assert limiter.try_acquire("alpaca", scope=theirs) == 0


# --- 8. Inputs that once gave a 500 ------------------------------------------------------


@pytest.mark.parametrize(
    "query, field",
    [
        ("date_to=9999-12-31", "date_to"),
        ("date_from=0001-01-01", "date_from"),
        ("date_from=2026-01-01&date_to=9999-12-31", "date_to"),
        ("account=" + "9" * 30, "account"),
    ],
)
def test_trades_page_refuses_impossible_filters_naming_the_field(client, trader, query, field):
    client.force_login(trader)
    response = client.get(f"/trades/?{query}")
    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {field}


def cursor(**tokens) -> str:
    return base64.b64encode("&".join(f"{k}={v}" for k, v in tokens.items()).encode()).decode()


@pytest.mark.parametrize(
    "query, field",
    [
        ("cursor=" + cursor(p="not-a-date"), "cursor"),
        ("cursor=" + cursor(p="9999-12-31 23:59:59-14:00"), "cursor"),
        ("cursor=" + cursor(p="2026-01-01 00:00:00"), "cursor"),
        ("cursor=%%%not-base64", "cursor"),
        ("account=" + str(2**64), "account"),
        ("connection=" + "9" * 5000, "connection"),
        ("since=0001-01-01T00:00:00%2B05:00", "since"),
        ("until=9999-12-31T23:59:59-14:00", "until"),
    ],
)
def test_trades_api_refuses_bad_filters_and_tampered_cursors_with_400_naming_the_field(trader, query, field):
    response = api_client(trader).get(f"/api/trades/?{query}")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_a_5000_digit_cid_through_the_api_is_400_naming_the_field(trader):
    response = api_client(trader).post(
        "/api/connections/",
        {
            "broker_type": "tradovate",
            "label": "Fut",
            "environment": "demo",
            "credentials": {
                "username": "u",
                "password": "p",
                "app_id": "a",
                "app_version": "1",
                "cid": "7" * 5000,
                "sec": "s",
            },
        },
        content_type="application/json",
    )
    assert response.status_code == 400 and "cid" in response.json()["credentials"]
    assert not BrokerConnection.objects.exists()


def test_a_far_future_flex_token_date_is_a_form_error(client, trader):
    client.force_login(trader)
    response = client.post(
        "/brokers/add/?broker=ibkr_flex",
        {
            "broker_type": "ibkr_flex",
            "label": "Flex",
            "sync_interval_min": "15",
            "cred_token": "t",
            "cred_query_id": "1",
            "cred_token_expires_on": "9999-12-31",
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"cred_token_expires_on"}
    assert not BrokerConnection.objects.exists()


# --- 9. An environment only where the broker has them ------------------------------------


def test_an_environment_for_a_broker_without_any_is_refused_everywhere(trader, admin_client):
    response = api_client(trader).post(
        "/api/connections/",
        {
            "broker_type": "ibkr_flex",
            "label": "Flex",
            "environment": "live",
            "credentials": {"token": "t", "query_id": "1"},
        },
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["environment"] == [
        "Interactive Brokers (Flex Web Service) has no environments: leave the environment empty."
    ]
    page = admin_client.post(
        "/admin/brokers/brokerconnection/add/",
        {
            "owner": trader.pk,
            "broker_type": "ibkr_flex",
            "label": "Flex",
            "environment": "live",
            "sync_interval_min": "15",
            "new_credentials": '{"token": "t", "query_id": "1"}',
        },
    )
    assert page.status_code == 200 and "has no environments" in page.content.decode()
    with pytest.raises(CommandError, match="environment: .*has no environments"):
        call_command(
            "create_connection",
            "--owner=alice",
            "--broker=ibkr_flex",
            "--label=Flex",
            "--environment=live",
            "--field=query_id=1",
            "--no-input",
            stdout=StringIO(),
        )
    assert not BrokerConnection.objects.exists()


# --- 10. Control characters --------------------------------------------------------------

CONTROL_LABELS = ["Evil\r\nBcc: x@example.com", "Tab\there", "\x1b[31mRed", "Line\u2028sep"]


@pytest.mark.parametrize("label", CONTROL_LABELS)
def test_a_label_with_control_characters_is_refused_on_every_channel(client, trader, admin_client, label):
    client.force_login(trader)
    page = client.post(
        "/brokers/add/?broker=demo",
        {"broker_type": "demo", "label": label, "sync_interval_min": "15", "cred_api_key": "k"},
    )
    assert page.context["form"].errors.keys() == {"label"}
    response = api_client(trader).post(
        "/api/connections/",
        {"broker_type": "demo", "label": label, "credentials": {"api_key": "k"}},
        content_type="application/json",
    )
    assert response.status_code == 400 and "control characters" in response.json()["label"][0]
    admin = admin_client.post(
        "/admin/brokers/brokerconnection/add/",
        {
            "owner": trader.pk,
            "broker_type": "demo",
            "label": label,
            "sync_interval_min": "15",
            "new_credentials": '{"api_key": "k"}',
        },
    )
    assert admin.status_code == 200 and "control characters" in admin.content.decode()
    with pytest.raises(CommandError, match="label: Must not contain control characters"):
        call_command(
            "create_connection", "--owner=alice", "--broker=demo", f"--label={label}", "--no-input", stdout=StringIO()
        )
    assert not BrokerConnection.objects.exists()


def test_a_credential_with_control_characters_is_refused(trader):
    with pytest.raises(Exception) as info:
        services.connection_create(owner=trader, broker_type="demo", label="D", credentials={"api_key": "a\nb"})
    assert "control characters" in info.value.message_dict["api_key"][0]


def test_sync_status_prints_old_control_characters_as_escapes(trader):
    connection = quiet(trader)
    BrokerConnection.objects.filter(pk=connection.pk).update(label="Old\x1b[2Jlabel", last_sync_error="bad\x07bell")
    out = StringIO()
    call_command("sync_status", stdout=out)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "Old\\x1b[2Jlabel" in text and "bad\\x07bell" in text


# --- 11. Production settings and the Content Security Policy -----------------------------


def deploy_check(**environment) -> subprocess.CompletedProcess:
    # Only what a deployment sets: nothing of this test process's environment leaks in.
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "x" * 20 + "production-like-secret-key-0123456789abcdef",
        "DJANGO_ALLOWED_HOSTS": "journal.example.com",
        "FIELD_ENCRYPTION_KEYS": ",".join(django_settings.FIELD_ENCRYPTION_KEYS),
        "REDIS_URL": django_settings.REDIS_URL,
        **environment,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def example_environment() -> dict[str, str]:
    """The HTTPS settings as .env.example documents them for production."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("DJANGO_SECURE"):
            values[name] = value
    return values


def test_check_deploy_is_clean_with_the_documented_production_environment():
    assert set(example_environment()) >= {
        "DJANGO_SECURE_PROXY_SSL_HEADER",
        "DJANGO_SECURE_SSL_REDIRECT",
        "DJANGO_SECURE_HSTS_SECONDS",
        "DJANGO_SECURE_COOKIES",
    }
    bare = deploy_check()
    assert bare.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in bare.stderr
    documented = deploy_check(**example_environment())
    assert documented.returncode == 0, documented.stderr


def test_every_page_carries_a_content_security_policy_with_a_fresh_nonce(client, trader):
    client.force_login(trader)
    first, second = client.get("/brokers/"), client.get("/brokers/")
    policy = first["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self' 'nonce-" in policy and "unsafe-eval" not in policy
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in first.content.decode()
    assert nonce not in second["Content-Security-Policy"]
    assert "Content-Security-Policy" in client.get("/api/docs/")


# --- 12. A strict API, and one clear message for unreadable credentials ------------------


def test_api_create_refuses_unknown_fields_like_patch_does(trader):
    client = api_client(trader)
    response = client.post(
        "/api/connections/",
        {
            "broker_type": "demo",
            "label": "D",
            "credentials": {"api_key": "k"},
            "sync_intervall_min": 5,
            "status": "ERROR",
        },
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {"status": ["This field cannot be changed."], "sync_intervall_min": ["Unknown field."]}
    assert not BrokerConnection.objects.exists()


@pytest.mark.parametrize("label", [123, True, ["x"], {"x": 1}])
def test_a_label_that_is_not_a_string_is_refused(trader, label):
    client = api_client(trader)
    created = client.post(
        "/api/connections/",
        {"broker_type": "demo", "label": label, "credentials": {"api_key": "k"}},
        content_type="application/json",
    )
    assert created.status_code == 400 and "label" in created.json()
    connection = quiet(trader)
    patched = client.patch(f"/api/connections/{connection.pk}/", {"label": label}, content_type="application/json")
    assert patched.status_code == 400 and "label" in patched.json()
    connection.refresh_from_db()
    assert connection.label == "Quiet"


def test_unreadable_credentials_give_the_same_clear_message_to_a_sync_and_a_test(trader):
    connection = quiet(trader)
    BrokerConnection.objects.filter(pk=connection.pk).update(credentials_ciphertext="gAAAA-written-by-a-lost-key")
    with pytest.raises(CommandError) as info:
        call_command("test_connection", str(connection.pk), stdout=StringIO())
    assert str(info.value) == UNREADABLE_MESSAGE
    services.update_sync_enabled(connection.pk, True)  # switching on syncs at once (eager tasks)
    log = SyncLog.objects.filter(connection=connection).latest("started_at")
    assert log.status == SyncLog.Status.FAILED
    assert log.error_message == UNREADABLE_MESSAGE and "unexpected" not in log.error_message
    connection.refresh_from_db()
    assert connection.last_sync_error == UNREADABLE_MESSAGE


def test_a_failure_notice_is_mailed_even_for_a_label_saved_before_line_breaks_were_refused(trader, mailoutbox):
    trader.email = "alice@example.com"
    trader.save()
    connection = services.connection_create(
        owner=trader,
        broker_type="demo",
        label="Old",
        credentials={"api_key": "k", "scenario": "auth_error"},
        sync_enabled=False,
    )
    BrokerConnection.objects.filter(pk=connection.pk).update(label="Old\r\nlabel")
    periodic_tasks.request_sync_now(connection.pk, trigger="manual")  # eager: the broker refuses the login
    assert mailoutbox, "the refused-credentials notice was mailed"
    assert "\n" not in mailoutbox[-1].subject and "Old label" in mailoutbox[-1].subject


def test_the_api_keeps_the_session_for_unchanged_credentials_as_the_page_does(trader):
    connection = quiet(trader, credentials={"api_key": "same-key"})
    connection.auth = AuthResult(token="live-session", expires_at=None)
    connection.save()
    client, url = api_client(trader), f"/api/connections/{connection.pk}/"

    def save(key):
        return client.patch(url, {"credentials": {"api_key": key}}, content_type="application/json").status_code

    assert save("same-key") == 200
    connection.refresh_from_db()
    assert connection.auth.token == "live-session"
    assert save("new-key") == 200
    connection.refresh_from_db()
    assert connection.auth is None and connection.credentials == {"api_key": "new-key"}
