"""A file imported into an account: the sync's dedup, positions and history; nothing stored from a bad file."""

from datetime import UTC, datetime, timedelta

import pytest

from brokers.models import SyncLog
from journal.files import template
from journal.models import RoundTrip, Trade
from tests.journal.files import samples
from tests.sync.file_imports import (
    HEADER,
    imported,
)

pytestmark = pytest.mark.django_db


def test_a_template_file_lands_as_fills_with_round_trips_and_a_file_run_in_the_history(account):
    result = imported(account, template.EXAMPLE)
    assert (result.ok, result.imported, result.already_there, result.format) == (True, 3, 0, "template")
    assert Trade.objects.filter(account=account).count() == 3
    assert RoundTrip.objects.filter(account=account, symbol="MESH6", closed_at__isnull=True).exists()
    log = SyncLog.objects.get(pk=result.sync_log_id)
    assert (log.trigger, log.status, log.trades_imported) == ("file", "SUCCESS", 3)
    assert log.detail["file"]["name"] == "fills.csv" and len(log.detail["file"]["sha256"]) == 64
    assert log.detail["U1234567"]["imported"] == 3


def test_the_same_file_twice_is_already_there_the_second_time(account):
    account.name = "DEMO123456"
    account.save()
    assert imported(account, samples.TRADOVATE_ORDERS).imported == 2
    again = imported(account, samples.TRADOVATE_ORDERS)
    assert (again.imported, again.already_there, again.not_a_fill) == (0, 2, 1)
    assert Trade.objects.filter(account=account).count() == 2


def test_a_bad_row_after_thousands_of_good_ones_stores_nothing_and_names_row_and_column(account):
    start = datetime(2026, 3, 2, 15, tzinfo=UTC)
    rows = [f"U1234567,{(start + timedelta(seconds=n)).isoformat()},AAPL,stock,buy,1,10,,x{n}\n" for n in range(4500)]
    rows[4321] = rows[4321].replace(",buy,", ",bye,")
    result = imported(account, HEADER + "".join(rows))
    assert not result.ok and result.imported == 0
    assert result.error == "Row 4323, column side: 'bye' is neither buy nor sell"
    assert not Trade.objects.filter(account=account).exists()
    assert not RoundTrip.objects.filter(account=account).exists()
    log = SyncLog.objects.get(pk=result.sync_log_id)
    assert (log.status, log.trades_imported, log.error_message) == ("FAILED", 0, result.error)


def test_rows_of_another_account_are_left_out_and_counted(account):
    data = (
        HEADER
        + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,a\nU7654321,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,b\n"
    )
    result = imported(account, data)
    assert (result.imported, result.other_account) == (1, 1)


def test_busted_in_the_template_voids_the_fill_its_exec_id_stored(account):
    imported(account, HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,e-1\n")
    result = imported(
        account,
        "status," + HEADER.replace("\n", "") + "\nbusted,U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,e-1\n",
    )
    assert result.busted == 1
    assert Trade.objects.get(account=account).deleted_at is not None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty"),
        (b"\xff\xd8\xff\xe0 a picture", "do not recognise"),
        (b"<html><body>hello</body></html>", "do not recognise"),
        (b"<?xml version='1.0'?><FlexQueryResponse><FlexStatements", "XML cannot be read"),
    ],
)
def test_odd_files_are_refused_with_a_reason_and_store_nothing(account, data, message):
    result = imported(account, data)
    assert message in result.error
    assert not Trade.objects.exists()


def test_a_file_with_a_header_only_imports_nothing_and_says_so(account):
    result = imported(account, HEADER)
    assert result.ok and result.imported == 0
    assert result.notes == ["The file holds no fill for this account."]


def test_each_imported_fill_records_its_file_and_line(account):
    result = imported(account, template.EXAMPLE)
    rows = sorted(Trade.objects.filter(account=account).values_list("raw", flat=True), key=lambda r: r["file"]["row"])
    assert [r["file"] for r in rows] == [{"sha256": result.sha256, "row": n} for n in (2, 3, 4)]


def test_a_busted_template_row_without_id_voids_the_file_fill_of_the_same_content(account):
    row = "U1234567,2026-03-04T15:00:00Z,MESH6,future,buy,1,5812.25,5,\n"
    imported(account, HEADER + row)
    result = imported(account, "status," + HEADER.replace("\n", "") + "\nbusted," + row)
    assert result.busted == 1
    assert Trade.objects.get(account=account).deleted_at is not None
