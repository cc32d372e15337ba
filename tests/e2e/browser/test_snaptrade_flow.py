"""Connect through SnapTrade in a real Chromium: the loopback SnapTrade's portal page, accounts and
trades arriving, a broken brokerage link, and Reconnect keeping the connection and its trades."""

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from brokers.models import BrokerConnection
from sync import runs
from tests.fakes.snaptrade import SnapTradeSim, configure

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-1"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="dana", password=PASSWORD)


@pytest.fixture
def sim(settings):
    with SnapTradeSim() as sim:
        configure(settings, sim)
        yield sim


def days_ago(n: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


def test_connect_in_the_portal_then_reconnect_a_broken_link(page, live_server, log_in, trader, sim, screenshot):
    log_in(page, "dana", PASSWORD)
    page.goto(f"{live_server.url}/brokers/add/?broker=snaptrade")
    expect(page.get_by_role("link", name="Connect through SnapTrade")).to_be_visible()
    screenshot(page, "snaptrade-connect")

    page.get_by_role("link", name="Connect through SnapTrade").click()
    expect(page).to_have_title("SnapTrade Connection Portal (simulator)")
    page.locator("#portal-connect").click()
    expect(page.locator(".messages")).to_contain_text("(SnapTrade) is connected")
    connection = BrokerConnection.objects.get(broker_type="snaptrade")
    card = page.locator(f"#connection-{connection.pk}")
    expect(card.locator(".accounts")).to_contain_text("····")

    # The trader trades; the next scheduled sync (run here in-process) brings the fills, not the dividend.
    first_account = connection.accounts.order_by("external_id").first().external_id
    for fill in (
        dict(type="BUY", symbol="MSFT", units=5, price=410.0, trade_date=days_ago(3)),
        dict(type="SELL", symbol="MSFT", units=5, price=415.5, trade_date=days_ago(2)),
        dict(type="DIVIDEND", symbol="MSFT", units=0, price=0, amount=3.1, trade_date=days_ago(1)),
    ):
        sim.add_activity(first_account, **fill)
    runs.run_inline(connection.pk)
    page.reload()
    expect(card.locator(".trade-count")).to_have_text("2")

    # The brokerage ends the link: SnapTrade marks it disabled and the next sync asks to reconnect.
    authorization_id = connection.credentials["authorization_id"]
    sim.disable(authorization_id)
    runs.run_inline(connection.pk)
    page.reload()
    expect(card.locator("[data-status]")).to_have_attribute("data-status", "ERROR")
    expect(card.locator(".state-line")).to_contain_text("Press Reconnect")
    screenshot(page, "snaptrade-reconnect")

    # Reconnect in the portal: the same card, its trades kept, and the fill made meanwhile arrives.
    account = sim.accounts_of(authorization_id)[0]["id"]
    sim.add_activity(account, type="BUY", symbol="NVDA", units=2, price=120.0, trade_date=days_ago(0.2))
    card.get_by_role("link", name="Reconnect").click()
    page.locator("#portal-connect").click()
    expect(page.locator(".messages")).to_contain_text("Reconnected")
    expect(card.locator("[data-status]")).to_have_attribute("data-status", "CONNECTED")
    expect(card.locator(".trade-count")).to_have_text("3")
    assert BrokerConnection.objects.count() == 1
