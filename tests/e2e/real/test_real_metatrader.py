"""MetaTrader through MetaApi with a real Celery worker: a long connect paused, every fill once, then a bust."""

from datetime import UTC, datetime, timedelta

import pytest

from brokers import services
from brokers.models import SyncLog
from config.celery_app import app as celery_app
from journal.models import Trade
from tests.e2e.broker_conditions import Timings, sync_and_wait
from tests.e2e.realprocess import celery_processes
from tests.fakes.metaapi import MetaApiSim, configure, env

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True)]

SERVER, LOGIN, PASSWORD = "Pepperstone-Demo", "8801234", "investor-pw"
FAST = Timings(scale=1 / 150)


@pytest.fixture(autouse=True)
def real_queue(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


def test_a_first_sync_waits_for_the_terminal_imports_every_fill_once_and_the_next_busts_one(trader, tmp_path, settings):
    # The first connect takes 2 s (minutes at MetaApi), each look 0.3 s apart: several pauses, lock held.
    with MetaApiSim(first_connect_s=2.0, connect_s=0.3) as sim:
        configure(settings, sim)
        mt_account = sim.add_mt_account("mt5", SERVER, LOGIN, PASSWORD)
        now = datetime.now(UTC)
        # Inside the three days every sync reads again, where a broker's late cancellation is seen. Lots
        # as MetaTrader writes them (0.3, not the float 0.30000000000000004 SQLite could not keep).
        fills = [
            sim.add_deal(mt_account, at=now - timedelta(hours=40 - n), volume=round(0.1 * (n + 1), 2)) for n in range(5)
        ]
        sim.add_deal(mt_account, at=now - timedelta(days=41), type="DEAL_TYPE_BALANCE", symbol="", volume=0, price=0)
        connection = services.connection_create(
            owner=trader,
            broker_type="metatrader",
            label="Pepperstone MT5",
            sync_enabled=False,
            credentials={"platform": "mt5", "server": SERVER, "login": LOGIN, "investor_password": PASSWORD},
        )
        worker_env = FAST.env(**env(sim), METAAPI_CONNECT_POLL_S="0.3")
        with celery_processes(tmp_path, beat=False, **worker_env):
            first = sync_and_wait(connection, 1, 120)
            after_first = sim.provisioned()[0]["state"]
            sim.cancel_deal(mt_account, fills[2]["id"])
            second = sync_and_wait(connection, 2, 120)
        [account] = sim.provisioned()
    assert first.status == SyncLog.Status.SUCCESS, first.error_message
    assert second.status == SyncLog.Status.SUCCESS, second.error_message
    assert (first.trades_imported, second.trades_imported) == (5, 0)
    assert first.duration_ms >= 2000  # it waited out the connect instead of failing
    assert second.detail[mt_account]["busted"] == 1
    # The terminal's open positions leave the cancelled deal out, as the journal's round trips do.
    assert first.detail[mt_account]["differences"] == second.detail[mt_account]["differences"] == []
    live = Trade.objects.filter(account__connection=connection, deleted_at__isnull=True)
    assert sorted(live.values_list("broker_trade_id", flat=True)) == sorted(
        f["id"] for f in fills if f["id"] != fills[2]["id"]
    )
    assert Trade.objects.filter(account__connection=connection).count() == 5  # the bust stays as a tombstone
    # Each sync deployed the terminal and undeployed it after reading: nothing is left running (billed).
    assert (after_first, account["state"], account["deploys"]) == ("UNDEPLOYED", "UNDEPLOYED", 2)
