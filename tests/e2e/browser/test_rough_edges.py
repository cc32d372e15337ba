"""The rough edges a newcomer hit, in a real Chromium: broker fields, history on a phone, time zones, notices."""

import pytest
from playwright.sync_api import expect

from brokers import services
from brokers.models import SyncLog
from sync.models import Notice

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-2"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="dave", password=PASSWORD)


def test_choosing_a_broker_shows_its_fields_at_once(page, live_server, log_in, trader):
    log_in(page, "dave", PASSWORD)
    page.goto(f"{live_server.url}/brokers/add/?broker=demo")
    expect(page.get_by_label("Demo API key")).to_be_visible()
    expect(page.get_by_role("button", name="Choose")).to_be_hidden()
    page.get_by_label("Broker").focus()
    page.get_by_label("Broker").select_option("alpaca")
    # No button pressed: the Alpaca fields replace the demo ones and the address follows.
    expect(page.get_by_label("API key ID")).to_be_visible()
    expect(page.get_by_label("Demo API key")).to_have_count(0)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Alpaca")
    assert page.url.endswith("/brokers/add/?broker=alpaca")
    # The select itself was not replaced, so the keyboard is still on it.
    assert page.evaluate("document.activeElement.id") == "broker-select"


def test_history_is_readable_on_a_phone(browser, live_server, log_in, trader, screenshot):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Broken", credentials={"api_key": "k", "scenario": "auth_error"}
    )
    assert connection.sync_logs.filter(status=SyncLog.Status.FAILED).exists()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        log_in(page, "dave", PASSWORD)
        page.goto(f"{live_server.url}/sync/connections/{connection.pk}/history/")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        error = page.locator("#sync-history .sync-error").first
        expect(error).to_contain_text("refused the login")
        box = error.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        # Each value keeps its column's name beside it.
        assert error.evaluate("e => getComputedStyle(e, '::before').content") == '"Error"'
        screenshot(page, "history-phone", full_page=True)
    finally:
        context.close()


def test_time_zone_list_is_places_grouped_by_region(page, live_server, log_in, trader):
    log_in(page, "dave", PASSWORD)
    page.goto(f"{live_server.url}/trades/profile/")
    select = page.get_by_label("Time zone")
    values = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert "Europe/Berlin" in values and "Factory" not in values and "localtime" not in values
    assert len(values) < 450
    assert select.locator("optgroup").count() >= 9
    select.select_option("Asia/Tokyo")
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Times are now shown in Asia/Tokyo")


def test_a_credentials_notice_goes_away_once_the_credentials_work(page, live_server, log_in, trader):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Refused", credentials={"api_key": "k", "scenario": "auth_error"}
    )
    log_in(page, "dave", PASSWORD)
    notice = page.locator(".notices li.notice-credentials")
    expect(notice).to_contain_text("Refused")
    page.goto(f"{live_server.url}/brokers/{connection.pk}/edit/")
    page.get_by_label("Scenario").select_option("normal")
    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    expect(page.locator(f"#connection-{connection.pk} [data-status]")).to_have_attribute("data-status", "CONNECTED")
    expect(notice).to_have_count(0)
    assert Notice.objects.get(connection=connection, kind=Notice.Kind.CREDENTIALS).dismissed_at is not None
