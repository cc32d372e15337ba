"""Connect with Charles Schwab in a real Chromium: the loopback Schwab's consent page, deny, allow,
trades arriving, the link's hard end, and Reconnect keeping the connection and its trades."""

from dataclasses import replace

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from brokers.models import BrokerConnection
from journal.models import Trade
from sync import runs
from tests.fakes.schwab import ACCOUNTS, SchwabSim, configure_app, equity_trade

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-1"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="carol", password=PASSWORD)


@pytest.fixture
def sim(settings, live_server):
    with SchwabSim() as sim:
        configure_app(settings, sim, f"{live_server.url}/brokers/oauth/callback/")
        now = timezone.now()
        sim.transactions[ACCOUNTS[0][1]] = [
            equity_trade(n, at=f"{now - timezone.timedelta(days=n):%Y-%m-%dT%H:%M:%S}+0000") for n in (1, 2, 3)
        ]
        yield sim


def test_connect_deny_allow_then_reconnect_after_the_link_ended(page, live_server, log_in, trader, sim, screenshot):
    log_in(page, "carol", PASSWORD)
    page.goto(f"{live_server.url}/brokers/add/?broker=schwab")
    connect = page.get_by_role("link", name="Connect with Charles Schwab")
    expect(connect).to_be_visible()
    screenshot(page, "oauth-connect", readme=True)

    # Deny at the broker: a clear message, nothing saved.
    connect.click()
    page.get_by_role("link", name="Deny").click()
    expect(page.locator(".messages")).to_contain_text("You declined access at Charles Schwab")
    assert not BrokerConnection.objects.exists()

    # Allow: back on the brokers page with the accounts listed and the trades in.
    page.goto(f"{live_server.url}/brokers/add/?broker=schwab")
    page.get_by_role("link", name="Connect with Charles Schwab").click()
    expect(page.get_by_role("heading", name="Allow Trade Journal to read your accounts?")).to_be_visible()
    page.get_by_role("link", name="Allow").click()
    expect(page.locator(".messages")).to_contain_text("Charles Schwab is connected")
    connection = BrokerConnection.objects.get(broker_type="schwab")
    card = page.locator(f"#connection-{connection.pk}")
    expect(card.locator(".accounts")).to_contain_text("Schwab ····5678")
    expect(card.locator(".trade-count")).to_have_text("3")
    expect(card.locator(".link-expiry")).to_have_text("link expires in 6 days")

    # Seven days later Schwab ends the link: the next sync fails and asks to reconnect.
    connection.auth = replace(
        connection.auth, expires_at=timezone.now() - timezone.timedelta(minutes=1), refresh_expires_at=timezone.now()
    )
    connection.save()
    runs.run_inline(connection.pk)
    page.reload()
    expect(card.locator("[data-status]")).to_have_attribute("data-status", "ERROR")
    expect(card.locator(".state-line")).to_contain_text("The link ended on")
    expect(card.locator(".state-line")).to_contain_text("Press Reconnect")
    expect(card.locator(".facts")).to_contain_text("on hold until you reconnect")
    screenshot(page, "oauth-reconnect", readme=True)

    # Reconnect: the same card, its trades kept, and the one made meanwhile arrives at once.
    sim.transactions[ACCOUNTS[0][1]].append(equity_trade(4, at=f"{timezone.now():%Y-%m-%dT%H:%M:%S}+0000"))
    card.get_by_role("link", name="Reconnect").click()
    page.get_by_role("link", name="Allow").click()
    expect(page.locator(".messages")).to_contain_text("Reconnected Charles Schwab")
    expect(card.locator("[data-status]")).to_have_attribute("data-status", "CONNECTED")
    expect(card.locator(".trade-count")).to_have_text("4")
    assert BrokerConnection.objects.count() == 1
    assert Trade.objects.filter(account__connection=connection).count() == 4
