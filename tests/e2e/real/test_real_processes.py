"""With a real worker and beat: trades arrive by themselves, and stop when auto-sync is switched off."""

import time

import pytest
from django.test import override_settings

from brokers import services
from brokers.models import BrokerConnection, SyncLog
from config.celery_app import app as celery_app
from journal.models import Trade
from tests.e2e.realprocess import celery_processes, wait_for

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def real_queue(monkeypatch):
    """Send tasks through Redis to the real worker instead of running them in the test."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_beat_and_worker_sync_on_schedule_and_stop_when_switched_off(trader, tmp_path, real_queue):
    with celery_processes(tmp_path):
        # Interval 5 "seconds" here: the unit is shortened, the code path is the real one.
        connection = services.connection_create(
            owner=trader, broker_type="demo", label="Demo", credentials={"api_key": "k"}, sync_interval_min=5
        )
        wait_for(lambda: Trade.objects.filter(account__connection=connection).exists(), 60, message="first trades")
        first_count = Trade.objects.count()

        def scheduled_runs():
            return SyncLog.objects.filter(connection=connection, trigger="scheduled", status="SUCCESS").count()

        wait_for(lambda: scheduled_runs() >= 2, 60, message="two scheduled syncs from beat")
        assert Trade.objects.count() >= first_count
        connection.refresh_from_db()
        assert connection.status == BrokerConnection.Status.CONNECTED

        services.update_sync_enabled(connection.pk, False)
        time.sleep(3)  # let a run that beat already sent finish
        settled = SyncLog.objects.filter(connection=connection).count()
        time.sleep(12)  # more than two intervals
        assert SyncLog.objects.filter(connection=connection).count() == settled
        assert not SyncLog.objects.filter(status=SyncLog.Status.RUNNING).exists()
