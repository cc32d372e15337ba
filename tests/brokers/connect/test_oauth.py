"""Connect with Charles Schwab by signing in, against a loopback Schwab: state, tokens, renewal, reconnect.

The pages run through Django's test client; the broker's consent page and token endpoint are
the simulator's (tests/fakes/schwab.py), reached over real HTTP. Tasks are eager, so the first
sync runs when the callback's transaction commits.
"""

from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlparse

import pytest
import requests
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from brokers import periodic_tasks, services
from brokers.models import BrokerAccount, BrokerConnection
from journal.models import Trade
from sync import runs
from sync.models import Notice
from tests.fakes.schwab import ACCOUNTS, SchwabSim, configure_app, equity_trade, option_trade

# Only tests whose first sync or e-mail runs on commit pay for a transactional database.
pytestmark = pytest.mark.django_db
committing = pytest.mark.django_db(transaction=True)
CALLBACK = "http://testserver/brokers/oauth/callback/"


@pytest.fixture
def sim(settings):
    with SchwabSim() as sim:
        configure_app(settings, sim, CALLBACK)
        first = ACCOUNTS[0][1]
        sim.transactions[first] = [equity_trade(1), equity_trade(2, amount=-10, price=232.0), option_trade(3)]
        for row, day in zip(sim.transactions[first], ("2026-11-25", "2026-11-26", "2026-11-27"), strict=True):
            row["time"] = f"{day}T14:30:00+0000"
        yield sim


def consent(client, sim, answer="allow", start="/brokers/oauth/schwab/connect/") -> str:
    """Start the sign-in, answer the broker's consent page; returns the callback URL the broker sends back."""
    started = client.get(start)
    assert started.status_code == 302 and started["Location"].startswith(sim.authorize_url)
    page = requests.get(started["Location"], timeout=5)
    assert "Allow" in page.text
    decide = requests.get(
        page.text.split(f'id="{answer}" href="')[1].split('"')[0].replace("&amp;", "&"),
        allow_redirects=False,
        timeout=5,
    )
    back = decide.headers["Location"]
    assert back.startswith(CALLBACK)
    parsed = urlparse(back)
    return f"{parsed.path}?{parsed.query}"


