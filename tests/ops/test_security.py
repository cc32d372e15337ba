"""Security checks across the product: secrets never leak, tenants never cross, and beat carries only ids.

The secrets sweep covers each channel: logs at every level (in real processes, third-party
loggers included), task messages, database columns, pages, the API, the admin, error
messages, the DEBUG error page, and redirects to other hosts.
"""

import json
import logging
import subprocess
import sys

import pytest
import responses
from celery.signals import before_task_publish
from django.test import Client

from brokers import services
from brokers.models import BrokerConnection, SyncLog
from brokers.providers.errors import BrokerAPIError
from brokers.providers.http import BrokerHTTP
from brokers.providers.ibkr_flex import statement_url_allowed
from brokers.providers.registry import get_broker_provider
from brokers.providers.tradovate import TradovateHostMoved
from brokers.providers.types import AuthResult, BrokerCredentials
from config.celery_app import app as celery_app
from journal.models import Trade
from tests.e2e.realprocess import ROOT, child_env
from tests.fakes.alpaca import FakeAlpaca
from tests.fakes.ibkr_flex import QUERY_ID as FLEX_QUERY_ID
from tests.fakes.ibkr_flex import TOKEN as FLEX_TOKEN
from tests.fakes.ibkr_flex import FakeFlex

pytestmark = pytest.mark.django_db(transaction=True)

KEY_ID = "AKSECRETKEYID-4242"
SECRET = "sEcReT-Zebra-Quartz-9000"
BASE = "https://paper-api.alpaca.markets"
FILLS = [
    {
        "id": f"20261120{i}::sec-{i}",
        "activity_type": "FILL",
        "transaction_time": "2026-11-20T15:00:00Z",
        "type": "fill",
        "price": "10.5",
        "qty": "2",
        "side": "sell",
        "symbol": "F",
        "order_id": f"o{i}",
    }
    for i in range(3)
]


@pytest.fixture
def published():
    """Every task message published to the Celery broker, as sent."""
    bodies = []

    def record(sender=None, body=None, headers=None, **kwargs):
        bodies.append(json.dumps({"body": body, "headers": headers}, default=str))

    before_task_publish.connect(record, weak=False)
    yield bodies
    before_task_publish.disconnect(record)


@pytest.fixture
def synced(trader, caplog, monkeypatch, published):
    """An Alpaca connection with recognisable secrets, synced through a real (non-eager) publish."""
    caplog.set_level(logging.DEBUG)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(
            f"{BASE}/v2/account", json={"id": "a1", "account_number": "PA1", "currency": "USD", "status": "ACTIVE"}
        )
        rsps.get(f"{BASE}/v2/account/activities/FILL", json=FILLS)
        connection = services.connection_create(
            owner=trader,
            broker_type="alpaca",
            label="Secretive",
            environment="paper",
            credentials={"key_id": KEY_ID, "secret_key": SECRET},
        )
    # Publish a sync the way beat and "Sync now" do, to see what a task message carries.
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    with celery_app.producer_or_acquire() as producer:
        celery_app.tasks["sync.tasks.sync_connection"].apply_async(
            kwargs={"connection_id": connection.pk}, producer=producer
        )
    return connection


def assert_no_secret(text: str, where: str):
    assert SECRET not in text, f"the secret key leaked into {where}"
    assert KEY_ID not in text, f"the key id leaked into {where}"


