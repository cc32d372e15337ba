"""The file import's page, card, API and command: what each says, and never a server error."""

import dataclasses
import io

import pytest
from django.core.management import CommandError, call_command

from journal.files import formats, template
from journal.models import Trade
from tests import factories
from tests.journal.files import samples
from tests.sync.file_imports import (
    HEADER,
    api_client,
    imported,
    upload,
)

pytestmark = pytest.mark.django_db


def test_the_page_imports_a_file_into_the_traders_account_and_says_what_it_did(trader_client, account):
    page = trader_client.get(f"/sync/accounts/{account.pk}/import/")
    assert page.status_code == 200 and b"Import a broker file" in page.content
    answer = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(template.EXAMPLE)})
    text = answer.content.decode()
    assert answer.status_code == 200
    assert "<strong>3</strong> fills imported" in text and "<strong>0</strong> already there" in text
    again = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(template.EXAMPLE)}).content
    assert b"<strong>3</strong> already there" in again
    history = trader_client.get(f"/sync/connections/{account.connection_id}/history/").content.decode()
    assert 'File import <span class="muted">(fills.csv)</span>' in history


def test_the_page_names_the_row_and_column_of_a_bad_file_and_stores_nothing(trader_client, account):
    bad = HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,a\nU1234567,soon,AAPL,stock,buy,1,10,,b\n"
    answer = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(bad)})
    assert answer.status_code == 400
    assert "Row 3, column executed_at: &#x27;soon&#x27; is not ISO 8601" in answer.content.decode()
    assert not Trade.objects.exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x01\x02" * 1000, "\u00e9\u4e2d".encode("utf-16"), b"a," * 200_000, b"x" * 1_100_000 + b"\n"],
    ids=["empty", "binary", "utf16-nonsense", "wide-header", "huge-line"],
)
def test_odd_uploads_get_an_answer_not_a_server_error(trader_client, account, data):
    answer = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(data)})
    assert answer.status_code == 400
    assert not Trade.objects.exists()


def test_another_traders_account_is_not_found_and_cannot_be_posted_into(trader_client, account, other_trader):
    theirs = factories.connection(other_trader, label="Theirs", sync_enabled=False).accounts.create(external_id="X")
    assert trader_client.get(f"/sync/accounts/{theirs.pk}/import/").status_code == 404
    answer = trader_client.post("/sync/import/", {"account": theirs.pk, "file": upload(template.EXAMPLE)})
    assert answer.status_code == 400 and b"Select a valid choice" in answer.content
    assert not Trade.objects.exists()


def test_the_template_downloads_with_its_three_example_rows(trader_client):
    answer = trader_client.get("/sync/import/template.csv")
    assert answer["Content-Type"].startswith("text/csv") and "attachment" in answer["Content-Disposition"]
    assert answer.content.decode().count("\n") == 4


def test_the_card_links_to_the_import_of_its_accounts(trader_client, account):
    page = trader_client.get("/brokers/").content.decode()
    assert f"/sync/import/?connection={account.connection_id}" in page
    form = trader_client.get(f"/sync/import/?connection={account.connection_id}").content.decode()
    assert f'<option value="{account.pk}" selected>' in form


def test_the_api_imports_a_file_and_answers_with_the_counts(trader, account):
    client = api_client(trader)
    answer = client.post(f"/api/accounts/{account.pk}/import/", {"file": upload(template.EXAMPLE)}, format="multipart")
    assert answer.status_code == 201
    body = answer.json()
    assert (body["imported"], body["already_there"], body["format"]) == (3, 0, "template")
    assert client.get(f"/api/connections/{account.connection_id}/logs/").json()["results"][0]["trigger"] == "file"
    again = client.post(f"/api/accounts/{account.pk}/import/", {"file": upload(template.EXAMPLE)}, format="multipart")
    assert again.json()["already_there"] == 3


def test_the_api_refuses_a_bad_file_naming_row_and_column_and_stores_nothing(trader, account):
    bad = HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,ten,,a\n"
    answer = api_client(trader).post(f"/api/accounts/{account.pk}/import/", {"file": upload(bad)}, format="multipart")
    assert answer.status_code == 400
    assert answer.json() | {"sync_log": None} == {
        "error": "Row 2, column price: 'ten' is not a number",
        "row": 2,
        "column": "price",
        "sync_log": None,
    }
    assert not Trade.objects.exists()


