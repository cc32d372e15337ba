"""A Reconnect made while a sync renews the old link is not undone (issue 25): the run writes its session
back only if it is still the one it read, and a refusal of the old link does not wipe the new one.

Interleaved for real: the trader's Reconnect (consent page, callback, token exchange, all over HTTP
against the loopback Schwab) runs on the simulator's thread while the run's renewal waits for its answer.
"""

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.test import Client
from django.utils import timezone

from brokers import services
from brokers.models import BrokerConnection
from sync import runs
from sync.models import Notice
from tests.brokers.connect.test_oauth import connect, consent, said, set_auth, sim  # noqa: F401 (fixtures)
from tests.e2e.broker_conditions import tradovate_connection
from tests.fakes.tradovate import PASSWORD, FakeTradovate

pytestmark = pytest.mark.django_db(transaction=True)


def reconnect_during_the_runs_renewal(loopback_schwab, trader, connection, *, refuse_old_link: bool) -> dict:
    """While the run's refresh request is at Schwab, the trader reconnects in another trader_client; returns
    the session the Reconnect stored."""
    token_route = loopback_schwab._routes[("POST", "/v1/oauth/token")]
    stored = {}

    def token(request):
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") == "refresh_token" and not stored:
            other_browser = Client()
            other_browser.force_login(trader)
            back = consent(other_browser, loopback_schwab, start=f"/brokers/{connection.pk}/reconnect/")
            answer = other_browser.get(back)
            assert answer.status_code == 302, said(answer)
            stored["auth"] = BrokerConnection.objects.get(pk=connection.pk).auth
            if refuse_old_link:
                return 400, {"error": "invalid_grant", "error_description": "refresh token expired"}
        return token_route(request)

    loopback_schwab.route("POST", "/v1/oauth/token", token)
    # 25 of its 30 minutes gone: the run renews the session first.
    set_auth(
        connection, issued_at=timezone.now() - timedelta(minutes=25), expires_at=timezone.now() + timedelta(minutes=5)
    )
    return stored


def test_a_reconnect_during_a_renewal_is_kept(trader_client, sim, trader):  # noqa: F811
    connection = connect(trader_client, sim)
    stored = reconnect_during_the_runs_renewal(sim, trader, connection, refuse_old_link=False)

    log = runs.run_inline(connection.pk)

    connection.refresh_from_db()
    assert log.status == "SUCCESS"
    assert connection.auth.refresh_token == stored["auth"].refresh_token, "the run wrote its old link back"


def test_a_refusal_of_the_old_link_during_a_reconnect_neither_wipes_the_new_one_nor_says_the_link_ended(
    trader_client,  # noqa: F811
    sim,  # noqa: F811
    trader,
    mailoutbox,
):
    trader.email = "alice@example.com"
    trader.save()
    connection = connect(trader_client, sim)
    stored = reconnect_during_the_runs_renewal(sim, trader, connection, refuse_old_link=True)

    log = runs.run_inline(connection.pk)

    connection.refresh_from_db()
    assert connection.auth is not None and connection.auth.refresh_token == stored["auth"].refresh_token
    assert log.status == "SUCCESS" and not connection.credentials_rejected
    assert not Notice.objects.filter(connection=connection, kind=Notice.Kind.CREDENTIALS).exists()
    assert not [m for m in mailoutbox if "Reconnect" in m.body]


def test_a_refused_login_does_not_hold_the_credentials_the_trader_saved_during_it(trader, settings):
    with FakeTradovate({"alice": 1}) as tradovate:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "tradovate": tradovate.url}
        connection = tradovate_connection(trader, tradovate)
        # A typo saved earlier: the run's login is refused...
        services.connection_update(connection.pk, credentials={**connection.credentials, "password": "typo"})
        login = tradovate._routes[("POST", "/auth/accesstokenrequest")]

        def refused_while_the_trader_fixes_it(request):
            # ...while the trader saves the right password on the edit page.
            fixed = BrokerConnection.objects.get(pk=connection.pk).credentials | {"password": PASSWORD}
            services.connection_update(connection.pk, credentials=fixed)
            return login(request)

        tradovate.route("POST", "/auth/accesstokenrequest", refused_while_the_trader_fixes_it)

        log = runs.run_inline(connection.pk)

    connection.refresh_from_db()
    assert log.status == "FAILED"
    assert not connection.credentials_rejected, "the new password was never tried, yet sync is held for it"
    assert not Notice.objects.filter(connection=connection, kind=Notice.Kind.CREDENTIALS).exists()
