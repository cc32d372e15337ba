"""No doubles (issue 25): the same Schwab login connected again re-authorises its connection, two loads
of one SnapTrade return URL at once make one connection, and the credentials of a connection made on the
broker's pages cannot be overwritten through the API."""

import threading

import pytest
from django.test import Client
from rest_framework.test import APIClient

from brokers.models import BrokerConnection
from journal.models import Trade
from tests.brokers.connect.test_oauth import connect, consent, said, sim  # noqa: F401 (fixtures)
from tests.brokers.connect.test_portal import connect as snaptrade_connect
from tests.brokers.connect.test_portal import sim as snaptrade_sim  # noqa: F401 (fixture)
from tests.brokers.connect.test_portal import through_portal

pytestmark = pytest.mark.django_db(transaction=True)


def test_connecting_the_same_schwab_login_again_signs_in_the_connection_it_has(trader_client, sim):  # noqa: F811
    first = connect(trader_client, sim)
    trades = Trade.objects.filter(account__connection=first).count()
    assert trades

    again = trader_client.get(consent(trader_client, sim), follow=True)

    assert BrokerConnection.objects.filter(broker_type="schwab").count() == 1, said(again)
    assert "already" in said(again)
    assert Trade.objects.count() == trades, "every fill once"
    first.refresh_from_db()
    assert first.auth.refresh_token in {grant for grant in sim.grants}


def test_two_loads_of_one_snaptrade_return_url_at_once_make_one_connection(trader_client, snaptrade_sim):  # noqa: F811
    back = through_portal(trader_client, "/brokers/snaptrade/connect/")
    # Both loads are inside our callback while SnapTrade answers the first listing of links.
    snaptrade_sim.delays["/api/v1/authorizations"] = 0.5
    tabs = [Client(), Client()]
    for tab in tabs:
        tab.cookies = trader_client.cookies
    answers = []
    loads = [threading.Thread(target=lambda tab=tab: answers.append(tab.get(back, follow=True))) for tab in tabs]
    for load in loads:
        load.start()
    for load in loads:
        load.join()

    assert BrokerConnection.objects.filter(broker_type="snaptrade").count() == 1
    assert sorted("is connected" in said(a) for a in answers) == [False, True]


@pytest.mark.parametrize("credentials", [{}, {"authorization_id": "someone-elses"}])
def test_the_api_refuses_to_write_the_credentials_of_a_connection_made_at_the_broker(
    trader_client,  # noqa: F811
    snaptrade_sim,  # noqa: F811
    trader,
    credentials,
):
    connection = snaptrade_connect(trader_client, snaptrade_sim)
    stored = connection.credentials_ciphertext
    api = APIClient()
    api.force_login(trader)

    response = api.patch(f"/api/connections/{connection.pk}/", {"credentials": credentials}, format="json")

    assert response.status_code == 400
    assert "Reconnect" in str(response.json()["credentials"])
    connection.refresh_from_db()
    assert connection.credentials_ciphertext == stored


def test_the_admin_refuses_to_write_the_credentials_of_a_connection_made_at_the_broker(
    trader_client,  # noqa: F811
    snaptrade_sim,  # noqa: F811
    django_user_model,
):
    connection = snaptrade_connect(trader_client, snaptrade_sim)
    stored = connection.credentials_ciphertext
    operator = Client(raise_request_exception=False)
    operator.force_login(django_user_model.objects.create_superuser("operator", password="operator-password-1"))

    response = operator.post(
        f"/admin/brokers/brokerconnection/{connection.pk}/change/",
        {"label": "x", "sync_interval_min": 15, "sync_enabled": "on", "new_credentials": "{}"},
    )

    assert response.status_code == 200 and "press Reconnect" in response.content.decode()
    connection.refresh_from_db()
    assert connection.credentials_ciphertext == stored
