"""Celery tasks: thin interfaces that take ids, run a step of the run, and carry out the retry policy.

Every step — the connection step and each account — meets a failure the same way: sync.policy
decides (retry, pause, give up), the run records it (sync.runs), and a wait re-queues the
task through Celery's autoretry with our countdown, holding the run's lock for the whole wait.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future

import structlog
from celery import Task, chord, shared_task
from django import db
from django.conf import settings

from brokers import periodic_tasks
from brokers.models import BrokerAccount, SyncLog
from brokers.providers.errors import ErrorKind
from sync import archiving, housekeeping, locks, outcomes, policy, runs
from sync.runs import RunPlan

log = structlog.get_logger("sync.tasks")


class StepWaits(Exception):
    """A step goes on later (a retry after a failure, or a pause for a rate limit)."""

    def __init__(self, *, countdown: float, connection_id: int, run_id: str, failures: int, pauses: int):
        super().__init__(f"continues in {countdown:.1f} s")
        self.countdown = countdown
        self.connection_id = connection_id
        self.run_id = run_id
        self.failures = failures
        self.pauses = pauses


class SyncTask(Task):
    """Celery's exponential formula cannot give 1, 5, 15 minutes: this class supplies the wait.

    autoretry_for and retry_backoff stay declared on the tasks, so Celery drives the re-queue;
    retry() here puts in our countdown and step counts, and holds the run's lock for the
    whole wait plus one TTL, so no sweep or other run takes the connection meanwhile.
    """

    def retry(
        self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None, max_retries=None, **options
    ):
        if isinstance(exc, StepWaits):
            locks.hold(exc.connection_id, exc.run_id, exc.countdown + settings.SYNC_LOCK_TTL_S)
            countdown = exc.countdown
            kwargs = {**(kwargs or self.request.kwargs or {}), "failures": exc.failures, "pauses": exc.pauses}
            log.info(
                "sync_step_waits",
                task=self.name,
                failures=exc.failures,
                pauses=exc.pauses,
                countdown_s=round(countdown, 1),
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


def _wait_or_give_up(exc: Exception, *, connection_id: int, run_id: str, failures: int, pauses: int, account: str = ""):
    """Carry out the policy for a failed step: raise StepWaits (after recording why), or return to give up.

    account names the account of an account step; the connection step's retries also count
    as the run's attempts (SyncLog.attempt).
    """
    step = policy.next_step(exc, failures=failures, pauses=pauses)
    where = f" for account {account}" if account else ""
    if isinstance(step, policy.Retry):
        message = outcomes.retrying(exc, failures + 1, policy.attempts_allowed(), where)
        kind = outcomes.what_happened(exc)[1]
        runs.record_wait(connection_id, run_id, message, kind, step.countdown, attempt=0 if account else failures + 2)
        raise StepWaits(
            countdown=step.countdown, connection_id=connection_id, run_id=run_id, failures=failures + 1, pauses=pauses
        ) from exc
    if isinstance(step, policy.Pause):
        message = outcomes.pausing(exc, step.countdown, where)
        runs.record_wait(connection_id, run_id, message, ErrorKind.RATE_LIMIT, step.countdown)
        raise StepWaits(
            countdown=step.countdown, connection_id=connection_id, run_id=run_id, failures=failures, pauses=pauses + 1
        ) from exc


# acks_late + reject_on_worker_lost: a message whose worker died goes back to the queue and
# runs again; safe because the import is idempotent and the run lock is re-entrant.
RELIABLE = {"acks_late": True, "reject_on_worker_lost": True}
STEP = {
    "bind": True,
    "base": SyncTask,
    "autoretry_for": (StepWaits,),
    "retry_backoff": True,
    "max_retries": None,  # sync.policy bounds failures and pauses
    **RELIABLE,
}


@shared_task(name="sync.tasks.sync_connection", **STEP)
def sync_connection(
    self, connection_id: int, trigger: str = SyncLog.Trigger.SCHEDULED, failures: int = 0, pauses: int = 0
):
    """A sync: session and accounts here, then the accounts — in this task when they are few, else
    one sync_account task per account in parallel (a chord).

    Transient failures are retried up to 3 times (about 1, 5 and 15 minutes apart); rate-limit
    pauses wait without counting as a failure.
    """
    run_id = self.request.id or runs.new_run_id()
    structlog.contextvars.bind_contextvars(connection_id=connection_id, task_id=run_id, attempt=failures + 1)
    try:
        try:
            started = runs.start_run(connection_id, run_id=run_id, trigger=trigger, attempt=failures + 1)
        except Exception as exc:
            _wait_or_give_up(exc, connection_id=connection_id, run_id=run_id, failures=failures, pauses=pauses)
            started = runs.give_up(connection_id, run_id, trigger, exc, attempts=failures + 1)
        if started is None:
            return None
        if not isinstance(started, RunPlan):
            return {"sync_log_id": started.pk, "status": started.status}
        if len(started.account_ids) > settings.SYNC_ACCOUNTS_IN_TASK:
            _fan_out(started, [(pk, None) for pk in started.account_ids])
            return {"sync_log_id": started.sync_log_id, "status": SyncLog.Status.RUNNING}
        return _accounts_here(started)
    finally:
        structlog.contextvars.clear_contextvars()


def _account_step(plan: RunPlan, account_id: int, step, *, failures: int = 0, pauses: int = 0) -> dict:
    """One account under the policy: its result (counts, or its error once given up), or StepWaits."""
    try:
        return step()
    except Exception as exc:
        _wait_or_give_up(
            exc,
            connection_id=plan.connection_id,
            run_id=plan.run_id,
            failures=failures,
            pauses=pauses,
            account=runs.account_label(account_id),
        )
        return runs.account_gave_up(plan, account_id, exc, attempts=failures + 1)


def _accounts_here(plan: RunPlan) -> dict:
    """The lean run: the accounts in this task, the first in this thread and each other in a thread
    of its own (their time is the broker's), with no chord, no result backend, no further message.

    An account that must wait (a retry, a broker's pause) goes on as a sync_account task after its
    wait, and the run's finish then waits for it with the others' results in hand.
    """

    def one(row):
        structlog.contextvars.bind_contextvars(account_id=row.pk)
        try:
            return _account_step(plan, row.pk, lambda: runs.import_account(plan, row))
        except StepWaits as wait:
            return wait

    if db.connection.in_atomic_block:
        # Called inside a transaction (an eager task in a test, a caller's atomic block): another
        # thread's connection could neither see its rows nor write beside it, so one after another.
        outcomes = [one(row) for row in plan.accounts]
    else:
        others = [_in_own_thread(one, row) for row in plan.accounts[1:]]
        outcomes = [one(plan.accounts[0]), *(thread.result() for thread in others)]
    done = [o for o in outcomes if isinstance(o, dict)]
    synced = tuple(
        row.pk for row, o in zip(plan.accounts, outcomes, strict=True) if isinstance(o, dict) and "error" not in o
    )
    waiting = [(row.pk, o) for row, o in zip(plan.accounts, outcomes, strict=True) if isinstance(o, StepWaits)]
    if waiting:
        BrokerAccount.objects.filter(pk__in=synced).update(sync_cursor=plan.until)
        _fan_out(plan, waiting, done=done)
        return {"sync_log_id": plan.sync_log_id, "status": SyncLog.Status.RUNNING}
    sync_log = runs.finish_run(plan, done, synced=synced)
    return {"sync_log_id": sync_log.pk, "status": sync_log.status}


def _in_own_thread(function, *args) -> Future:
    """Run function(*args) in a new thread with this task's log context; its database connection
    is closed (given back to the pool) when it ends, as Celery does for a task's own thread."""
    future: Future = Future()
    context = contextvars.copy_context()

    def run():
        try:
            future.set_result(context.run(function, *args))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            db.connections.close_all()

    threading.Thread(target=run, name="sync-account", daemon=True).start()
    return future


def _fan_out(plan: RunPlan, accounts: list[tuple[int, StepWaits | None]], done: list[dict] = ()) -> None:
    """One sync_account task per account (after its wait, if it has one), then finish_sync with every result.

    The lock is held for the longest wait plus one TTL, as SyncTask.retry does for a waiting task.
    """
    if plan.parts:
        # The account tasks keep theirs as they go: what this task read is written before they start.
        plan.parts.write()
    longest = max((wait.countdown for _, wait in accounts if wait), default=0)
    if longest:
        locks.hold(plan.connection_id, plan.run_id, longest + settings.SYNC_LOCK_TTL_S)
    run = plan.message()
    header = []
    for pk, wait in accounts:
        if wait is None:
            header.append(sync_account.s(account_id=pk, **run))
        else:
            step = sync_account.s(account_id=pk, failures=wait.failures, pauses=wait.pauses, **run)
            header.append(step.set(countdown=wait.countdown))
    chord(header)(finish_sync.s(done=list(done), **run))


@shared_task(name="sync.tasks.sync_account", **STEP)
def sync_account(
    self,
    account_id: int,
    sync_log_id: int,
    connection_id: int,
    run_id: str,
    until: str,
    started_at: str,
    trigger: str,
    failures: int = 0,
    pauses: int = 0,
) -> dict:
    """Import one account's trades for a run. Always returns a result, so the run can finish."""
    run = {"sync_log_id": sync_log_id, "connection_id": connection_id, "run_id": run_id, "until": until}
    # An account task may follow an attempt that imported some batches (a retry, a pause, a message
    # redelivered after its worker died): what the run imported before always counts as its own.
    plan = RunPlan.from_message(resumed=True, started_at=started_at, trigger=trigger, **run)
    structlog.contextvars.bind_contextvars(
        connection_id=connection_id,
        account_id=account_id,
        sync_log_id=sync_log_id,
        task_id=self.request.id,
        attempt=failures + 1,
    )
    try:
        return _account_step(
            plan, account_id, lambda: runs.sync_account(plan, account_id), failures=failures, pauses=pauses
        )
    finally:
        structlog.contextvars.clear_contextvars()


@shared_task(name="sync.tasks.finish_sync", **RELIABLE)
def finish_sync(
    results: list[dict],
    sync_log_id: int,
    connection_id: int,
    run_id: str,
    until: str,
    started_at: str,
    trigger: str,
    done: list[dict] = (),
) -> dict:
    """Close the run once every account reported: one SyncLog, the connection's status, the lock.

    done: the results of the accounts the run's own task synced before the others had to wait.
    """
    run = {"sync_log_id": sync_log_id, "connection_id": connection_id, "run_id": run_id, "until": until}
    plan = RunPlan.from_message(started_at=started_at, trigger=trigger, **run)
    sync_log = runs.finish_run(plan, [*done, *results])
    return {"sync_log_id": sync_log.pk, "status": sync_log.status}


@shared_task(name="sync.tasks.close_interrupted_runs")
def close_interrupted_runs():
    """Periodic: close runs a killed worker left open and free connections stuck in SYNCING."""
    return housekeeping.close_interrupted_runs()


@shared_task(name="sync.tasks.reconcile_schedules")
def reconcile_schedules():
    """Periodic: repair drift between connections and their beat schedules."""
    changes = periodic_tasks.reconcile()
    if any(changes.values()):
        log.warning("schedules_reconciled", **changes)
    return changes


@shared_task(name="sync.tasks.prune_sync_logs")
def prune_sync_logs():
    """Daily: delete the archive's parts past ARCHIVE_RETENTION_DAYS and SyncLog rows past SYNC_LOG_RETENTION_DAYS."""
    archiving.prune_archives()
    return housekeeping.prune_sync_logs()
