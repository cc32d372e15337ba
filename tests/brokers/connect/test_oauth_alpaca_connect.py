"""Alpaca Connect: the existing Alpaca provider reached by OAuth sign-in instead of typed keys.

Alpaca's token answer has no expiry and no refresh token; the app authenticates in the form
body. The broker's HTTP is mocked with `responses`, in Alpaca's documented formats.
"""

from urllib.parse import parse_qs, urlparse

import pytest
import responses
from responses import matchers

from brokers.models import BrokerConnection
from journal.models import Trade
from sync import runs
from tests.providers.test_alpaca import account_payload, fill

pytestmark = pytest.mark.django_db(transaction=True)
LIVE = "https://api.alpaca.markets"
TOKEN = "alpaca-connect-token-79f2"


@pytest.fixture
def app(settings):
    settings.BROKER_OAUTH_APPS = {"alpaca_connect": {"client_id": "alpaca-app", "client_secret": "alpaca-secret"}}
    settings.OAUTH_CALLBACK_URL = "http://testserver/brokers/oauth/callback/"


@pytest.fixture
def alpaca():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        bearer = matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})
        rsps.post(f"{LIVE}/oauth/token", json={"access_token": TOKEN, "token_type": "bearer", "scope": ""})
        rsps.get(f"{LIVE}/v2/account", json=account_payload(account_number="LIVE123"), match=[bearer])
        rsps.get(f"{LIVE}/v2/account/activities/FILL", json=[fill(1), fill(2)], match=[bearer])
        yield rsps


def sign_in(trader_client) -> str:
    started = trader_client.get("/brokers/oauth/alpaca_connect/connect/?environment=live")
    assert started.status_code == 302
    url = urlparse(started["Location"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://app.alpaca.markets/oauth/authorize"
    assert query["client_id"] == "alpaca-app" and "scope" not in query, "read-only: no scope asked for"
    return query["state"]


def test_alpaca_connect_signs_in_and_syncs_the_live_account_with_a_bearer_token(trader_client, app, alpaca):
    state = sign_in(trader_client)
    answer = trader_client.get(f"/brokers/oauth/callback/?code=alpaca-code&state={state}", follow=True)
    assert "is connected (Alpaca Live LIVE123)" in " ".join(str(m) for m in answer.context["messages"])
    connection = BrokerConnection.objects.get(broker_type="alpaca_connect")
    assert connection.environment == "live" and connection.credentials == {}
    assert connection.auth.token == TOKEN and connection.auth.expires_at is None
    assert Trade.objects.filter(account__connection=connection).count() == 2
    [exchange] = [c.request for c in alpaca.calls if c.request.url.endswith("/oauth/token")]
    form = {k: v[0] for k, v in parse_qs(exchange.body).items()}
    assert form["client_id"] == "alpaca-app" and form["client_secret"] == "alpaca-secret", "the app is in the body"
    assert form["grant_type"] == "authorization_code" and form["code"] == "alpaca-code"
    assert "Authorization" not in exchange.headers

    # The trader revokes the app at Alpaca: the next sync stops and asks to reconnect.
    alpaca.replace(responses.GET, f"{LIVE}/v2/account", status=401, json={"message": "unauthorized"})
    log = runs.run_inline(connection.pk)
    connection.refresh_from_db()
    assert log.status == "FAILED" and connection.credentials_rejected
    assert "Press Reconnect" in connection.last_sync_error


def test_an_unknown_environment_is_refused_before_leaving(trader_client, app):
    answer = trader_client.get("/brokers/oauth/alpaca_connect/connect/?environment=moon", follow=True)
    assert "Environment must be one of: paper, live." in " ".join(str(m) for m in answer.context["messages"])
