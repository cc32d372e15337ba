"""The trader's pages: login required, only their own data, status and trades visible."""
import pytest

from brokers import services
from brokers.models import BrokerConnection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def synced_connection(trader):
    # Eager tasks: creating the connection runs its first sync at once.
    return services.connection_create(
        owner=trader, broker_type="demo", label="My demo", credentials={"api_key": "demo-SECRET-value"}
    )


@pytest.mark.parametrize("url", ["/brokers/", "/trades/", "/brokers/add/"])
def test_pages_need_a_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_brokers_page_shows_status_last_sync_and_trade_count(client, trader, synced_connection):
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert "My demo" in page and 'data-status="CONNECTED"' in page
    count = synced_connection.accounts.values_list("trades", flat=True).count()
    assert f'<span class="trade-count">{count}</span>' in page
    assert "Last sync:" in page and "never" not in page
    assert "demo-SECRET-value" not in page


def test_error_is_shown_with_what_to_do(client, trader):
    services.connection_create(
        owner=trader, broker_type="demo", label="Broken", credentials={"api_key": "k", "scenario": "auth_error"}
    )
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert 'data-status="ERROR"' in page
    assert "Edit the connection and choose the Healthy scenario." in page


def test_trades_page_lists_the_latest_trades(client, trader, synced_connection):
    client.force_login(trader)
    page = client.get("/trades/").content.decode()
    latest = synced_connection.accounts.first().trades.order_by("-executed_at").first()
    assert latest.symbol in page and "Page 1 of" in page


def test_a_trader_never_sees_another_traders_data(client, other_trader, synced_connection):
    client.force_login(other_trader)
    assert "My demo" not in client.get("/brokers/").content.decode()
    assert "No trades yet" in client.get("/trades/").content.decode()
    pk = synced_connection.pk
    assert client.post(f"/brokers/{pk}/settings/", {"sync_interval_min": "30"}).status_code == 404
    assert client.post(f"/brokers/{pk}/sync/").status_code == 404
    assert client.post(f"/brokers/{pk}/delete/").status_code == 404
    assert BrokerConnection.objects.filter(pk=pk, sync_interval_min=15).exists()


def test_add_connection_form_shows_field_errors_and_saves_nothing(client, trader):
    client.force_login(trader)
    response = client.post("/brokers/add/?broker=demo", {"broker_type": "demo", "label": "X", "sync_interval_min": "2"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Demo API key" in page and "This field is required." in page
    assert "greater than or equal to 5" in page
    assert not BrokerConnection.objects.exists()


def test_add_connection_form_creates_and_syncs(client, trader):
    client.force_login(trader)
    response = client.post(
        "/brokers/add/?broker=demo",
        {"broker_type": "demo", "label": "Fresh", "sync_interval_min": "10", "cred_api_key": "abc", "cred_scenario": "normal"},
    )
    assert response.status_code == 302
    connection = BrokerConnection.objects.get(label="Fresh")
    assert connection.sync_interval_min == 10 and connection.last_sync_at is not None
    assert "abc" not in connection.credentials_ciphertext
    assert connection.credentials == {"api_key": "abc", "scenario": "normal"}
