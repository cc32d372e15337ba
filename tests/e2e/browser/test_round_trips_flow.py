"""Round trips and the calendar in a real Chromium on a phone: a round trip opens onto its fills, nothing overflows."""

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.factories import SUNDAY_EVENING, account_with, fill

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-3"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="erin", password=PASSWORD)


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_a_round_trip_opens_onto_its_fills_and_the_calendar_fits_a_phone(
    phone, live_server, log_in, trader, screenshot
):
    account_with(
        trader,
        [
            fill(1, "BUY", 2, "5900.00", SUNDAY_EVENING),
            fill(2, "SELL", 1, "5905.00", SUNDAY_EVENING + timedelta(minutes=5)),
            fill(3, "SELL", 1, "5910.25", SUNDAY_EVENING + timedelta(minutes=20)),
        ],
    )
    log_in(phone, "erin", PASSWORD)
    phone.goto(f"{live_server.url}/trades/round-trips/")
    expect(phone.locator("#round-trip-summary")).to_contain_text("1 round trip")
    screenshot(phone, "round-trips-phone-closed", full_page=True)
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.get_by_text("3 fills").click()
    fills = phone.locator(".fills-of-round-trip")
    expect(fills).to_contain_text("ESZ6-1")
    expect(fills).to_contain_text("ESZ6-3")
    screenshot(phone, "round-trips-phone", full_page=True)

    phone.goto(f"{live_server.url}/trades/calendar/?month=2026-03")
    monday = phone.locator('td[data-day="2026-03-02"]')
    # (5 + 10.25) points × $50 less three fills' fees of $2.25 a contract.
    expect(monday).to_contain_text("753.50 USD")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(phone, "calendar-phone", full_page=True)