def test_a_full_sync_leaks_no_secret_anywhere(synced, client, admin_client, trader, caplog, published):
    assert Trade.objects.filter(account__connection=synced).count() == 3
    assert_no_secret(caplog.text, "the logs")
    assert published, "a task message was published"
    for body in published:
        assert_no_secret(body, "a task message")
        assert f'"connection_id": {synced.pk}' in body
    raw = BrokerConnection.objects.filter(pk=synced.pk).values("credentials_ciphertext", "session_ciphertext").get()
    assert_no_secret(json.dumps(raw), "the database columns")

    client.force_login(trader)
    for url in [
        "/brokers/",
        f"/brokers/{synced.pk}/edit/",
        f"/brokers/{synced.pk}/status/",
        f"/sync/connections/{synced.pk}/history/",
        "/trades/",
    ]:
        assert_no_secret(client.get(url).content.decode(), url)
    token = services.api_token_create(owner=trader, name="test")[1]
    api = {"HTTP_AUTHORIZATION": f"Token {token}"}
    for url in ["/api/connections/", f"/api/connections/{synced.pk}/", f"/api/connections/{synced.pk}/logs/"]:
        assert_no_secret(client.get(url, **api).content.decode(), url)
    for url in [
        "/admin/brokers/brokerconnection/",
        f"/admin/brokers/brokerconnection/{synced.pk}/change/",
        "/admin/brokers/synclog/",
    ]:
        assert_no_secret(admin_client.get(url).content.decode(), url)


@responses.activate
def test_refused_credentials_leave_no_secret_in_messages(trader):
    responses.get(f"{BASE}/v2/account", status=403, json={"message": f"forbidden for {KEY_ID}"})
    connection = services.connection_create(
        owner=trader,
        broker_type="alpaca",
        label="Refused",
        environment="paper",
        credentials={"key_id": KEY_ID, "secret_key": SECRET},
    )
    connection.refresh_from_db()
    log = SyncLog.objects.get(connection=connection)
    assert log.status == SyncLog.Status.FAILED and connection.status == "ERROR"
    assert_no_secret(log.error_message + connection.last_sync_error, "the error messages")


PAGE_URLS = ["/brokers/{pk}/status/", "/brokers/{pk}/edit/", "/brokers/{pk}/delete/", "/sync/connections/{pk}/history/"]
PAGE_POSTS = ["/brokers/{pk}/settings/", "/brokers/{pk}/sync/", "/brokers/{pk}/delete/", "/brokers/{pk}/edit/"]
API_URLS = ["/api/connections/{pk}/", "/api/connections/{pk}/logs/"]


