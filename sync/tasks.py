"""Celery tasks: thin interfaces that take an id, call the engine and declare the retry policy."""

from __future__ import annotations

import random
from datetime import datetime

import structlog
from celery import Task, chord, shared_task
from django.conf import settings

from brokers import schedules
from brokers.models import SyncLog
from brokers.providers.errors import BrokerRateLimitError
from sync import engine
from sync.engine import Attempt, RetryableSyncError, RunPlan, SyncRequeue

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

    def retry(
        self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None, max_retries=None, **options
    ):
        if isinstance(exc, RetryableSyncError):
            failures = self.request.retries - (self.request.kwargs or {}).get("requeues", 0) + 1
            countdown = retry_delay(failures, exc.retry_after)
            log.info(
                "sync_retry_scheduled",
                task=self.name,
                failures=failures,
                countdown_s=round(countdown, 1),
                error=str(exc),
            )
        return super().retry(
            args=args,
            kwargs=kwargs,
            exc=exc,
            throw=throw,
            eta=eta,
            countdown=countdown,
            max_retries=max_retries,
            **options,
        )


# acks_late + reject_on_worker_lost: a message whose worker died goes back to the queue and
# runs again; safe because the import is idempotent and the run lock is re-entrant.
RELIABLE = {"acks_late": True, "reject_on_worker_lost": True}


@shared_task(
    bind=True,
    base=SyncTask,
    name="sync.tasks.sync_connection",
    autoretry_for=(RetryableSyncError,),
    retry_backoff=True,
    max_retries=None,
    **RELIABLE,
)
def sync_connection(self, connection_id: int, trigger: str = SyncLog.Trigger.SCHEDULED, requeues: int = 0):
    """Start a sync: session and accounts here, then one sync_account task per account in parallel.

    Transient failures are retried up to 3 times (about 1, 5 and 15 minutes apart); rate-limit
    pauses re-queue the task without counting as a failure.
    """
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
        started = engine.start_run(attempt)
    except SyncRequeue as pause:
        log.info("sync_requeued_for_rate_limit", countdown_s=round(pause.retry_after, 1), requeues=requeues + 1)
        engine.hold_lock(connection_id, pause.owner, pause.retry_after + settings.SYNC_LOCK_TTL_S)
        raise self.retry(
            kwargs={"connection_id": connection_id, "trigger": trigger, "requeues": requeues + 1},
            countdown=pause.retry_after,
            max_retries=None,
        ) from None
    finally:
        structlog.contextvars.unbind_contextvars("connection_id", "task_id", "attempt")
    if started is None:
        return None
    if isinstance(started, RunPlan):
        run = {
            "sync_log_id": started.sync_log_id,
            "connection_id": started.connection_id,
            "owner": started.owner,
            "until": started.until.isoformat(),
        }
        chord(sync_account.s(account_id=pk, **run) for pk in started.account_ids)(finish_sync.s(**run))
        return {"sync_log_id": started.sync_log_id, "status": SyncLog.Status.RUNNING}
    return {"sync_log_id": started.pk, "status": started.status}


@shared_task(
    bind=True,
    base=SyncTask,
    name="sync.tasks.sync_account",
    autoretry_for=(RetryableSyncError,),
    retry_backoff=True,
    max_retries=None,
    **RELIABLE,
)
def sync_account(
    self, account_id: int, sync_log_id: int, connection_id: int, owner: str, until: str, requeues: int = 0
) -> dict:
    """Import one account's trades for a run. Always returns a result, so the run can finish."""
    plan = RunPlan(sync_log_id, connection_id, owner, (), datetime.fromisoformat(until))
    failures = self.request.retries - requeues
    structlog.contextvars.bind_contextvars(
        connection_id=connection_id,
        account_id=account_id,
        sync_log_id=sync_log_id,
        task_id=self.request.id,
        attempt=failures + 1,
    )
    try:
        return engine.sync_account(plan, account_id)
    except BrokerRateLimitError as exc:
        if requeues >= MAX_RATE_LIMIT_REQUEUES:
            return engine.account_failure(account_id, exc)
        engine.hold_lock(connection_id, owner, exc.retry_after + settings.SYNC_LOCK_TTL_S)
        raise self.retry(
            kwargs={
                "account_id": account_id,
                "sync_log_id": sync_log_id,
                "connection_id": connection_id,
                "owner": owner,
                "until": until,
                "requeues": requeues + 1,
            },
            countdown=exc.retry_after,
            max_retries=None,
        ) from None
    except Exception as exc:
        if engine.is_transient(exc) and failures < len(settings.SYNC_RETRY_DELAYS_S):
            raise engine.retryable(exc, connection_id, owner) from exc
        return engine.account_failure(account_id, exc)
    finally:
        structlog.contextvars.unbind_contextvars("connection_id", "account_id", "sync_log_id", "task_id", "attempt")


@shared_task(name="sync.tasks.finish_sync", **RELIABLE)
def finish_sync(results: list[dict], sync_log_id: int, connection_id: int, owner: str, until: str) -> dict:
    """Close the run once every account reported: one SyncLog, the connection's status, the lock."""
    plan = RunPlan(sync_log_id, connection_id, owner, (), datetime.fromisoformat(until))
    sync_log = engine.finish_run(plan, results)
    return {"sync_log_id": sync_log.pk, "status": sync_log.status}


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
