"""A trader's whole journey in a real Chromium: connect, control the sync, watch it, read the trades.

Tasks are eager in tests, so every sync runs inside the request that asks for it; the live
badge is exercised by changing the status in the database and waiting for htmx's poll.
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from playwright.sync_api import expect

from brokers import periodic_tasks, services
from brokers.models import BrokerAccount, BrokerConnection
from journal.models import Trade

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-1"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="carol", password=PASSWORD)


def add_demo_connection(page, live_server, label: str, scenario: str) -> BrokerConnection:
    page.goto(f"{live_server.url}/brokers/add/?broker=demo")
    page.get_by_label("Label").fill(label)
    page.get_by_label("Demo API key").fill(f"{label}-key")
    page.get_by_label("Scenario").select_option(scenario)
    page.get_by_role("button", name="Test connection").click()
    # htmx swaps in the result; the typed secret stays in the field for the save below.
    expect(page.locator("#test-result .test-result")).to_be_visible()
    with page.expect_navigation():
        page.get_by_role("button", name="Save and start syncing").click()
    return BrokerConnection.objects.get(label=label)


def press(page, button):
    """Click a button that submits a form; returns the HTTP status the page ended on."""
    with page.expect_navigation() as navigation:
        button.click()
    return navigation.value.status


def test_trader_connects_controls_and_watches_a_broker(page, live_server, log_in, trader, settings, screenshot):
    settings.SYNC_NOW_RATE_LIMIT = "2/m"
    log_in(page, "carol", PASSWORD)

    # Add a connection: test it first, then save; the first sync runs at once.
    connection = add_demo_connection(page, live_server, "Demo", "normal")
    card = page.locator(f"#connection-{connection.pk}")
    badge = card.locator("[data-status]")
    expect(page.locator(".messages")).to_contain_text("Demo is connected")
    expect(badge).to_have_attribute("data-status", "CONNECTED")
    expect(card.locator(".trade-count")).not_to_have_text("0")
    expect(card.locator(".accounts")).to_contain_text("DEMO-FUT-1")
    task_name = periodic_tasks.task_name(connection.pk)

    # Auto-sync off and on again; the PeriodicTask follows.
    save = card.get_by_role("button", name="Save sync settings of Demo")
    card.get_by_role("switch", name="Auto-sync").uncheck()
    press(page, save)
    expect(badge).to_have_attribute("data-status", "PAUSED")
    assert not PeriodicTask.objects.get(name=task_name).enabled
    card.get_by_role("switch", name="Auto-sync").check()
    press(page, save)
    expect(badge).to_have_attribute("data-status", "CONNECTED")
    assert PeriodicTask.objects.get(name=task_name).enabled

    # Interval.
    card.get_by_label("Interval").select_option("30")
    press(page, save)
    expect(card.get_by_label("Interval")).to_have_value("30")
    task = PeriodicTask.objects.get(name=task_name)
    assert task.interval.every == 30 and task.expire_seconds == 30 * 60

    # The badge follows the database without a reload (htmx polls the status block).
    page.evaluate("window.stillTheSamePage = true")
    BrokerConnection.objects.filter(pk=connection.pk).update(status=BrokerConnection.Status.SYNCING)
    expect(badge).to_have_attribute("data-status", "SYNCING", timeout=10_000)
    screenshot(page, "brokers-syncing")
    BrokerConnection.objects.filter(pk=connection.pk).update(status=BrokerConnection.Status.CONNECTED)
    expect(badge).to_have_attribute("data-status", "CONNECTED", timeout=10_000)
    assert page.evaluate("window.stillTheSamePage") is True

    # A failed attempt shows RETRYING with which attempt, why, and when the next one runs;
    # a run that succeeds for some accounts only shows PARTIAL naming the others.
    BrokerConnection.objects.filter(pk=connection.pk).update(
        status=BrokerConnection.Status.SYNCING,
        next_attempt_reason="retry",
        next_attempt_at=timezone.now() + timedelta(minutes=5),
        last_sync_error="Attempt 2 of 4 failed: Demo is temporarily unavailable (HTTP 503). Retrying automatically.",
    )
    expect(badge).to_have_attribute("data-status", "RETRYING", timeout=10_000)
    expect(card.locator(".state-line")).to_contain_text("Attempt 2 of 4 failed")
    expect(card.locator(".state-line .next-attempt")).to_be_visible()
    screenshot(page, "brokers-retrying", readme=True)
    BrokerConnection.objects.filter(pk=connection.pk).update(
        status=BrokerConnection.Status.CONNECTED,
        next_attempt_reason="",
        next_attempt_at=None,
        last_sync_error="DEMO-STK-1: The demo broker's stocks account is down.",
    )
    expect(badge).to_have_attribute("data-status", "PARTIAL", timeout=10_000)
    expect(card.locator(".state-line")).to_contain_text("Some accounts did not sync: DEMO-STK-1")
    BrokerConnection.objects.filter(pk=connection.pk).update(last_sync_error="")
    expect(badge).to_have_attribute("data-status", "CONNECTED", timeout=10_000)

    # Sync now brings the trades (back) and the badge to CONNECTED.
    Trade.objects.filter(account__connection=connection).delete()
    BrokerAccount.objects.filter(connection=connection).update(sync_cursor=None)
    BrokerConnection.objects.filter(pk=connection.pk).update(status="ERROR", last_sync_error="Simulated hiccup.")
    page.reload()
    expect(badge).to_have_attribute("data-status", "ERROR")
    expect(card.locator(".trade-count")).to_have_text("0")
    assert press(page, card.get_by_role("button", name="Sync now Demo")) == 200
    # The "started" message is a readable line of text, not squeezed into the tooltip icon's shape.
    started = page.locator(".messages li.info")
    expect(started).to_contain_text("Sync of Demo started.")
    box = started.bounding_box()
    assert box["width"] > 300 and box["height"] >= 20
    assert started.evaluate("e => getComputedStyle(e).fontStyle") == "normal"
    expect(badge).to_have_attribute("data-status", "CONNECTED")
    expect(card.locator(".trade-count")).not_to_have_text("0")
    expect(card.locator(".last-run")).to_contain_text("imported")

    # A failing connection: saved, but the page does not call it connected.
    broken = add_demo_connection(page, live_server, "Broken", "auth_error")
    expect(page.locator(".messages li.warning")).to_contain_text(
        "Saved Broken, not verified yet: the connection test failed."
    )
    # ERROR with the broker's message and what to do, on hover and on focus.
    broken_card = page.locator(f"#connection-{broken.pk}")
    broken_badge = broken_card.locator("[data-status]")
    tooltip = broken_card.get_by_role("tooltip")
    expect(broken_badge).to_have_attribute("data-status", "ERROR")
    expect(tooltip).to_be_hidden()
    broken_badge.hover()
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text("The demo broker refused the login")
    expect(tooltip).to_contain_text("Edit the connection and save working credentials")
    screenshot(page, "brokers", readme=True, full_page=True)
    page.mouse.move(0, 0)
    expect(tooltip).to_be_hidden()
    broken_badge.focus()
    expect(tooltip).to_be_visible()
    page.keyboard.press("Escape")
    expect(tooltip).to_be_hidden()

    # Sync now too often: back on the brokers page with the real wait. The limit is 2 a minute;
    # a window may roll over between presses, so press until the limit answers.
    message = page.locator(".messages li.error")
    for _ in range(6):
        press(page, card.get_by_role("button", name="Sync now Demo"))
        if message.count():
            break
    expect(message).to_contain_text(re.compile(r"Try again in \d+ s\."))
    assert page.url == f"{live_server.url}/brokers/#connection-{connection.pk}"
    expect(card).to_be_visible()
    wait = int(re.search(r"Try again in (\d+) s", message.inner_text()).group(1))
    assert 1 <= wait <= 60
    screenshot(page, "brokers-429")

    # Trades in the trader's own time zone.
    page.get_by_role("link", name="Profile").click()
    page.get_by_label("Time zone").select_option("America/New_York")
    press(page, page.get_by_role("button", name="Save"))
    page.get_by_role("link", name="Trades").click()
    expect(page.locator("#trade-summary")).to_contain_text("Times in America/New_York")
    rows = page.locator("#trades tbody tr")
    assert rows.count() == 50
    latest = Trade.objects.filter(account__connection=connection).order_by("-executed_at", "-id").first()
    expect(rows.first.locator("time")).to_have_attribute("datetime", re.compile(r"-0[45]:00$"))
    page.get_by_label("Symbol").fill(latest.symbol)
    press(page, page.get_by_role("button", name="Filter"))
    expect(page.locator("#trades tbody td:nth-child(3)").first).to_have_text(latest.symbol)
    # The start of a symbol finds every symbol that begins with it.
    prefix = latest.symbol[:2].lower()
    page.get_by_label("Symbol").fill(prefix)
    press(page, page.get_by_role("button", name="Filter"))
    symbols = page.locator("#trades tbody td:nth-child(3)").all_inner_texts()
    assert symbols and all(symbol.lower().startswith(prefix) for symbol in symbols)
    screenshot(page, "trades", readme=True, full_page=False)


def test_phone_width_and_keyboard(browser, live_server, log_in, trader, screenshot):
    services.connection_create(
        owner=trader, broker_type="demo", label="Broken", credentials={"api_key": "k", "scenario": "auth_error"}
    )
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        log_in(page, "carol", PASSWORD)
        # Nothing wider than the phone's screen.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # The keyboard reaches the error badge and its tooltip opens on focus.
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.dataset.status === 'ERROR'"):
                break
        else:
            pytest.fail("Tab never reached the error badge")
        expect(page.get_by_role("tooltip")).to_be_visible()
        screenshot(page, "brokers-phone", full_page=True)
        page.goto(f"{live_server.url}/trades/")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        context.close()
