"""Reconciliation through a real Celery worker and the loopback Tradovate: a difference appears after the
sync that meets it and clears with the sync that imports the missing fill."""

from datetime import UTC, datetime, timedelta

import pytest

from brokers.models import SyncLog
from config.celery_app import app as celery_app
from journal.models import Trade
from journal.services import trades_delete
from tests.e2e.broker_conditions import tradovate_connection
from tests.e2e.realprocess import celery_processes, finished_logs, send_sync, wait_for
from tests.fakes.tradovate import FakeTradovate

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def real_queue(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


def synced(connection, count: int) -> SyncLog:
    send_sync(connection)
    log = wait_for(
        lambda: finished_logs(connection).count() >= count and finished_logs(connection).first(),
        120,
        message=f"sync {count} to finish",
    )
    assert log.status == SyncLog.Status.SUCCESS, log.error_message
    return log


def differences(log: SyncLog) -> list[dict]:
    return [d for account in log.detail.values() for d in account["differences"]]


def test_a_fill_missing_from_the_journal_is_flagged_by_the_next_sync_and_cleared_by_the_one_that_brings_it(
    trader, tmp_path
):
    with FakeTradovate({"alice": 1}, fills_per_account=4) as broker:
        connection = tradovate_connection(trader, broker)
        (account_id,) = broker.account_ids("alice")
        with celery_processes(tmp_path, beat=False, TRADOVATE_BASE_URL=broker.url):
            agreed = synced(connection, 1)
            # Deleted from the journal: it stays a tombstone, so the broker's position counts one fill more.
            deleted = Trade.objects.order_by("executed_at").first()
            trades_delete(trades=Trade.objects.filter(pk=deleted.pk))
            flagged_deleted = synced(connection, 2)
            # Filled at the broker, but not yet in its fills listing: flagged, then cleared once listed.
            late = broker.add_late_fill(account_id, datetime.now(UTC) - timedelta(seconds=5))
            broker.withhold(late)
            flagged_late = synced(connection, 3)
            broker.withhold(late, withheld=False)
            cleared = synced(connection, 4)
    assert differences(agreed) == []
    assert [d["instrument"] for d in differences(flagged_deleted)] == [deleted.symbol]
    late_symbol = "ESZ6" if late % 2 == 0 else "MNQH7"
    instruments = {d["instrument"] for d in differences(flagged_late)}
    assert instruments == {deleted.symbol, late_symbol}
    assert [d["instrument"] for d in differences(cleared)] == [deleted.symbol]
    assert Trade.objects.filter(broker_trade_id=str(late), deleted_at__isnull=True).count() == 1
