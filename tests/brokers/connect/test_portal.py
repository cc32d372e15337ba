"""Connecting brokerages through SnapTrade's portal, against a loopback SnapTrade (tests/fakes/snaptrade.py).

The pages run through Django's test client; the portal and the API are the simulator's,
reached over real HTTP with real signatures. Tasks are eager, so the first sync runs when the
callback's transaction commits.
"""

from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
import requests

from brokers.models import BrokerConnection, SnapTradeUser
from journal.models import Trade
from sync import runs
from tests.fakes.snaptrade import CONSUMER_KEY, SnapTradeSim, configure

pytestmark = pytest.mark.django_db
committing = pytest.mark.django_db(transaction=True)
ADD_PAGE = "/brokers/add/?broker=snaptrade"


@pytest.fixture
def sim(settings):
    with SnapTradeSim() as sim:
        configure(settings, sim)
        yield sim


def said(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


def through_portal(client, start: str, button: str = "portal-connect") -> str:
    """Follow Connect to the portal, press a button there; returns our callback path SnapTrade sends back to."""
    started = client.get(start)
    assert started.status_code == 302, said(started)
    portal = requests.get(started["Location"], timeout=5)
    assert portal.status_code == 200 and "Connection Portal" in portal.text
    target = portal.text.split(f'id="{button}" href="')[1].split('"')[0].replace("&amp;", "&")
    done = requests.get(requests.compat.urljoin(started["Location"], target), allow_redirects=False, timeout=5)
    back = urlparse(done.headers["Location"])
    assert back.path == "/brokers/oauth/callback/"
    return f"{back.path}?{back.query}"


def recent(days_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days_ago)


def connect(client, sim, start="/brokers/snaptrade/connect/") -> BrokerConnection:
    answer = client.get(through_portal(client, start), follow=True)
    assert "is connected" in said(answer), said(answer)
    return BrokerConnection.objects.filter(broker_type="snaptrade").latest("id")


def fill_accounts(sim, connection: BrokerConnection) -> list[str]:
    """Give each account of the connection's authorisation two fills and a dividend; returns their ids."""
    ids = []
    for account in sim.accounts_of(connection.credentials["authorization_id"]):
        ids.append(sim.add_activity(account["id"], type="BUY", units=10, price=100, trade_date=recent(2))["id"])
        ids.append(sim.add_activity(account["id"], type="SELL", units=10, price=101, trade_date=recent(1))["id"])
        sim.add_activity(account["id"], type="DIVIDEND", units=0, price=0, amount=4.2, trade_date=recent(1))
    return ids


def test_the_add_page_offers_the_portal_and_the_brokerages(trader_client, sim):
    page = trader_client.get(ADD_PAGE)
    html = page.content.decode()
    assert page.status_code == 200 and "Connect through SnapTrade" in html
    assert "brokerage=SCHWAB" in html and "Fidelity" in html


@committing
def test_connect_registers_once_lists_accounts_and_imports_only_trades(trader_client, sim, trader):
    connection = connect(trader_client, sim)
    assert connection.accounts.count() == 2
    assert len(sim.registrations) == 1
    user = SnapTradeUser.objects.get(owner=trader)
    secret = user.secrets["user_secret"]
    assert secret not in user.secrets_ciphertext and secret not in connection.session_ciphertext
    login = sim.logins[-1]
    assert login["connectionType"] == "read" and login["customRedirect"].startswith("http://testserver/")
    expected = fill_accounts(sim, connection)
    log = runs.run_inline(connection.pk)
    assert log.status == "SUCCESS", log.error_message
    imported = set(Trade.objects.filter(account__connection=connection).values_list("raw__id", flat=True))
    assert imported == set(expected), "every BUY and SELL once, no dividend"
    assert runs.run_inline(connection.pk).trades_imported == 0, "nothing doubled on the next sync"
    page = trader_client.get("/brokers/").content.decode()
    assert secret not in page and CONSUMER_KEY not in page


@committing
def test_a_second_brokerage_reuses_the_registration_and_adds_one_connection(trader_client, sim):
    connect(trader_client, sim, start="/brokers/snaptrade/connect/?brokerage=SCHWAB")
    connect(trader_client, sim, start="/brokers/snaptrade/connect/?brokerage=FIDELITY")
    assert len(sim.registrations) == 1
    labels = sorted(BrokerConnection.objects.filter(broker_type="snaptrade").values_list("label", flat=True))
    assert len(labels) == 2 and labels[0] != labels[1]
    assert [login.get("broker") for login in sim.logins] == ["SCHWAB", "FIDELITY"]


def test_an_unknown_brokerage_is_refused_before_the_portal(trader_client, sim):
    answer = trader_client.get("/brokers/snaptrade/connect/?brokerage=NOPE%0A", follow=True)
    assert "not one SnapTrade offers" in said(answer)
    assert not sim.logins and not sim.registrations and not BrokerConnection.objects.exists()


@committing
def test_a_cancelled_portal_saves_nothing(trader_client, sim):
    answer = trader_client.get(
        through_portal(trader_client, "/brokers/snaptrade/connect/", button="portal-cancel"), follow=True
    )
    assert "no new brokerage" in said(answer)
    assert not BrokerConnection.objects.exists()


@committing
def test_a_replayed_return_saves_nothing_more(trader_client, sim):
    back = through_portal(trader_client, "/brokers/snaptrade/connect/")
    trader_client.get(back)
    again = trader_client.get(back, follow=True)
    assert "already used" in said(again)
    assert BrokerConnection.objects.count() == 1


@committing
def test_a_broken_link_errors_with_reconnect_and_reconnect_keeps_the_connection(trader_client, sim):
    connection = connect(trader_client, sim)
    first = fill_accounts(sim, connection)
    assert runs.run_inline(connection.pk).status == "SUCCESS"
    authorization_id = connection.credentials["authorization_id"]
    sim.disable(authorization_id)
    log = runs.run_inline(connection.pk)
    connection.refresh_from_db()
    assert log.status == "FAILED" and connection.status == "ERROR" and connection.credentials_rejected
    assert "Reconnect" in connection.last_sync_error
    assert "Reconnect" in trader_client.get("/brokers/").content.decode()
    # The brokerage keeps trading while the link is broken; Reconnect mends the same authorisation.
    account = sim.accounts_of(authorization_id)[0]["id"]
    late = sim.add_activity(account, type="BUY", units=1, price=50, trade_date=recent(0.5))["id"]
    answer = trader_client.get(through_portal(trader_client, f"/brokers/{connection.pk}/reconnect/"), follow=True)
    assert "Reconnected" in said(answer), said(answer)
    assert sim.logins[-1]["reconnect"] == authorization_id
    connection.refresh_from_db()
    assert connection.status == "CONNECTED" and not connection.credentials_rejected
    assert BrokerConnection.objects.count() == 1
    trades = set(Trade.objects.filter(account__connection=connection).values_list("raw__id", flat=True))
    assert trades == set(first) | {late}, "history kept, the late fill imported by the sync Reconnect started"


@committing
def test_a_refused_operator_key_is_a_setup_error_and_holds_nothing(trader_client, sim, settings):
    connection = connect(trader_client, sim)
    settings.SNAPTRADE_CONSUMER_KEY = "not-the-key"
    log = runs.run_inline(connection.pk)
    connection.refresh_from_db()
    assert log.status == "FAILED" and log.error_kind == "setup"
    assert "SNAPTRADE_CONSUMER_KEY" in log.error_message and not connection.credentials_rejected


def test_without_an_operator_key_the_trader_enters_a_personal_key(trader_client, sim, settings, trader):
    settings.SNAPTRADE_CLIENT_ID = settings.SNAPTRADE_CONSUMER_KEY = ""
    page = trader_client.get(ADD_PAGE).content.decode()
    assert "Save my SnapTrade key" in page and 'id="snaptrade-connect"' not in page
    refused = trader_client.post("/brokers/snaptrade/key/", {"client_id": "MINE", "consumer_key": "wrong"}, follow=True)
    assert "refused" in said(refused) and not SnapTradeUser.objects.exists()
    sim.add_key("MINE", "my-consumer-key")
    saved = trader_client.post(
        "/brokers/snaptrade/key/", {"client_id": "MINE", "consumer_key": "my-consumer-key"}, follow=True
    )
    assert "works" in said(saved)
    user = SnapTradeUser.objects.get(owner=trader)
    assert user.personal_key and user.client_id == "MINE" and "my-consumer-key" not in user.secrets_ciphertext
    assert "Connect through SnapTrade" in trader_client.get(ADD_PAGE).content.decode()


def test_a_personal_key_form_names_what_is_missing_and_saves_nothing(trader_client, sim, settings):
    settings.SNAPTRADE_CLIENT_ID = settings.SNAPTRADE_CONSUMER_KEY = ""
    answer = trader_client.post("/brokers/snaptrade/key/", {"client_id": "MINE\n", "consumer_key": ""}, follow=True)
    assert "Consumer key is required" in said(answer)
    assert not SnapTradeUser.objects.exists() and not sim.registrations


def test_snaptrade_cannot_be_created_without_the_portal(trader):
    from django.core.exceptions import ValidationError

    from brokers import services

    with pytest.raises(ValidationError) as info:
        services.connection_create(owner=trader, broker_type="snaptrade", label="x", credentials={})
    assert "broker_type" in info.value.message_dict
