"""Undoing a sync run in a real Chromium: from the history, through the count of what goes, to the run marked undone."""

import re

import pytest
from playwright.sync_api import expect

from brokers.models import SyncLog
from journal.models import Trade

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-4"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="frank", password=PASSWORD)


def test_a_trader_undoes_a_run_from_its_history(page, live_server, log_in, make_connection, trader, screenshot):
    connection = make_connection(credentials={"api_key": "k-browser-undo"})
    run = SyncLog.objects.get(connection=connection)
    assert Trade.objects.filter(account__connection=connection).count() == run.trades_imported > 0

    log_in(page, "frank", PASSWORD)
    page.goto(f"{live_server.url}/sync/connections/{connection.pk}/history/")
    page.get_by_role("link", name="Undo…").click()
    expect(page.locator("#undo-fills")).to_contain_text("DEMO-FUT-1")
    expect(page.locator("#undo-fills")).to_contain_text("DEMO-STK-1")
    screenshot(page, "undo-run-confirm")
    page.get_by_role("button", name="Undo this run").click()

    expect(page).to_have_url(re.compile(rf"/sync/connections/{connection.pk}/history/$"))
    expect(page.locator("body")).to_contain_text(f"Run undone: {run.trades_imported} fills removed")
    expect(page.locator("#sync-history")).to_contain_text("undone")
    assert not Trade.objects.filter(account__connection=connection).exists()
    expect(page.get_by_role("link", name="Undo…")).to_have_count(0)
