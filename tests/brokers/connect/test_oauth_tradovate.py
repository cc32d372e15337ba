"""Tradovate by OAuth sign-in, against the loopback Tradovate: code exchange, the same data calls,
renewal through /auth/renewaccesstoken (no refresh token), and a lapsed sign-in asking to reconnect."""

from dataclasses import replace
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client
from django.utils import timezone

from brokers.models import BrokerConnection
from journal.models import Trade
from sync import runs
from tests.fakes.tradovate import OAUTH_CLIENT_SECRET, FakeTradovate, OrganisationHost

pytestmark = pytest.mark.django_db(transaction=True)
USER = "signin-trader"


@pytest.fixture
def sim(settings):
    with FakeTradovate({USER: 1}, fills_per_account=3) as sim:
        settings.BROKER_OAUTH_APPS = {
            "tradovate_signin": {
                "client_id": "tradovate-app",
                "client_secret": OAUTH_CLIENT_SECRET,
                "token_url": f"{sim.url}/auth/oauthtoken",
            }
        }
        settings.BROKER_BASE_URLS = {"tradovate_signin": sim.url}
        settings.OAUTH_CALLBACK_URL = "http://testserver/brokers/oauth/callback/"
        yield sim


def test_sign_in_syncs_renews_without_a_password_and_asks_to_reconnect_when_lapsed(trader, sim):
    browser = Client()
    browser.force_login(trader)
    started = browser.get("/brokers/oauth/tradovate_signin/connect/?environment=demo")
    location = urlparse(started["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://trader.tradovate.com/oauth"
    state = parse_qs(location.query)["state"][0]

    answer = browser.get(f"/brokers/oauth/callback/?code={sim.grant_code(USER)}&state={state}", follow=True)
    assert "is connected" in " ".join(str(m) for m in answer.context["messages"])
    connection = BrokerConnection.objects.get(broker_type="tradovate_signin")
    assert connection.environment == "demo" and connection.credentials == {}
    assert Trade.objects.filter(account__connection=connection).count() == 3
    assert sim.logins[USER] == 0, "no password login, ever"

    # Near the end of its life the token is renewed the way Tradovate renews sessions.
    now = timezone.now()
    connection.auth = replace(
        connection.auth, issued_at=now - timedelta(minutes=85), expires_at=now + timedelta(minutes=5)
    )
    connection.save()
    assert runs.run_inline(connection.pk).status == "SUCCESS"
    assert sim.renewals[USER] == 1 and sim.logins[USER] == 0

    # A token that lapsed unrenewed cannot be renewed: the trader signs in again.
    connection.refresh_from_db()
    connection.auth = replace(connection.auth, expires_at=timezone.now() - timedelta(minutes=1))
    connection.save()
    log = runs.run_inline(connection.pk)
    connection.refresh_from_db()
    assert log.status == "FAILED" and connection.credentials_rejected
    assert "Press Reconnect" in connection.last_sync_error


def test_a_sign_in_whose_code_exchange_names_an_organisation_host_syncs_there(trader, sim, settings):
    settings.TRADOVATE_API_HOST_DOMAINS = (*settings.TRADOVATE_API_HOST_DOMAINS, "127.0.0.1")
    with OrganisationHost(sim) as organisation:
        sim.move(USER, organisation)
        browser = Client()
        browser.force_login(trader)
        started = browser.get("/brokers/oauth/tradovate_signin/connect/?environment=demo")
        state = parse_qs(urlparse(started["Location"]).query)["state"][0]

        answer = browser.get(f"/brokers/oauth/callback/?code={sim.grant_code(USER)}&state={state}", follow=True)

    assert "is connected" in " ".join(str(m) for m in answer.context["messages"])
    connection = BrokerConnection.objects.get(broker_type="tradovate_signin")
    assert Trade.objects.filter(account__connection=connection).count() == 3
    assert set(sim.calls) == {"/auth/oauthtoken"} and {"/account/list", "/fill/list"} <= set(organisation.calls)