def test_another_trader_gets_404_everywhere(trader, other_trader, client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        theirs = services.connection_create(owner=trader, broker_type="demo", label="A's", credentials={"api_key": "k"})
    client.force_login(other_trader)
    for url in PAGE_URLS:
        assert client.get(url.format(pk=theirs.pk)).status_code == 404, url
    for url in PAGE_POSTS:
        assert client.post(url.format(pk=theirs.pk), {"sync_interval_min": "30"}).status_code == 404, url
    token = services.api_token_create(owner=other_trader, name="test")[1]
    api = {"HTTP_AUTHORIZATION": f"Token {token}"}
    for url in API_URLS:
        assert client.get(url.format(pk=theirs.pk), **api).status_code == 404, url
    assert client.post(f"/api/connections/{theirs.pk}/sync/", **api).status_code == 404
    assert (
        client.patch(
            f"/api/connections/{theirs.pk}/", {"sync_interval_min": 30}, content_type="application/json", **api
        ).status_code
        == 404
    )
    assert client.delete(f"/api/connections/{theirs.pk}/", **api).status_code == 404
    theirs.refresh_from_db()
    assert theirs.sync_interval_min == 15 and theirs.label == "A's"


# --- Redirects: no credential ever follows one to another host ----------------------------


@responses.activate
def test_a_redirect_from_alpaca_is_an_error_and_the_keys_go_nowhere_else(trader):
    responses.get(f"{BASE}/v2/account", status=302, headers={"Location": "https://evil.example/steal"})
    responses.get("https://evil.example/steal", json={"id": "a1", "currency": "USD", "status": "ACTIVE"})
    with pytest.raises(BrokerAPIError) as info:
        services.verify_credentials(
            broker_type="alpaca", environment="paper", credentials={"key_id": KEY_ID, "secret_key": SECRET}
        )
    assert "redirect (HTTP 302)" in info.value.message and "evil.example" not in info.value.message
    assert [c.request.url for c in responses.calls] == [f"{BASE}/v2/account"]


@responses.activate
def test_a_307_on_the_tradovate_login_does_not_post_the_password_again():
    provider = get_broker_provider("tradovate", "demo")
    login = provider.base_url() + "/auth/accesstokenrequest"
    responses.post(login, status=307, headers={"Location": "https://evil.example/login"})
    responses.post("https://evil.example/login", json={"accessToken": "stolen"})
    with pytest.raises(TradovateHostMoved) as info:
        provider.authenticate(
            BrokerCredentials(
                values={
                    "username": "jdoe",
                    "password": SECRET,
                    "app_id": "TJ",
                    "app_version": "1.0",
                    "cid": "42",
                    "sec": KEY_ID,
                },
                environment="demo",
            )
        )
    assert "HTTP 307" in info.value.message and "evil.example" not in info.value.message
    # Signing in again asks Tradovate itself; the redirect's address is never called.
    assert {c.request.url for c in responses.calls} == {login}


# --- The Flex statement address is read as the HTTP client reads it -----------------------

FLEX_BASE = "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService"


@pytest.mark.parametrize(
    "url",
    [
        # urlparse sees IBKR's host here; urllib3 (and so requests) connects to evil.example.
        "https://evil.example\\@gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement",
        "https://user:pw@gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement",
        "http://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement",
        "https://gdcdyn.interactivebrokers.com.evil.example/GetStatement",
        "https://evil.interactivebrokers.com/GetStatement",
        "https://gdcdyn.interactivebrokers.com:8443/GetStatement",
        "https://gdcdyn.interactivebrokers.com\\GetStatement",
        "https://gdcdyn.interactivebrokers.com/Get\nStatement",
        "//gdcdyn.interactivebrokers.com/GetStatement",
    ],
)
def test_a_statement_url_outside_the_ibkr_hosts_is_refused(url):
    assert not statement_url_allowed(url, FLEX_BASE)


def test_the_ibkr_report_hosts_and_the_configured_base_are_allowed():
    for host in ("gdcdyn.interactivebrokers.com", "ndcdyn.interactivebrokers.com"):
        assert statement_url_allowed(f"https://{host}/AccountManagement/FlexWebService/GetStatement?x=1", FLEX_BASE)
    assert statement_url_allowed("http://127.0.0.1:8123/Flex/GetStatement", "http://127.0.0.1:8123/Flex")
    assert not statement_url_allowed("http://127.0.0.1:8124/Flex/GetStatement", "http://127.0.0.1:8123/Flex")


@responses.activate
def test_the_flex_token_is_not_sent_to_a_backslash_userinfo_address():
    evil = "https://evil.example\\@gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement"
    provider = get_broker_provider("ibkr_flex")
    responses.get(
        provider.base_url() + "/SendRequest",
        body=f"<FlexStatementResponse><Status>Success</Status><ReferenceCode>1</ReferenceCode><Url>{evil}</Url>"
        "</FlexStatementResponse>",
    )
    with pytest.raises(BrokerAPIError) as info:
        provider.get_accounts(AuthResult(token=SECRET, extra={"query_id": "1"}))
    assert "did not send the token there" in info.value.message
    assert len(responses.calls) == 1


# --- The DEBUG error page (make run runs with DEBUG) --------------------------------------

TRADOVATE_FORM = {
    "broker_type": "tradovate",
    "label": "Futures",
    "sync_interval_min": "15",
    "environment": "demo",
    "cred_username": "jdoe",
    "cred_password": SECRET,
    "cred_app_id": "TJ",
    "cred_app_version": "1.0",
    "cred_cid": "42",
    "cred_sec": KEY_ID,
}


@pytest.fixture
def debug_client(settings, trader):
    settings.DEBUG = True
    client = Client(raise_request_exception=False)
    client.force_login(trader)
    return client


@pytest.fixture
def provider_crash(monkeypatch):
    """A bug deep in a provider: the DEBUG page then shows every frame's variables."""

    def crash(*args, **kwargs):
        raise RuntimeError("simulated provider crash")

    monkeypatch.setattr(BrokerHTTP, "request", crash)


def debug_page(response) -> str:
    page = response.content.decode()
    assert response.status_code == 500 and "simulated provider crash" in page, "not the DEBUG error page"
    return page


def test_the_debug_page_of_a_crashed_test_connection_shows_no_typed_secret(debug_client, provider_crash):
    for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
        response = debug_client.post("/brokers/add/?broker=tradovate", {**TRADOVATE_FORM, "action": "test"}, **headers)
        assert_no_secret(debug_page(response), "the DEBUG page of Test connection")


def test_the_debug_page_of_a_crashed_edit_shows_no_saved_secret(debug_client, trader, provider_crash):
    connection = services.connection_create(
        owner=trader,
        broker_type="alpaca",
        label="Saved",
        environment="paper",
        credentials={"key_id": KEY_ID, "secret_key": SECRET},
        sync_enabled=False,
    )
    response = debug_client.post(f"/brokers/{connection.pk}/edit/", {"action": "test", "label": "Saved"})
    assert_no_secret(debug_page(response), "the DEBUG page of the edit page")


def test_the_debug_page_of_a_crashed_api_update_shows_no_secret(debug_client, trader, monkeypatch):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Api", credentials={"api_key": KEY_ID}, sync_enabled=False
    )

    def crash(connection_id, **changes):
        raise RuntimeError("simulated provider crash")

    monkeypatch.setattr(services, "connection_update", crash)
    response = debug_client.patch(
        f"/api/connections/{connection.pk}/", {"credentials": {"api_key": SECRET}}, content_type="application/json"
    )
    assert_no_secret(debug_page(response), "the DEBUG page of the API")


