"""A demo connection syncs end to end through the task; a second run imports nothing new."""

import pytest

from brokers.models import BrokerConnection, SyncLog
from brokers.providers.demo import DemoProvider
from journal.models import Trade
from sync.tasks import sync_connection


@pytest.fixture
def demo_connection(make_connection):
    return make_connection(credentials={"api_key": "k-123"})


@pytest.mark.django_db(transaction=True)
def test_creating_a_connection_syncs_and_a_second_run_imports_nothing_twice(demo_connection):
    # Creating the connection (auto-sync on) already ran its first sync (tasks are eager here).
    log1 = SyncLog.objects.get(connection=demo_connection)
    assert log1.status == SyncLog.Status.SUCCESS and log1.trigger == SyncLog.Trigger.MANUAL
    assert log1.trades_imported > 50
    assert log1.trades_imported == Trade.objects.count()

    # Move the cursors back so that the second run fetches the same fills again.
    demo_connection.accounts.update(sync_cursor=None)
    second = sync_connection.delay(demo_connection.pk).get()
    log2 = SyncLog.objects.get(pk=second["sync_log_id"])
    assert log2.trades_imported <= 3  # at most the fills of one slot that appeared between the two runs
    # The demo broker lists two days back from now: a fill of the first run may have left that
    # window by the second, but every stored fill still inside it must come back as already there.
    still_listed = Trade.objects.filter(executed_at__gt=log2.finished_at - DemoProvider.max_history).count()
    assert log1.trades_imported >= log2.trades_skipped >= still_listed - log2.trades_imported
    assert Trade.objects.count() == log1.trades_imported + log2.trades_imported
    demo_connection.refresh_from_db()
    assert demo_connection.status == BrokerConnection.Status.CONNECTED
    assert demo_connection.last_sync_at is not None