def test_the_api_knows_no_other_traders_account_and_asks_for_a_file(trader, account, other_trader):
    theirs = factories.connection(other_trader, label="Theirs", sync_enabled=False).accounts.create(external_id="X")
    client = api_client(trader)
    assert client.post(f"/api/accounts/{theirs.pk}/import/", {"file": upload(template.EXAMPLE)}).status_code == 404
    missing = client.post(f"/api/accounts/{account.pk}/import/", {"format": "template"}, format="multipart")
    assert missing.status_code == 400 and missing.json()["column"] == "file"
    wrong_zone = client.post(
        f"/api/accounts/{account.pk}/import/", {"file": upload(template.EXAMPLE), "time_zone": "Mars/Base"}
    )
    assert wrong_zone.status_code == 400 and wrong_zone.json()["column"] == "time_zone"
    assert not Trade.objects.exists()


def test_the_command_imports_a_file_and_prints_the_counts(account, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(samples.TRADOVATE_ORDERS)
    out = io.StringIO()
    account.name = "DEMO123456"
    account.save()
    call_command("import_file", "--account", str(account.pk), str(path), stdout=out)
    assert "tradovate_orders: 2 imported, 0 already there, 1 not a fill" in out.getvalue()
    assert "Note: Tradovate's exports carry no fees" in out.getvalue()


def test_the_command_refuses_a_bad_file_with_its_row_and_column(account, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,-1,10,,a\n")
    with pytest.raises(CommandError, match="Nothing imported: Row 2, column quantity"):
        call_command("import_file", "--account", str(account.pk), str(path))
    with pytest.raises(CommandError, match="No account with id 999"):
        call_command("import_file", "--account", "999", str(path))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_file", "--account", str(account.pk), str(tmp_path / "missing.csv"))
    assert not Trade.objects.exists()


def test_contract_sizes_reach_the_import_from_the_page_and_the_command(trader_client, mt5_account, tmp_path):
    answer = trader_client.post(
        "/sync/import/",
        {"account": mt5_account.pk, "file": upload(samples.MT5_REPORT), "contract_sizes": "EURUSD=lots"},
    )
    assert answer.status_code == 400 and b"is not SYMBOL=size" in answer.content
    refused = trader_client.post("/sync/import/", {"account": mt5_account.pk, "file": upload(samples.MT5_REPORT)})
    assert b"contract size of EURUSD is unknown" in refused.content
    path = tmp_path / "report.html"
    path.write_text(samples.MT5_REPORT)
    with pytest.raises(CommandError, match="Row 18, column Volume"):
        call_command("import_file", "--account", str(mt5_account.pk), str(path))
    out = io.StringIO()
    call_command(
        "import_file", "--account", str(mt5_account.pk), str(path), "--contract-size", "EURUSD=100000", stdout=out
    )
    assert "metatrader5: 2 imported" in out.getvalue()


def test_the_card_says_its_last_run_was_a_file_import(trader_client, account):
    imported(account, template.EXAMPLE)
    page = trader_client.get("/brokers/").content.decode()
    assert "3 imported, 0 skipped · a file you imported" in page
    imported(account, b"garbage")
    page = trader_client.get("/brokers/").content.decode()
    assert "0 imported, 0 skipped (failed) · a file you imported" in page


def test_a_failure_on_our_side_stores_nothing_and_answers_without_a_server_error(trader_client, account, monkeypatch):
    original = formats.BY_KEY["template"]

    def broken(stream, encoding, options):
        yield from original.read(stream, encoding, options)
        raise KeyError("a bug")

    monkeypatch.setitem(formats.BY_KEY, "template", dataclasses.replace(original, read=broken))
    answer = trader_client.post(
        "/sync/import/", {"account": account.pk, "file": upload(template.EXAMPLE), "format": "template"}
    )
    assert answer.status_code == 400 and b"failed on our side" in answer.content
    assert not Trade.objects.exists()


@pytest.mark.parametrize("connection", ["²", "99999999999999999999999", "-1", "x", ""])
def test_an_odd_connection_in_the_address_opens_the_form_without_a_choice(trader_client, account, connection):
    assert trader_client.get("/sync/import/", {"connection": connection}).status_code == 200


def test_an_account_id_beyond_any_stored_one_is_not_found(trader_client, account):
    assert trader_client.get("/sync/accounts/99999999999999999999999/import/").status_code == 404
