"""Hundreds of syncs at once on one threads worker: no locked database, no leaked connection, exact counts."""

import time

import pytest
from django.db import connection as db

from brokers.models import SyncLog
from config.celery_app import app as celery_app
from journal.models import Trade
from tests import factories
from tests.e2e.realprocess import celery_processes, send_sync, wait_for
from tests.fakes.alpaca import ScriptedAlpaca

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True)]

SYNCS = 200
FILLS = 12
LATENCY_S = 1.0


@pytest.fixture(autouse=True)
def real_queue(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


def database_backends() -> int:
    """Connections to the test database that PostgreSQL has open right now (0 on SQLite: nothing to leak)."""
    if db.vendor != "postgresql":
        return 0
    with db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_two_hundred_syncs_at_once_on_one_threads_worker(trader, tmp_path):
    keys = [f"K{i:03d}" for i in range(SYNCS)]
    with ScriptedAlpaca(dict.fromkeys(keys, FILLS)) as broker:
        broker.server.delay_s = LATENCY_S  # every answer: the broker's round trip, time a thread waits
        connections = [
            factories.alpaca_connection(trader, key, f"secret-{key}", label=key, sync_enabled=False) for key in keys
        ]
        before = database_backends()
        env = {"ALPACA_BASE_URL": broker.url, "SYNC_WORKER_POOL": "threads"}
        with celery_processes(tmp_path, beat=False, concurrency=SYNCS, **env):
            # The worker is up once it answers a ping; the clock starts at the first send.
            wait_for(lambda: celery_app.control.ping(timeout=0.5), 60, message="the worker to start")
            started = time.monotonic()
            for c in connections:
                send_sync(c)
            done = SyncLog.objects.exclude(status=SyncLog.Status.RUNNING)
            wait_for(lambda: done.count() == SYNCS, 120, interval=1, message="every run to finish")
            elapsed = time.monotonic() - started
        after = database_backends()
    log = (tmp_path / "worker.log").read_text()
    assert "database is locked" not in log and "Traceback" not in log
    statuses = list(SyncLog.objects.values_list("status", flat=True))
    assert statuses == [SyncLog.Status.SUCCESS] * SYNCS
    assert sum(SyncLog.objects.values_list("trades_imported", flat=True)) == SYNCS * FILLS == Trade.objects.count()
    for c in connections:
        stored = set(Trade.objects.filter(account__connection=c).values_list("broker_trade_id", flat=True))
        assert stored == broker.ids(c.label)
    # Two broker calls each (account, fills) of LATENCY_S: one after another they would take 400 s.
    assert elapsed < SYNCS * 2 * LATENCY_S / 10
    # The worker's pooled connections went with it: none left open at the database.
    assert after <= before
