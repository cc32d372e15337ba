"""Drill: the database stops answering writes for a moment, just as a sync imports its fills."""

import sqlite3
import threading

import pytest
from django.conf import settings
from django.db import connection as db
from django.test import override_settings

from brokers.models import BrokerConnection, SyncLog
from tests import factories
from tests.e2e.drills.support import (
    assert_log_counts_truthful,
    assert_settled,
    assert_trades_exactly,
    beat_process,
    describe_logs,
    log_lines,
)
from tests.e2e.realprocess import celery_processes, wait_for
from tests.fakes.alpaca import ScriptedAlpaca

pytestmark = [pytest.mark.realprocess, pytest.mark.drill, pytest.mark.django_db(transaction=True)]

FILLS = 250
KEY = "AKDB"
INTERVAL = 5  # seconds (SYNC_INTERVAL_UNIT=seconds)


def sqlite_busy_timeout_s() -> float:
    return settings.DATABASES["default"]["OPTIONS"]["timeout"]


class ExclusiveLock:
    """Hold SQLite's exclusive lock on the test database from a connection of our own.

    Every other connection's statements wait for the busy timeout and then fail with
    "database is locked": the closest SQLite comes to a database that stops answering.
    """

    def __init__(self, path: str, hold_s: float):
        self.path = path
        self.hold_s = hold_s
        self.taken = threading.Event()
        self.released = threading.Event()

    def take_once(self, _key: str) -> None:
        """ScriptedAlpaca's before_fills hook: lock on the first fills request, release later."""
        if self.taken.is_set():
            return
        lock = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        lock.execute("BEGIN EXCLUSIVE")
        self.taken.set()

        def release():
            lock.execute("ROLLBACK")
            lock.close()
            self.released.set()

        threading.Timer(self.hold_s, release).start()


@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_database_locked_during_an_import_the_next_sync_completes(trader, tmp_path, real_queue):
    """Breaks: an exclusive lock on the SQLite database, taken the moment the broker answers
    the first fills request and held a few seconds past the busy timeout (settings:
    OPTIONS timeout), so the import's INSERT waits and then fails "database is locked";
    beat and the worker both meet the locked database.

    Checks: the run that met the lock retries its failed step (a database error is
    transient) and ends SUCCESS; beat and the worker survive; every fill is imported exactly
    once; no run is left RUNNING; the connection ends CONNECTED and the logs' counts match the
    journal.
    """
    if db.vendor != "sqlite":
        pytest.skip(
            f"this drill locks a SQLite file; on {db.vendor} the equivalent (pg_terminate_backend of the "
            "worker's connections) is not written yet"
        )
    hold_s = sqlite_busy_timeout_s() + 5
    lock = ExclusiveLock(db.settings_dict["NAME"], hold_s)
    with ScriptedAlpaca({KEY: FILLS}) as broker:
        broker.before_fills = lock.take_once
        connection = factories.alpaca_connection(trader, KEY, "secret", label="Alpaca", sync_interval_min=INTERVAL)
        env = {"ALPACA_BASE_URL": broker.url, "SYNC_RETRY_DELAYS_S": "1,1,1"}
        with celery_processes(tmp_path / "worker", beat=False, **env) as processes:
            with beat_process(tmp_path / "beat", **env) as beat:
                # Not a database query while the lock is held: this process would wait on it too.
                assert lock.taken.wait(90), "no sync reached the fills call"
                assert lock.released.wait(hold_s + 30)

                def story():
                    return (
                        f"\n--- worker ---\n{log_lines(tmp_path / 'worker' / 'worker.log', 'locked', 'error', 'sync_')}"
                        f"\n--- beat ---\n{log_lines(tmp_path / 'beat' / 'beat.log', 'locked', 'error')}"
                        f"\n--- runs: {describe_logs(connection)}"
                    )

                try:
                    wait_for(
                        lambda: SyncLog.objects.filter(connection=connection, status=SyncLog.Status.SUCCESS).exists(),
                        90,
                        message="a scheduled sync to complete after the lock",
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{exc}{story()}") from None
                assert beat.poll() is None, f"beat died on the locked database{story()}"
            assert processes["worker"].poll() is None, f"the worker died on the locked database{story()}"
            # Beat is stopped: let what it sent last finish before judging.
            wait_for(
                lambda: not SyncLog.objects.filter(connection=connection, status=SyncLog.Status.RUNNING).exists(),
                60,
                message="the last run to finish",
            )
    final = story()
    runs = SyncLog.objects.filter(connection=connection).exclude(status=SyncLog.Status.SKIPPED)
    met_lock = runs.earliest("started_at")
    assert met_lock.status == SyncLog.Status.SUCCESS, final
    assert_trades_exactly(connection, broker.ids(KEY))
    assert_settled(connection, BrokerConnection.Status.CONNECTED)
    assert_log_counts_truthful(connection)
