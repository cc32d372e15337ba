"""The broker picker in a real Chromium: filtering as the trader types, choosing by keyboard, a phone's width."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-3"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="erin", password=PASSWORD)


def test_typing_tops_then_down_and_enter_opens_topstepx(page, live_server, log_in, trader, screenshot):
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    log_in(page, "erin", PASSWORD)
    page.goto(f"{live_server.url}/brokers/add/")
    search = page.get_by_label("Find your broker")
    expect(search).to_be_focused()
    links = page.locator("#picker-results a.picker-way")
    assert links.count() > 100
    search.press_sequentially("tops", delay=50)
    # No button pressed: the list narrows to Topstep's one entry (TopstepX, then its Tradovate accounts'
    # two ways in) and the address follows.
    expect(links).to_have_count(3)
    expect(links.first).to_contain_text("Topstep (TopstepX)")
    expect(page.locator("#picker-count")).to_contain_text("1 of")
    assert page.url.endswith("/brokers/add/?q=tops")
    screenshot(page, "picker-tops")
    search.press("ArrowDown")
    expect(links.first).to_be_focused()
    # Up goes back to the box, Down into the list again, Enter chooses.
    page.keyboard.press("ArrowUp")
    expect(search).to_be_focused()
    search.press("ArrowDown")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/brokers/add/?broker=projectx&firm=topstep")
    expect(page.get_by_label("Prop firm")).to_have_value("topstep")
    # The script ran under the Content Security Policy without a complaint.
    assert not [e for e in errors if "Content Security Policy" in e]


def test_arrow_keys_walk_the_list_in_order(page, live_server, log_in, trader):
    log_in(page, "erin", PASSWORD)
    page.goto(f"{live_server.url}/brokers/add/")
    search = page.get_by_label("Find your broker")
    search.press_sequentially("tradovate", delay=50)
    links = page.locator("#picker-results a.picker-way")
    # NinjaTrader's brokerage accounts, through Tradovate, then Tradovate: two ways into each; then the
    # prop firms whose accounts are Tradovate accounts, found by their note.
    expect(links.nth(4)).to_contain_text("Apex Trader Funding")
    expect(links.nth(3)).to_contain_text("Tradovate")
    search.press("ArrowDown")
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    expect(links.nth(3)).to_be_focused()
    expect(links.nth(3)).to_contain_text("Tradovate")
    expect(links.nth(3)).to_contain_text("Sign in at the broker")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("/brokers/add/?broker=tradovate_signin")


def test_the_picker_fits_a_phone(browser, live_server, log_in, trader, screenshot):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        log_in(page, "erin", PASSWORD)
        page.goto(f"{live_server.url}/brokers/add/")
        expect(page.get_by_role("heading", name=re.compile("Crypto"))).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.get_by_label("Find your broker").fill("robin")
        expect(page.locator("#picker-results a.picker-way")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "picker-phone", full_page=True)
    finally:
        context.close()
