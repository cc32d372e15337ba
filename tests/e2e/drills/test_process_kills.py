"""Drills: kill -9 of the worker in the middle of two syncs, and of beat while syncs are scheduled."""

import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from brokers import services
from brokers.models import BrokerConnection, SyncLog
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import AuthResult, BrokerAccountInfo
from journal.models import Trade
from tests.e2e.drills.support import (
    alpaca_connection,
    assert_log_counts_truthful,
    assert_settled,
    assert_trades_exactly,
    beat_process,
    describe_logs,
)
from tests.e2e.realprocess import celery_processes, finished_logs, kill9, send_sync, wait_for
from tests.fakes.alpaca import ScriptedAlpaca

pytestmark = [pytest.mark.realprocess, pytest.mark.drill, pytest.mark.django_db(transaction=True)]

FILLS = 250
# Redis hands an unacknowledged message to a starting worker only once it is this old.
VISIBILITY_TIMEOUT_S = 5
INTERVAL = 5  # seconds here (SYNC_INTERVAL_UNIT=seconds): the shortest interval the product allows
# Slots of simulated trading per demo fill: short enough that new fills appear during the
# drill, long enough that the first sync's two days of history stay a few thousand rows.
DEMO_FILL_EVERY_S = 30


def test_worker_killed_during_two_syncs_both_runs_complete_after_restart(trader, tmp_path, real_queue):
    """Breaks: kill -9 of the worker (and its pool) while two connections are each in the
    middle of fetching their fills, in parallel; a new worker starts after the visibility
    timeout.

    Checks: both runs are redelivered and end SUCCESS in their original SyncLog (one each),
    every fill of each account is in the journal exactly once, both connections leave
    SYNCING for CONNECTED, and the logs' counts match the journal.
    """
    keys = ("AKFIRST", "AKSECOND")
    env = {"SYNC_RETRY_DELAYS_S": "1,1,1", "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S)}
    with ScriptedAlpaca(dict.fromkeys(keys, FILLS)) as broker:
        env["ALPACA_BASE_URL"] = broker.url
        connections = [alpaca_connection(trader, key) for key in keys]
        for key in keys:
            broker.fills_delay_s[key] = 30  # both account tasks are inside a fills call when the kill comes
        with celery_processes(tmp_path / "first", beat=False, **env) as processes:
            for connection in connections:
                send_sync(connection)
            wait_for(lambda: all(broker.in_flight[k] for k in keys), 60, message="both accounts to fetch fills")
            kill9(processes["worker"])
        for connection in connections:
            connection.refresh_from_db()
            assert connection.status == BrokerConnection.Status.SYNCING  # what a killed worker leaves behind
        for key in keys:
            broker.fills_delay_s[key] = 0
        time.sleep(VISIBILITY_TIMEOUT_S + 1)
        with celery_processes(tmp_path / "second", beat=False, **env):
            wait_for(
                lambda: all(finished_logs(c).exists() for c in connections),
                90,
                message="both redelivered runs to finish",
            )
    for key, connection in zip(keys, connections, strict=True):
        statuses = list(SyncLog.objects.filter(connection=connection).values_list("status", flat=True))
        assert statuses == [SyncLog.Status.SUCCESS], f"{key}: {describe_logs(connection)}"
        assert_trades_exactly(connection, broker.ids(key))
        assert_settled(connection)
        assert_log_counts_truthful(connection)


def demo_fills_in_window(connection: BrokerConnection, since) -> tuple[set[str], set[str]]:
    """The demo broker's fills from `since` to each account's cursor, and the journal's, by id."""
    provider = get_broker_provider("demo", "")
    auth = AuthResult(token="drill", expires_at=None, extra={"scenario": "normal"})
    expected, held = set(), set()
    for account in connection.accounts.all():
        info = BrokerAccountInfo(external_id=account.external_id, name=account.name, currency=account.currency)
        # The demo broker lists from the start of since's hour (its positions are that hour's fills).
        listed = provider.get_trades(auth, info, since, account.sync_cursor)
        expected |= {t.broker_trade_id for t in listed if t.executed_at >= since}
        held |= set(
            Trade.objects.filter(
                account=account, executed_at__gte=since, executed_at__lte=account.sync_cursor
            ).values_list("broker_trade_id", flat=True)
        )
    return expected, held


@override_settings(SYNC_INTERVAL_UNIT="seconds", DEMO_FILL_EVERY_S=DEMO_FILL_EVERY_S)
def test_beat_killed_while_syncs_are_scheduled_resumes_after_restart(trader, tmp_path, real_queue):
    """Breaks: kill -9 of beat while two demo connections sync every 5 s; beat stays dead
    for a few intervals, then a new beat starts.

    Checks: no scheduled sync runs while beat is dead (the worker sends none by itself);
    after the restart scheduled syncs resume for both connections at no more than one per
    interval (exactly one beat: no burst, no run sent twice, no run skipped for overlap);
    every demo fill up to each account's cursor is in the journal exactly once, the logs'
    counts add up to the journal, and both connections end CONNECTED with nothing RUNNING.
    """
    env = {"DEMO_FILL_EVERY_S": str(DEMO_FILL_EVERY_S)}

    def scheduled_runs(connection, after=None):
        runs = SyncLog.objects.filter(connection=connection, trigger="scheduled", status=SyncLog.Status.SUCCESS)
        return runs.filter(started_at__gt=after).count() if after else runs.count()

    with celery_processes(tmp_path / "worker", beat=False, **env):
        with beat_process(tmp_path / "beat-1", **env) as beat:
            connections = [
                services.connection_create(
                    owner=trader,
                    broker_type="demo",
                    label=f"Demo {n}",
                    credentials={"api_key": f"demo-{n}"},
                    sync_interval_min=INTERVAL,
                )
                for n in (1, 2)
            ]
            wait_for(
                lambda: all(scheduled_runs(c) >= 2 for c in connections),
                90,
                message="two scheduled syncs per connection from beat",
            )
            kill9(beat)
        killed_at = timezone.now()
        # A message beat sent just before it died may still run; after that, silence.
        time.sleep(3)
        quiet_from = timezone.now()
        time.sleep(3 * INTERVAL)
        during_outage = {c.label: scheduled_runs(c, after=quiet_from) for c in connections}
        assert during_outage == {c.label: 0 for c in connections}, f"syncs ran without a beat: {during_outage}"

        with beat_process(tmp_path / "beat-2", **env) as beat:
            restarted_at = timezone.now()
            wait_for(
                lambda: all(scheduled_runs(c, after=restarted_at) >= 3 for c in connections),
                90,
                message="scheduled syncs to resume after beat's restart",
            )
            elapsed = (timezone.now() - restarted_at).total_seconds()
        # Beat is stopped cleanly: let what it sent last finish, then everything must be settled.
        wait_for(
            lambda: not SyncLog.objects.filter(status=SyncLog.Status.RUNNING).exists(),
            30,
            message="the last runs to finish",
        )
    for connection in connections:
        resumed = scheduled_runs(connection, after=restarted_at)
        # One catch-up send at start, then one per interval; a second beat would double it.
        assert resumed <= elapsed / INTERVAL + 2, (
            f"{connection.label}: {resumed} scheduled runs in {elapsed:.0f} s after the restart; "
            f"{describe_logs(connection)}"
        )
        # (Before the kill a SKIPPED run is legitimate: creation and beat's first send may meet.)
        skipped = SyncLog.objects.filter(connection=connection, status=SyncLog.Status.SKIPPED)
        assert not skipped.filter(started_at__gt=restarted_at).exists(), describe_logs(connection)
        assert_settled(connection)
        assert_log_counts_truthful(connection)
        first_run = SyncLog.objects.filter(connection=connection).order_by("started_at").first()
        # The first sync reached back max_history from a moment just after it started.
        since = first_run.started_at - get_broker_provider("demo", "").max_history + timedelta(minutes=1)
        expected, held = demo_fills_in_window(connection, since)
        assert held == expected, (
            f"{connection.label}: {len(expected - held)} demo fills lost, {len(held - expected)} unexpected; "
            f"beat killed at {killed_at:%H:%M:%S}; {describe_logs(connection)}"
        )
        ids = list(Trade.objects.filter(account__connection=connection).values_list("account_id", "broker_trade_id"))
        assert len(ids) == len(set(ids)), f"{connection.label}: doubled trades"
