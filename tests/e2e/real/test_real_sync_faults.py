"""Faults with a real worker, the test Redis and a loopback broker: retries, auth, overlap, kill -9."""

import os
import signal
import time

import pytest
from django.core import mail

from brokers.models import BrokerConnection, SyncLog
from config.celery_app import app as celery_app
from journal.models import Trade
from sync.models import Notice
from tests import factories
from tests.e2e.realprocess import celery_processes, finished_logs, send_sync, wait_for
from tests.fakes.alpaca import FakeAlpaca

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker_pool")]

FILLS = 150


@pytest.fixture
def broker():
    with FakeAlpaca(fills=FILLS) as fake:
        yield fake


@pytest.fixture
def worker_env(broker):
    return {
        "ALPACA_BASE_URL": broker.url,
        "SYNC_RETRY_DELAYS_S": "1,1,1",
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
    }


@pytest.fixture
def real_queue(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


def connect(trader, broker, **kwargs):
    """An Alpaca connection with auto-sync off, so only the syncs a test sends run."""
    trader.email = "alice@example.com"
    trader.save()
    return factories.alpaca_connection(trader, "AKREAL", "secret-real", label="Alpaca", sync_enabled=False, **kwargs)


def test_a_broker_failing_twice_then_answering(trader, broker, worker_env, tmp_path, real_queue):
    connection = connect(trader, broker)
    # A 500 on a read is resent twice by the HTTP layer: two failed attempts take six answers.
    broker.fail_account_times = 6
    with celery_processes(tmp_path, beat=False, **worker_env):
        send_sync(connection)
        log = wait_for(lambda: finished_logs(connection).first(), 60, message="the run to finish")
    assert log.status == SyncLog.Status.SUCCESS and log.attempt == 3
    assert broker.count("/v2/account") == 6 + 1 + 1  # two attempts of three sends, then login and listing
    assert SyncLog.objects.filter(connection=connection).count() == 1
    assert log.trades_imported == FILLS == Trade.objects.count()


def test_an_auth_failure_is_error_at_once_without_retries_and_one_notice(
    trader, broker, worker_env, tmp_path, real_queue
):
    connection = connect(trader, broker)
    broker.refuse_keys = True
    mail_dir = tmp_path / "mail"
    with celery_processes(tmp_path, beat=False, EMAIL_FILE_PATH=str(mail_dir), **worker_env):
        send_sync(connection)
        log = wait_for(lambda: finished_logs(connection).first(), 60, message="the run to finish")
        time.sleep(2)  # any retry would have been sent by now (retry delays are 1 s here)
    assert log.status == SyncLog.Status.FAILED and log.attempt == 1 and log.error_kind == "auth"
    assert broker.count("/v2/account") == 1
    connection.refresh_from_db()
    assert connection.status == BrokerConnection.Status.ERROR and connection.credentials_rejected
    assert Notice.objects.filter(connection=connection).count() == 1
    assert len(list(mail_dir.iterdir())) == 1
    assert mail.outbox == []  # the email went out from the worker, not from this process


def test_sync_now_during_a_scheduled_run_is_skipped_and_nothing_doubles(
    trader, broker, worker_env, tmp_path, real_queue
):
    connection = connect(trader, broker)
    broker.fills_delay_s = 3
    with celery_processes(tmp_path, beat=False, concurrency=3, **worker_env):
        send_sync(connection, "scheduled")
        wait_for(lambda: broker.count("/v2/account/activities/FILL"), 30, message="the scheduled run to fetch fills")
        send_sync(connection, "manual")
        wait_for(lambda: finished_logs(connection).count() == 2, 60, message="both runs to end")
    logs = {log.trigger: log.status for log in SyncLog.objects.filter(connection=connection)}
    assert logs == {"scheduled": SyncLog.Status.SUCCESS, "manual": SyncLog.Status.SKIPPED}
    assert Trade.objects.count() == FILLS


def test_worker_killed_mid_sync_the_run_completes_after_redelivery(trader, broker, worker_env, tmp_path, real_queue):
    connection = connect(trader, broker)
    broker.fills_delay_s = 4
    # Redis hands an unacknowledged message to another worker after the visibility timeout.
    env = {**worker_env, "CELERY_VISIBILITY_TIMEOUT": "5"}
    with celery_processes(tmp_path / "first", beat=False, **env) as processes:
        send_sync(connection)
        wait_for(lambda: broker.count("/v2/account/activities/FILL"), 30, message="the sync to reach the fills")
        os.killpg(processes["worker"].pid, signal.SIGKILL)
        processes["worker"].wait()
    connection.refresh_from_db()
    assert connection.status == BrokerConnection.Status.SYNCING  # what a killed worker leaves behind
    broker.fills_delay_s = 0
    # A starting worker sweeps for messages unacknowledged longer than the visibility timeout.
    time.sleep(6)
    with celery_processes(tmp_path / "second", beat=False, **env):
        log = wait_for(lambda: finished_logs(connection).first(), 90, message="the redelivered run to finish")
    assert log.status == SyncLog.Status.SUCCESS
    assert SyncLog.objects.filter(connection=connection).count() == 1
    assert Trade.objects.count() == FILLS  # nothing lost, nothing doubled
    connection.refresh_from_db()
    assert connection.status == BrokerConnection.Status.CONNECTED
