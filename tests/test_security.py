"""Security checks across the product: secrets never leak, tenants never cross, and beat carries only ids."""

import json
import logging

import pytest
import responses
from celery.signals import before_task_publish
from rest_framework.authtoken.models import Token

from brokers import services
from brokers.models import BrokerConnection, SyncLog
from config.celery_app import app as celery_app
from journal.models import Trade

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
    raw = BrokerConnection.objects.filter(pk=synced.pk).values("credentials_ciphertext", "token_ciphertext").get()
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
    token = Token.objects.create(user=trader)
    api = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
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
    token = Token.objects.create(user=other_trader)
    api = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
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
