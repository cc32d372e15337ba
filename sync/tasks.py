"""Celery tasks: thin interfaces that take an id, call the engine and declare the retry policy."""
from __future__ import annotations

import random

import structlog
from celery import Task, shared_task
from django.conf import settings

from brokers.models import SyncLog
from brokers import schedules
from sync import engine
from sync.engine import Attempt, RetryableSyncError, SyncRequeue, run_sync

log = structlog.get_logger("sync.tasks")

RETRY_JITTER = 0.10
# Rate-limit pauses are not failures, but a broker that never lets us in must end somewhere.
MAX_RATE_LIMIT_REQUEUES = 20


def retry_delay(failures: int, retry_after: float | None = None) -> float:
    """The pause before the next attempt: the policy's step ±10%, or the broker's Retry-After if longer."""
    delays = settings.SYNC_RETRY_DELAYS_S
    base = delays[min(failures, len(delays)) - 1]
    delay = base * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    return max(delay, retry_after or 0)


class SyncTask(Task):
    """Celery's exponential formula cannot give 1, 5, 15 minutes: this class supplies the steps.

    autoretry_for and retry_backoff stay declared on the task, so Celery drives the retries;
    retry() here replaces the computed countdown with our own.
    """

    def retry(self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None, max_retries=None, **options):
        if isinstance(exc, RetryableSyncError):
            failures = self.request.retries - (self.request.kwargs or {}).get("requeues", 0) + 1
            countdown = retry_delay(failures, exc.retry_after)
            log.info("sync_retry_scheduled", connection_id=(self.request.kwargs or {}).get("connection_id"),
                     failures=failures, countdown_s=round(countdown, 1), error=str(exc))
        return super().retry(args=args, kwargs=kwargs, exc=exc, throw=throw, eta=eta, countdown=countdown,
                             max_retries=max_retries, **options)


@shared_task(
    bind=True,
    base=SyncTask,
    name="sync.tasks.sync_connection",
    autoretry_for=(RetryableSyncError,),
    retry_backoff=True,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
)
def sync_connection(self, connection_id: int, trigger: str = SyncLog.Trigger.SCHEDULED, requeues: int = 0):
    """Sync one connection. Retries transient failures up to 3 times; re-queues on rate limits."""
    failures = self.request.retries - requeues
    attempt = Attempt(
        connection_id=connection_id,
        trigger=trigger,
        task_id=self.request.id or "",
        number=failures + 1,
        final=failures >= len(settings.SYNC_RETRY_DELAYS_S),
        may_requeue=requeues < MAX_RATE_LIMIT_REQUEUES,
    )
    structlog.contextvars.bind_contextvars(connection_id=connection_id, task_id=attempt.task_id, attempt=attempt.number)
    try:
        sync_log = run_sync(attempt)
    except SyncRequeue as pause:
        log.info("sync_requeued_for_rate_limit", connection_id=connection_id, countdown_s=round(pause.retry_after, 1))
        raise self.retry(
            kwargs={"connection_id": connection_id, "trigger": trigger, "requeues": requeues + 1},
            countdown=pause.retry_after,
            max_retries=None,
        ) from None
    finally:
        structlog.contextvars.unbind_contextvars("connection_id", "task_id", "attempt")
    return None if sync_log is None else {"sync_log_id": sync_log.pk, "status": sync_log.status}



@shared_task(name="sync.tasks.close_interrupted_runs")
def close_interrupted_runs():
    """Periodic: close runs a killed worker left open and free connections stuck in SYNCING."""
    return engine.close_interrupted_runs()


@shared_task(name="sync.tasks.reconcile_schedules")
def reconcile_schedules():
    """Periodic: repair drift between connections and their beat schedules."""
    changes = schedules.reconcile()
    if any(changes.values()):
        log.warning("schedules_reconciled", **changes)
    return changes


@shared_task(name="sync.tasks.prune_sync_logs")
def prune_sync_logs():
    """Daily: delete SyncLog rows past SYNC_LOG_RETENTION_DAYS."""
    return engine.prune_sync_logs()
