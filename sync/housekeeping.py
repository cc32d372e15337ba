"""Periodic care: close runs a dead worker left open, free stuck connections, prune old logs."""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from brokers.models import BrokerConnection, SyncLog
from journal.models import Trade
from sync import locks, outcomes
from sync.runs import close_log

log = structlog.get_logger("sync")


def close_interrupted_runs() -> int:
    """Close runs a killed worker (or a Redis outage) left behind, and free connections stuck in SYNCING.

    A live run holds its connection's lock the whole time, waits included (sync.locks), so a
    RUNNING log whose lock is gone or another run's is dead, and SYNCING without a lock is
    stale. An interrupted run's counts are what it really imported, read from the journal.
    """
    syncing = dict(
        BrokerConnection.objects.filter(status=BrokerConnection.Status.SYNCING).values_list(
            "pk", "consecutive_failures"
        )
    )
    free = [pk for pk, run in locks.holders(list(syncing)).items() if run is None]
    # The last run that finished says whether the connection works; a cut-off run says nothing.
    for status, failed in ((BrokerConnection.Status.ERROR, True), (BrokerConnection.Status.CONNECTED, False)):
        BrokerConnection.objects.filter(
            pk__in=[pk for pk in free if bool(syncing[pk]) == failed], status=BrokerConnection.Status.SYNCING
        ).update(status=status, next_attempt_at=None, next_attempt_reason="")
    # A run opens its log just after taking the lock: give that moment a margin.
    settled = timezone.now() - timedelta(seconds=settings.SYNC_SWEEP_INTERVAL_S)
    closed = 0
    running = list(SyncLog.objects.filter(status=SyncLog.Status.RUNNING, started_at__lt=settled))
    holding = locks.holders(list({sync_log.connection_id for sync_log in running}))
    for sync_log in running:
        if holding[sync_log.connection_id] == sync_log.task_id:
            continue
        if close_log(sync_log, SyncLog.Status.INTERRUPTED, _imported_by(sync_log), outcomes.INTERRUPTED, "interrupted"):
            closed += 1
    if closed:
        log.warning("sync_runs_closed_as_interrupted", count=closed)
    return closed


def _imported_by(sync_log: SyncLog) -> dict:
    """Per account, the trades imported between the run's start and the next run's start (or now)."""
    newer = (
        SyncLog.objects.filter(connection_id=sync_log.connection_id, started_at__gt=sync_log.started_at)
        .order_by("started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    trades = Trade.objects.filter(account__connection_id=sync_log.connection_id, imported_at__gte=sync_log.started_at)
    if newer is not None:
        trades = trades.filter(imported_at__lt=newer)
    counts = trades.values_list("account__external_id").annotate(n=Count("id"))
    return {account: {"imported": n, "skipped": 0} for account, n in counts}


def prune_sync_logs() -> int:
    cutoff = timezone.now() - timedelta(days=settings.SYNC_LOG_RETENTION_DAYS)
    deleted, _ = SyncLog.objects.filter(started_at__lt=cutoff).exclude(status=SyncLog.Status.RUNNING).delete()
    return deleted
