"""ProjectX through a real Celery worker on the test Redis: every fill once, then nothing new and a bust removed,
the journal's positions agreeing with the firm's after each."""

from datetime import UTC, datetime, timedelta

import pytest

from brokers import services
from brokers.models import SyncLog
from config.celery_app import app as celery_app
from journal.models import Trade
from journal.selectors import trades_visible_to
from tests.e2e.realprocess import celery_processes, finished_logs, send_sync, wait_for
from tests.fakes.projectx import API_KEY, ProjectXSim

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def real_queue(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


def synced(connection, count: int) -> SyncLog:
    send_sync(connection)
    return wait_for(
        lambda: finished_logs(connection).count() >= count and finished_logs(connection).first(),
        120,
        message=f"sync {count} to finish",
    )


def test_a_worker_imports_every_fill_once_then_removes_a_voided_one(trader, tmp_path):
    with ProjectXSim() as sim:
        sim.add_user("trader1")
        sim.add_account("trader1", 536, "50KTC-V2-1234-01")
        sim.add_account("trader1", 412, "150KTC-V2-1234-07 (failed)", active=False)
        fills = sim.add_fills(536, 8, start=datetime.now(UTC) - timedelta(hours=5), step=timedelta(minutes=30))
        sim.add_fills(412, 4, start=datetime.now(UTC) - timedelta(days=20), step=timedelta(hours=1))
        connection = services.connection_create(
            owner=trader,
            broker_type="projectx",
            label="TopstepX",
            sync_enabled=False,
            credentials={"firm": "topstep", "username": "trader1", "api_key": API_KEY},
        )
        with celery_processes(tmp_path, beat=False, PROJECTX_BASE_URL=sim.url):
            first = synced(connection, 1)
            sim.void(fills[3]["id"])
            second = synced(connection, 2)
        worker_log = (tmp_path / "worker.log").read_text()
    assert first.status == SyncLog.Status.SUCCESS, first.error_message
    assert first.trades_imported == 12 and first.trades_skipped == 0
    assert second.status == SyncLog.Status.SUCCESS, second.error_message
    assert second.trades_imported == 0
    assert second.detail["536"]["busted"] == 1 and "busted" not in second.detail["412"]
    # The firm's open positions leave the voided fill out, as the journal's round trips do.
    assert first.detail["536"]["differences"] == second.detail["536"]["differences"] == []
    visible = set(trades_visible_to(trader).values_list("broker_trade_id", flat=True))
    assert visible == sim.expected_ids(536) | sim.expected_ids(412)
    assert Trade.objects.filter(broker_trade_id=str(fills[3]["id"]), deleted_at__isnull=False).count() == 1
    assert sim.logins == ["trader1"], "the second sync reused the stored token"
    assert API_KEY not in worker_log
