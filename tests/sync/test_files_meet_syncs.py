"""A file and a sync of the same fills, in either order, store each fill once: by the broker's id, or by content."""

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from journal.files import template
from journal.models import RoundTrip, Trade
from sync import locks
from sync.runs import run_inline
from tests import factories
from tests.journal.files import samples
from tests.sync.file_imports import (
    HEADER,
    flex_connection,
    flex_file,
    imported,
    metaapi_deals,
    synced,
    tradovate_api_fills,
)

pytestmark = pytest.mark.django_db


def test_a_flex_file_then_the_sync_stores_each_execution_once(trader, flex):
    connection = flex_connection(trader)
    account = connection.accounts.create(external_id="U1111111", name="U1111111")
    result = imported(account, flex_file(flex), name="flex.xml")
    assert result.imported == 4 and result.not_a_fill > 0  # the ORDER and CLOSED_LOT rows of the same fills
    log = run_inline(connection.pk)
    assert (log.status, log.trades_imported) == ("SUCCESS", 0)
    assert Trade.objects.filter(account=account).count() == 4
    assert set(Trade.objects.values_list("broker_trade_id", flat=True)) == flex.expected_ids("U1111111")


def test_the_sync_then_a_flex_file_stores_each_execution_once(trader, flex):
    connection = flex_connection(trader)
    assert run_inline(connection.pk).trades_imported == 4
    account = connection.accounts.get(external_id="U1111111")
    result = imported(account, flex_file(flex), name="flex.xml")
    assert (result.imported, result.already_there) == (0, 4)
    assert Trade.objects.filter(account=account).count() == 4


def test_a_fill_a_sync_stored_under_its_id_is_recognised_by_content_in_a_file_without_ids(trader):
    synced = factories.fill(
        1, "BUY", 2, "6850.25", datetime(2025, 11, 25, 10, 38, 24, tzinfo=UTC), symbol="MESZ5", multiplier="5"
    )
    account = factories.account_with(trader, [synced], external_id="DEMO123456")
    result = imported(account, samples.TRADOVATE_ORDERS)
    assert (result.imported, result.already_there, result.matched_by_content) == (1, 1, 1)
    assert Trade.objects.filter(account=account).count() == 2


def test_a_file_without_ids_then_the_sync_ends_with_the_brokers_rows_only(trader):
    account = factories.account_with(trader, [], external_id="DEMO123456")
    assert imported(account, samples.TRADOVATE_ORDERS).imported == 2
    account.refresh_from_db()
    assert account.has_file_fills
    result = synced(account, tradovate_api_fills())
    assert result.counts.imported == 2
    assert set(Trade.objects.filter(account=account).values_list("broker_trade_id", flat=True)) == {
        "MESZ5-1",
        "MESZ5-2",
    }
    trip = RoundTrip.objects.get(account=account)
    assert trip.closed_at is not None and trip.fill_count == 2 and trip.gross_pnl == Decimal("22.5")
    # The same file again: already there, by content.
    again = imported(account, samples.TRADOVATE_ORDERS)
    assert (again.imported, again.matched_by_content) == (0, 2)


def test_a_later_sync_leaves_a_file_fill_that_was_not_the_syncs(trader):
    at = datetime(2025, 11, 25, 10, 38, 24, tzinfo=UTC)
    api = factories.fill(1, "BUY", 1, "6850.25", at, symbol="MESZ5", multiplier="5", fees=Decimal(0))
    account = factories.account_with(trader, [api], external_id="DEMO123456")
    row = "DEMO123456,2025-11-25T10:38:24Z,MESZ5,future,buy,1,6850.25,5,\n"
    # Two identical fills in the file, one of them the synced one: the second is another fill.
    result = imported(account, HEADER + row + row)
    assert (result.imported, result.matched_by_content) == (1, 1)
    synced(account, [api])
    assert Trade.objects.filter(account=account).count() == 2


def test_an_mt5_report_then_the_sync_stores_each_deal_once(mt5_account):
    result = imported(mt5_account, samples.MT5_REPORT, name="report.html", contract_sizes={"EURUSD": Decimal(100000)})
    assert (result.imported, result.not_a_fill, result.other_account) == (2, 2, 0)
    assert synced(mt5_account, metaapi_deals()).counts.skipped == 2
    assert Trade.objects.filter(account=mt5_account).count() == 2
    assert RoundTrip.objects.get(account=mt5_account).gross_pnl == Decimal("16")


def test_the_sync_then_an_mt5_report_takes_the_contract_size_from_the_synced_deals(mt5_account):
    synced(mt5_account, metaapi_deals())
    result = imported(mt5_account, samples.MT5_REPORT, name="report.html", time_zone=ZoneInfo("Etc/GMT-2"))
    assert (result.ok, result.imported, result.already_there) == (True, 0, 2)
    assert Trade.objects.filter(account=mt5_account).count() == 2


def test_tradovate_performance_and_the_sync_share_tradovates_fill_ids_in_either_order(trader):
    at = datetime(2025, 11, 25, 10, 38, 24, tzinfo=UTC)
    api = [
        factories.fill(9001, "BUY", 2, "6850.25", at, symbol="MESZ5", multiplier="5", fees=Decimal("1.04")),
        factories.fill(9002, "SELL", 1, "6852.50", at + timedelta(minutes=3), symbol="MESZ5", multiplier="5"),
        factories.fill(9003, "SELL", 1, "6849.00", at + timedelta(minutes=7), symbol="MESZ5", multiplier="5"),
    ]
    api = [dataclasses.replace(t, broker_trade_id=t.broker_trade_id.removeprefix("MESZ5-")) for t in api]
    first = factories.account_with(trader, [], external_id="FILE-FIRST")
    assert imported(first, samples.TRADOVATE_PERFORMANCE).imported == 3
    assert synced(first, api).counts.skipped == 3
    second = factories.account_with(trader, [], external_id="SYNC-FIRST")
    synced(second, api)
    assert imported(second, samples.TRADOVATE_PERFORMANCE).already_there == 3
    for account in (first, second):
        assert Trade.objects.filter(account=account).count() == 3


def test_one_fill_in_two_files_of_different_formats_is_stored_once(trader):
    account = factories.account_with(trader, [], external_id="Sim101")
    ninja = imported(account, samples.NINJATRADER_EXECUTIONS)
    assert ninja.imported == 2
    # The same two fills written into the template, without ids, in UTC (the PC's zone was UTC).
    template_rows = (
        "account,executed_at,symbol,asset_class,side,quantity,price,multiplier\n"
        "Sim101,2026-04-27T06:05:02Z,MESM6,future,buy,1,7200.75,5\n"
        "Sim101,2026-04-27T06:09:40Z,MESM6,future,sell,1,7203.25,5\n"
    )
    again = imported(account, template_rows)
    assert (again.imported, again.already_there) == (0, 2)


def test_a_file_waits_for_a_running_sync_of_its_connection_and_stores_nothing(account):
    assert locks.acquire(account.connection_id, "a-running-sync")
    result = imported(account, template.EXAMPLE)
    assert "A sync of this connection is running" in result.error
    assert not Trade.objects.exists()
    locks.release(account.connection_id, "a-running-sync")
    assert imported(account, template.EXAMPLE).imported == 3
    # The import gave its lock back: a sync may start.
    assert locks.acquire(account.connection_id, "the-next-sync")