def said(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


def connect(client, sim) -> BrokerConnection:
    answer = client.get(consent(client, sim), follow=True)
    assert "Charles Schwab is connected" in said(answer), said(answer)
    return BrokerConnection.objects.get(broker_type="schwab")


@committing
def test_connect_stores_tokens_encrypted_lists_accounts_and_syncs(trader_client, sim):
    connection = connect(trader_client, sim)
    assert set(connection.accounts.values_list("external_id", flat=True)) == {h for _, h in ACCOUNTS}
    assert Trade.objects.filter(account__connection=connection).count() == 3
    auth = connection.auth
    assert auth.refresh_token and auth.token in sim.access
    assert auth.token not in connection.session_ciphertext and auth.refresh_token not in connection.session_ciphertext
    assert timedelta(days=6, hours=23) < auth.refresh_expires_at - timezone.now() <= timedelta(days=7)
    page = trader_client.get("/brokers/").content.decode()
    # The card names accounts by their last four digits; the full number is nowhere.
    assert "Schwab ····5678" in page and "12345678" not in page
    assert "link expires in 6 days" in page and "Reconnect" in page
    # Its first sync compared the journal's positions with Schwab's, and they agree.
    detail = connection.sync_logs.get().detail
    assert all(account["differences"] == [] for account in detail.values())


def test_denied_consent_says_so_and_saves_nothing(trader_client, sim):
    answer = trader_client.get(consent(trader_client, sim, answer="deny"), follow=True)
    assert "You declined access at Charles Schwab" in said(answer)
    assert not BrokerConnection.objects.exists()


def test_a_replayed_callback_is_refused(trader_client, sim):
    callback = consent(trader_client, sim)
    connect_once = trader_client.get(callback, follow=True)
    assert "is connected" in said(connect_once)
    replay = trader_client.get(callback, follow=True)
    assert "already used" in said(replay)
    assert BrokerConnection.objects.count() == 1


def test_a_callback_in_another_traders_browser_saves_nothing(trader_client, sim, other_trader):
    callback = consent(trader_client, sim)
    other = Client()
    other.force_login(other_trader)
    answer = other.get(callback, follow=True)
    assert "does not belong to a sign-in started in this browser session" in said(answer)
    assert not BrokerConnection.objects.exists()
    # The trader who started it can still finish it.
    assert "is connected" in said(trader_client.get(callback, follow=True))


def test_a_sign_in_that_took_too_long_is_refused(trader_client, sim, settings):
    callback = consent(trader_client, sim)
    session = trader_client.session
    flows = session["oauth_flows"]
    for flow in flows.values():
        flow["started"] -= settings.OAUTH_STATE_MAX_AGE_S + 1
    session["oauth_flows"] = flows
    session.save()
    answer = trader_client.get(callback, follow=True)
    assert "took longer than 10 minutes" in said(answer)
    assert not BrokerConnection.objects.exists()


def test_an_expired_code_is_refused(trader_client, sim):
    sim.code_lifetime_s = -1
    answer = trader_client.get(consent(trader_client, sim), follow=True)
    assert "did not accept the sign-in" in said(answer)
    assert not BrokerConnection.objects.exists()


def test_the_token_endpoint_checks_pkce(trader_client, sim):
    callback = consent(trader_client, sim)
    session = trader_client.session
    flows = session["oauth_flows"]
    for flow in flows.values():
        flow["verifier"] = "x" * 64
    session["oauth_flows"] = flows
    session.save()
    answer = trader_client.get(callback, follow=True)
    assert "did not accept the sign-in" in said(answer)
    assert not BrokerConnection.objects.exists()


def test_an_unconfigured_broker_shows_the_operators_steps(trader_client, settings):
    settings.BROKER_OAUTH_APPS = {}
    page = trader_client.get("/brokers/add/?broker=schwab")
    assert page.status_code == 200
    text = page.content.decode()
    assert "not set up on this installation" in text
    assert "SCHWAB_CLIENT_ID" in text and "SCHWAB_CLIENT_SECRET" in text and "OAUTH_CALLBACK_URL" in text
    answer = trader_client.get("/brokers/oauth/schwab/connect/", follow=True)
    assert "not set up on this installation" in said(answer)


def test_schwab_cannot_be_added_with_typed_credentials(trader_client, sim, trader):
    answer = trader_client.post("/brokers/add/", {"broker_type": "schwab", "label": "S", "sync_interval_min": 15})
    assert answer.status_code == 200 and "Connect with Charles Schwab</a>" in answer.content.decode()
    with pytest.raises(ValidationError) as info:
        services.connection_create(owner=trader, broker_type="schwab", label="S", credentials={})
    assert "use Connect with Charles Schwab" in info.value.message_dict["broker_type"][0]
    assert not BrokerConnection.objects.exists()


def set_auth(connection, **changes):
    connection.refresh_from_db()
    connection.auth = replace(connection.auth, **changes)
    connection.save()


@committing
def test_the_access_token_is_renewed_before_it_expires(trader_client, sim):
    connection = connect(trader_client, sim)
    old = connection.auth.token
    # 25 of its 30 minutes gone: less than the renewal margin is left.
    set_auth(
        connection, issued_at=timezone.now() - timedelta(minutes=25), expires_at=timezone.now() + timedelta(minutes=5)
    )
    log = runs.run_inline(connection.pk)
    assert log.status == "SUCCESS" and sim.refreshes == 1
    connection.refresh_from_db()
    assert connection.auth.token != old and connection.auth.expires_at > timezone.now() + timedelta(minutes=25)

    # An access token that already expired is renewed too: the refresh token is still good.
    set_auth(connection, expires_at=timezone.now() - timedelta(minutes=1))
    assert runs.run_inline(connection.pk).status == "SUCCESS" and sim.refreshes == 2


def hold_after_failed_run(connection):
    log = runs.run_inline(connection.pk)
    connection.refresh_from_db()
    assert log.status == "FAILED" and connection.status == "ERROR" and connection.credentials_rejected
    assert not PeriodicTask.objects.get(name=periodic_tasks.task_name(connection.pk)).enabled, "auto-sync holds"
    notice = Notice.objects.get(connection=connection, kind=Notice.Kind.CREDENTIALS)
    assert "press Reconnect" in notice.message


@committing
def test_past_the_hard_end_the_connection_errors_asks_to_reconnect_and_reconnect_keeps_everything(
    trader_client, sim, mailoutbox, trader
):
    trader.email = "alice@example.com"
    trader.save()
    connection = connect(trader_client, sim)
    accounts = dict(BrokerAccount.objects.filter(connection=connection).values_list("external_id", "sync_cursor"))
    trade_ids = set(Trade.objects.filter(account__connection=connection).values_list("pk", flat=True))
    set_auth(connection, expires_at=timezone.now() - timedelta(minutes=1), refresh_expires_at=timezone.now())
    hold_after_failed_run(connection)
    assert sim.refreshes == 0, "a refresh token past its hard end is not even tried"
    assert "The link ended on" in connection.last_sync_error
    assert any("Reconnect" in m.body for m in mailoutbox)
    page = trader_client.get("/brokers/").content.decode()
    assert "The link to Charles Schwab has ended" in page

    answer = trader_client.get(consent(trader_client, sim, start=f"/brokers/{connection.pk}/reconnect/"), follow=True)
    assert "Reconnected Charles Schwab" in said(answer)
    connection.refresh_from_db()
    assert BrokerConnection.objects.count() == 1
    assert connection.status == "CONNECTED" and not connection.credentials_rejected
    assert PeriodicTask.objects.get(name=periodic_tasks.task_name(connection.pk)).enabled
    kept = dict(BrokerAccount.objects.filter(connection=connection).values_list("external_id", "sync_cursor"))
    assert kept.keys() == accounts.keys() and all(kept[k] >= accounts[k] for k in accounts)
    assert trade_ids <= set(Trade.objects.filter(account__connection=connection).values_list("pk", flat=True))
    assert connection.sync_logs.filter(status="SUCCESS").count() == 2, "the history stays; reconnect synced at once"


@committing
def test_a_refused_refresh_token_errors_with_reconnect(trader_client, sim):
    connection = connect(trader_client, sim)
    sim.end_every_link()
    set_auth(connection, expires_at=timezone.now() - timedelta(minutes=1))
    hold_after_failed_run(connection)
    assert sim.refreshes == 0 and not connection.auth, "the refused link is dropped"
    assert "Charles Schwab refused to renew the link" in connection.last_sync_error


def test_reconnect_of_typed_credentials_goes_to_their_form(trader_client, trader):
    demo = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    answer = trader_client.get(f"/brokers/{demo.pk}/reconnect/")
    assert answer.status_code == 302 and answer["Location"] == f"/brokers/{demo.pk}/edit/"


@committing
def test_the_trader_is_warned_days_before_the_hard_end_and_on_the_last_day(
    trader_client, sim, settings, mailoutbox, trader
):
    settings.OAUTH_LINK_EXPIRY_WARNING_DAYS = 2
    trader.email = "alice@example.com"
    trader.save()
    connection = connect(trader_client, sim)
    warnings = Notice.objects.filter(connection=connection, kind=Notice.Kind.LINK_EXPIRING)
    assert not warnings.exists()

    set_auth(connection, refresh_expires_at=timezone.now() + timedelta(days=1, hours=20))
    runs.run_inline(connection.pk)
    runs.run_inline(connection.pk)
    assert warnings.count() == 1 and "Press Reconnect" in warnings.get().message

    assert len(mailoutbox) == 1 and "the link to Charles Schwab ends on" in mailoutbox[0].subject

    # A day later (the hard end and the sent warning both a day nearer): the last day.
    set_auth(connection, refresh_expires_at=connection.link_expires_at - timedelta(days=1))
    warnings.update(created_at=warnings.get().created_at - timedelta(days=1))
    runs.run_inline(connection.pk)
    runs.run_inline(connection.pk)
    assert warnings.count() == 2, "once more on the last day, and only once"
    assert len(mailoutbox) == 2
    assert "link expires today" in trader_client.get("/brokers/").content.decode()
