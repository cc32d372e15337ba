"""Importing a broker file in a real Chromium: from the card to the result, then the row a bad file stops at."""

import pytest
from playwright.sync_api import expect

from journal.files import template
from journal.models import Trade
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-4"


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="fiona", password=PASSWORD)


def test_a_trader_imports_the_template_from_the_card_and_reads_what_a_bad_file_did(
    page, live_server, log_in, trader, screenshot, tmp_path
):
    connection = factories.connection(trader, label="Journal files", sync_enabled=False)
    connection.accounts.create(external_id="U1234567", name="Main account")
    good, bad = tmp_path / "fills.csv", tmp_path / "bad.csv"
    good.write_text(template.EXAMPLE)
    bad.write_text(template.EXAMPLE.replace(",sell,", ",sold,"))
    log_in(page, "fiona", PASSWORD)
    page.get_by_role("link", name="Import a file into Journal files").click()
    expect(page.get_by_label("Account")).to_have_value(str(connection.accounts.get().pk))
    page.locator("#id_file").set_input_files(str(good))
    # What the progress bar showed while the file went up (base.html's handler runs first).
    page.evaluate(
        """window.__shown = [];
        document.addEventListener("htmx:xhr:progress", () => {
          const box = document.querySelector("#import-progress");
          window.__shown.push([box.hidden, box.querySelector("progress").value, box.textContent.trim()]);
        });"""
    )
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-result")).to_contain_text("3 fills imported")
    shown = page.evaluate("window.__shown")
    assert shown and not any(hidden for hidden, _, _ in shown), shown
    assert shown[-1][1:] == [100, "Importing: the journal is reading the file…"], shown
    screenshot(page, "file-import", full_page=True)

    page.locator("#id_file").set_input_files(str(bad))
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#import-result")).to_contain_text("Row 3, column side: 'sold' is neither buy nor sell")
    assert Trade.objects.count() == 3
