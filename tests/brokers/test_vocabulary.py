"""One vocabulary for status and error kind: the card, the API and /metrics say the same thing."""

import re

import pytest
import responses

from brokers import services
from brokers.models import BrokerConnection
from brokers.providers.errors import ErrorKind
from sync.runs import run_inline

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_broker_answering_http_500_is_called_temporary_not_a_permissions_problem(client, trader):
    connection = services.connection_create(
        owner=trader,
        broker_type="alpaca",
        label="Flaky",
        environment="paper",
        credentials={"key_id": "AKTEST", "secret_key": "s3cret"},
        sync_enabled=False,
    )
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, re.compile(r"https://paper-api\.alpaca\.markets/.*"), status=500)
        sync_log = run_inline(connection.pk)
    assert sync_log.error_kind == ErrorKind.UNAVAILABLE
    assert "internal error (HTTP 500)" in sync_log.error_message
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert "usually temporary on the broker&#x27;s side" in page
    assert "API access, permissions" not in page


def test_a_manual_sync_with_auto_sync_off_is_syncing_on_the_card_the_api_and_metrics(client, trader):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Manual", credentials={"api_key": "k"}, sync_enabled=False
    )
    # A press of Sync now is running while auto-sync stays off.
    BrokerConnection.objects.filter(pk=connection.pk).update(status=BrokerConnection.Status.SYNCING)
    client.force_login(trader)
    assert 'data-status="SYNCING"' in client.get("/brokers/").content.decode()
    assert client.get(f"/api/connections/{connection.pk}/").json()["display_status"] == "SYNCING"
    metrics = client.get("/metrics").content.decode()
    assert 'tj_connections{broker="demo",status="SYNCING"} 1.0' in metrics
    assert 'status="PAUSED"' not in metrics
    # Once the run is over, the same connection is PAUSED everywhere.
    BrokerConnection.objects.filter(pk=connection.pk).update(status=BrokerConnection.Status.CONNECTED)
    assert 'data-status="PAUSED"' in client.get("/brokers/").content.decode()
    assert 'tj_connections{broker="demo",status="PAUSED"} 1.0' in client.get("/metrics").content.decode()
