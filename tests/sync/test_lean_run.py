"""The lean run: a connection with few accounts syncs them in its own task, in few SQL statements."""

from datetime import timedelta

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from brokers.models import BrokerConnection, SyncLog
from journal.models import Trade
from sync import accounts, housekeeping, locks, tasks
from sync.tasks import sync_connection
from telemetry.redis_client import redis_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(make_connection):
    """A demo connection (two accounts) after its first sync."""
    connection = make_connection(credentials={"api_key": "k-123"})
    assert SyncLog.objects.get(connection=connection).status == SyncLog.Status.SUCCESS
    return connection


def test_an_incremental_sync_of_two_accounts_takes_at_most_ten_statements_and_no_chord(demo, monkeypatch):
    monkeypatch.setattr(tasks, "chord", None)  # a chord here would fail the run
    # The run's own statements: the round trips it rebuilds cost statements per instrument it
    # changed (journal.positions, measured in bench/RESULTS.md §11), not per run.
    monkeypatch.setattr(accounts, "positions_recompute", lambda changed: None)
    with CaptureQueriesContext(db) as queries:
        result = sync_connection.delay(demo.pk).get()
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) <= 10, "\n".join(s[:120] for s in statements)
    log = SyncLog.objects.get(pk=result["sync_log_id"])
    assert log.status == SyncLog.Status.SUCCESS and set(log.detail) == {"DEMO-FUT-1", "DEMO-STK-1"}
    assert log.trades_skipped > 0 and log.trades_imported + log.trades_skipped > 0
    assert demo.accounts.filter(sync_cursor__gte=log.started_at).count() == 2


def test_more_accounts_than_a_task_keeps_fan_out_across_account_tasks_with_exact_counts(demo, settings):
    settings.SYNC_ACCOUNTS_IN_TASK = 1
    demo.accounts.update(sync_cursor=None)
    before = Trade.objects.count()
    result = sync_connection.delay(demo.pk).get()
    log = SyncLog.objects.filter(connection=demo).latest("started_at")
    assert result["status"] == SyncLog.Status.RUNNING  # the chord finishes the run
    assert log.status == SyncLog.Status.SUCCESS and set(log.detail) == {"DEMO-FUT-1", "DEMO-STK-1"}
    assert Trade.objects.count() == before + log.trades_imported
    assert log.trades_skipped >= before


def test_the_sweep_reads_every_lock_in_one_round_trip_per_thousand(demo, make_connection, monkeypatch):
    held = make_connection(label="Held", credentials={"api_key": "k-2"})
    BrokerConnection.objects.update(status=BrokerConnection.Status.SYNCING)
    old = timezone.now() - timedelta(hours=1)
    dead = SyncLog.objects.create(connection=demo, started_at=old, task_id="dead-run")
    alive = SyncLog.objects.create(connection=held, started_at=old, task_id="live-run")
    assert locks.acquire(held.pk, "live-run")
    calls = []
    client = redis_client()
    monkeypatch.setattr(client, "get", lambda *a: calls.append("get"))
    real_mget = client.mget
    monkeypatch.setattr(client, "mget", lambda keys: calls.append("mget") or real_mget(keys))
    assert housekeeping.close_interrupted_runs() == 1
    assert calls == ["mget", "mget"]  # the SYNCING connections, then the open runs
    dead.refresh_from_db(), alive.refresh_from_db()
    assert (dead.status, alive.status) == (SyncLog.Status.INTERRUPTED, SyncLog.Status.RUNNING)
    statuses = dict(BrokerConnection.objects.values_list("pk", "status"))
    assert statuses == {demo.pk: BrokerConnection.Status.CONNECTED, held.pk: BrokerConnection.Status.SYNCING}