def test_a_unicode_digit_cid_is_a_form_error_not_a_crash(debug_client):
    # "²".isdigit() is True and int("²") raises: this once reached the DEBUG page with the secrets.
    for cid in ("²", "٣٤", "9" * 5000):
        for action in ("test", "save"):
            response = debug_client.post(
                "/brokers/add/?broker=tradovate", {**TRADOVATE_FORM, "cred_cid": cid, "action": action}
            )
            page = response.content.decode()
            assert response.status_code == 200, (cid[:5], action)
            assert "(cid) is a whole number of at most 10 digits" in page or "(cid) is too long" in page
            assert_no_secret(page, "the form page")
    assert not BrokerConnection.objects.exists()


# --- Logs: every level, every process, third-party loggers included -----------------------


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING"])
def test_no_secret_in_any_log_line_at_any_level(trader, level):
    """Real syncs in a real process, with the settings' own logging (urllib3 writes whole URLs)."""
    with FakeFlex() as flex, FakeAlpaca(fills=3) as alpaca:
        connections = [
            services.connection_create(
                owner=trader,
                broker_type="ibkr_flex",
                label="Flex",
                credentials={"token": FLEX_TOKEN, "query_id": FLEX_QUERY_ID},
                sync_enabled=False,
            ),
            services.connection_create(
                owner=trader,
                broker_type="alpaca",
                label="Alpaca",
                environment="paper",
                credentials={"key_id": KEY_ID, "secret_key": SECRET},
                sync_enabled=False,
            ),
        ]
        env = child_env(
            LOG_LEVEL=level, IBKR_FLEX_BASE_URL=flex.url, IBKR_FLEX_POLL_PAUSE_S="0", ALPACA_BASE_URL=alpaca.url
        )
        runs = [
            subprocess.run(
                [sys.executable, "manage.py", "sync_connection", str(connection.pk)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            for connection in connections
        ]
    assert [run.returncode for run in runs] == [0, 0], [run.stderr[-2000:] for run in runs]
    assert Trade.objects.filter(account__connection__in=connections).count() > 3, "both syncs imported trades"
    output = "".join(run.stdout + run.stderr for run in runs)
    if level == "DEBUG":
        assert "SendRequest" in output and "GetStatement" in output, "DEBUG shows the broker calls"
    assert_no_secret(output, f"the {level} logs")
    assert FLEX_TOKEN not in output, f"the Flex token leaked into the {level} logs"
