"""One sync of one connection: lock → session → accounts → trades → journal → SyncLog → status.

The Celery task (sync.tasks) decides about retries; this module does the work and tells the
truth about it in the SyncLog and on the connection. A run spans its retries: every attempt
of one task id writes to the same SyncLog row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache

import redis
import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from brokers import schedules
from brokers.models import BrokerAccount, BrokerConnection, SyncLog
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError, BrokerError, BrokerRateLimitError
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import AuthResult, BrokerAccountInfo
from journal.importing import ImportResult, import_trades
from sync import notifications

log = structlog.get_logger("sync")

UNEXPECTED_ERROR = (
    "The sync stopped on an unexpected error on our side. It will run again at the next "
    "interval; if this keeps happening, please report it."
)


class RetryableSyncError(Exception):
    """A transient broker failure on a non-final attempt: the task retries it."""

    def __init__(self, error: BrokerError):
        super().__init__(error.message)
        self.error = error
        self.retry_after = error.retry_after


class SyncRequeue(Exception):
    """The broker's rate limit needs a pause: re-queue without counting a failure."""

    def __init__(self, retry_after: float):
        super().__init__(f"rate limited for {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attempt:
    connection_id: int
    trigger: str = SyncLog.Trigger.SCHEDULED
    task_id: str = ""
    number: int = 1  # failed attempts so far + 1
    final: bool = True  # no retry follows a transient failure of this attempt
    may_requeue: bool = True  # False once a run was paused for rate limits too often


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


# Release only our own lock: a run that outlived its lock must not free someone else's.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def lock_key(connection_id: int) -> str:
    return f"sync-lock:{connection_id}"


def _acquire_lock(connection_id: int, owner: str) -> bool:
    """Take the connection's lock, or re-enter it when it is held by this same task id.

    Re-entry is what lets a message redelivered after its worker was killed finish the run
    it started, instead of being skipped by its own stale lock.
    """
    key = lock_key(connection_id)
    if _redis().set(key, owner, nx=True, ex=settings.SYNC_LOCK_TIMEOUT_S):
        return True
    if _redis().get(key) == owner.encode():
        _redis().expire(key, settings.SYNC_LOCK_TIMEOUT_S)
        return True
    return False


def _release_lock(connection_id: int, owner: str) -> None:
    if not _redis().eval(_RELEASE, 1, lock_key(connection_id), owner):
        log.warning("sync_lock_lost_before_release", connection_id=connection_id)


@dataclass(frozen=True)
class RunPlan:
    """A run ready for its accounts: its log, the lock's owner, and the moment to sync up to."""

    sync_log_id: int
    owner: str
    account_ids: tuple[int, ...]
    until: datetime


def run_sync(attempt: Attempt) -> SyncLog | None:
    """Run one sync inline, accounts one after another (commands, tests); returns its SyncLog."""
    started = start_run(attempt)
    if not isinstance(started, RunPlan):
        return started
    try:
        results = [sync_account_safely(started, account_id) for account_id in started.account_ids]
    except BaseException:
        _release_lock(attempt.connection_id, started.owner)
        raise
    return finish_run(started, results)


def start_run(attempt: Attempt) -> RunPlan | SyncLog | None:
    """Lock, open the log, get a session and the accounts. Returns the plan, or the run's end.

    With a plan the lock stays held: finish_run() releases it once every account reported.
    Raises RetryableSyncError / SyncRequeue for the task to retry or re-queue.
    """
    connection = BrokerConnection.objects.filter(pk=attempt.connection_id).first()
    if connection is None:
        log.info("sync_connection_gone", connection_id=attempt.connection_id)
        return None
    if not attempt.task_id:
        attempt = replace(attempt, task_id=f"inline-{uuid.uuid4()}")
    if not _acquire_lock(connection.pk, attempt.task_id):
        return _record_skipped(connection, attempt)
    try:
        outcome = _start_locked(connection, attempt)
    except BaseException:
        _release_lock(connection.pk, attempt.task_id)
        raise
    if not isinstance(outcome, RunPlan):
        _release_lock(connection.pk, attempt.task_id)
    return outcome


def _record_skipped(connection: BrokerConnection, attempt: Attempt) -> SyncLog:
    now = timezone.now()
    log.info("sync_skipped_already_running", connection_id=connection.pk)
    return SyncLog.objects.create(
        connection=connection,
        trigger=attempt.trigger,
        status=SyncLog.Status.SKIPPED,
        started_at=now,
        finished_at=now,
        duration_ms=0,
        task_id=attempt.task_id,
        attempt=attempt.number,
        error_message="Another sync of this connection was already running.",
    )


def _open_log(connection: BrokerConnection, attempt: Attempt) -> SyncLog:
    if attempt.task_id:
        existing = SyncLog.objects.filter(
            connection=connection, task_id=attempt.task_id, status=SyncLog.Status.RUNNING
        ).first()
        if existing:
            existing.attempt = attempt.number
            existing.save(update_fields=["attempt"])
            return existing
    return SyncLog.objects.create(
        connection=connection,
        trigger=attempt.trigger,
        started_at=timezone.now(),
        task_id=attempt.task_id,
        attempt=attempt.number,
    )


def _bound(connection: BrokerConnection, sync_log: SyncLog):
    return log.bind(
        connection_id=connection.pk,
        broker=connection.broker_type,
        task_id=sync_log.task_id,
        attempt=sync_log.attempt,
        sync_log_id=sync_log.pk,
    )


def _start_locked(connection: BrokerConnection, attempt: Attempt) -> RunPlan | SyncLog:
    sync_log = _open_log(connection, attempt)
    status_before = connection.status
    BrokerConnection.objects.filter(pk=connection.pk).update(status=BrokerConnection.Status.SYNCING)
    bound = _bound(connection, sync_log)
    bound.info("sync_started", trigger=attempt.trigger)
    try:
        provider = get_broker_provider(connection.broker_type, connection.environment)
        infos = _list_accounts(connection, provider)
    except BrokerAuthError as exc:
        return _finish_failed(connection, sync_log, exc, bound, credentials_rejected=True)
    except BrokerRateLimitError as exc:
        if not attempt.may_requeue:
            return _finish_failed(connection, sync_log, exc, bound)
        _pause(connection, sync_log, status_before, exc)
        raise SyncRequeue(exc.retry_after) from exc
    except BrokerError as exc:
        if exc.transient and not attempt.final:
            _pause(connection, sync_log, status_before, exc)
            raise RetryableSyncError(exc) from exc
        return _finish_failed(connection, sync_log, exc, bound)
    except Exception as exc:
        bound.exception("sync_crashed")
        return _finish_failed(connection, sync_log, exc, bound)
    rows = _refresh_accounts(connection, infos)
    if not rows:
        return _finish_ok(connection, sync_log, {}, bound)
    return RunPlan(
        sync_log_id=sync_log.pk,
        owner=attempt.task_id,
        account_ids=tuple(row.pk for row in rows.values()),
        until=timezone.now(),
    )


def _session(connection: BrokerConnection, provider: BrokerProvider) -> tuple[AuthResult, bool]:
    """A valid broker session: the stored one, renewed when close to expiry, or a fresh login.

    Logging in only when needed matters: Tradovate allows two sessions per user, and a
    login on every sync would close the trader's own platform. Returns (session, reused).
    """
    now = timezone.now()
    auth = connection.auth
    reused = auth is not None
    if auth is not None and auth.expires_within(timedelta(0), now):
        auth = None
    elif auth is not None and auth.expires_within(provider.token_renew_margin, now):
        try:
            auth = provider.refresh_token(auth)
        except BrokerAuthError:
            auth = None
        _store_session(connection, auth)
    if auth is None:
        reused = False
        auth = provider.authenticate(connection.broker_credentials())
        _store_session(connection, auth)
    return auth, reused


def _store_session(connection: BrokerConnection, auth: AuthResult | None) -> None:
    connection.auth = auth
    BrokerConnection.objects.filter(pk=connection.pk).update(token_ciphertext=connection.token_ciphertext)


def _list_accounts(connection: BrokerConnection, provider: BrokerProvider) -> list[BrokerAccountInfo]:
    auth, reused = _session(connection, provider)
    try:
        return provider.get_accounts(auth)
    except BrokerAuthError:
        if not reused:
            raise
        # The stored session died early (revoked, or the broker restarted): log in once more.
        _store_session(connection, None)
        auth, _ = _session(connection, provider)
        return provider.get_accounts(auth)


def sync_account(plan: RunPlan, account_id: int) -> dict:
    """Fetch and import one account's trades since its cursor; raises BrokerError on failure."""
    row = BrokerAccount.objects.select_related("connection").get(pk=account_id)
    connection = row.connection
    # Keep the run's lock alive while its accounts work (they may wait for retries).
    _acquire_lock(connection.pk, plan.owner)
    provider = get_broker_provider(connection.broker_type, connection.environment)
    info = BrokerAccountInfo(external_id=row.external_id, name=row.name, currency=row.currency)
    auth, reused = _session(connection, provider)
    try:
        result = _import_account(provider, auth, row, info, plan.until)
    except BrokerAuthError:
        if not reused:
            raise
        _store_session(connection, None)
        auth, _ = _session(connection, provider)
        result = _import_account(provider, auth, row, info, plan.until)
    log.info(
        "account_synced",
        connection_id=connection.pk,
        broker=connection.broker_type,
        account=row.external_id,
        sync_log_id=plan.sync_log_id,
        imported=result.imported,
        skipped=result.skipped,
    )
    return {"account": row.external_id, "imported": result.imported, "skipped": result.skipped}


def account_failure(account_id: int, exc: BaseException) -> dict:
    """The result of an account that gave up; the run goes on with the others."""
    external_id = BrokerAccount.objects.filter(pk=account_id).values_list("external_id", flat=True).first()
    if isinstance(exc, BrokerError):
        message, kind = exc.message, exc.kind
    else:
        log.error("account_sync_crashed", account_id=account_id, exc_info=exc)
        message, kind = UNEXPECTED_ERROR, "internal"
    log.warning("account_sync_failed", account=external_id, error_kind=kind, error=message)
    return {"account": external_id or str(account_id), "imported": 0, "skipped": 0, "error": message, "kind": kind}


def sync_account_safely(plan: RunPlan, account_id: int) -> dict:
    try:
        return sync_account(plan, account_id)
    except Exception as exc:
        return account_failure(account_id, exc)


def finish_run(plan: RunPlan, results: list[dict]) -> SyncLog:
    """Write the run's outcome from every account's result, then free the connection's lock."""
    sync_log = SyncLog.objects.select_related("connection").get(pk=plan.sync_log_id)
    connection = sync_log.connection
    try:
        detail = {r["account"]: {k: v for k, v in r.items() if k != "account"} for r in results}
        bound = _bound(connection, sync_log)
        failed = [r for r in results if r.get("error")]
        if failed and len(failed) == len(results):
            return _finish_failed(
                connection,
                sync_log,
                None,
                bound,
                detail=detail,
                message=failed[0]["error"],
                kind=failed[0]["kind"],
                credentials_rejected=any(r["kind"] == "auth" for r in failed),
            )
        return _finish_ok(connection, sync_log, detail, bound)
    finally:
        _release_lock(connection.pk, plan.owner)


def _refresh_accounts(connection: BrokerConnection, infos: list[BrokerAccountInfo]) -> dict[str, BrokerAccount]:
    rows = {}
    for info in infos:
        row, _ = BrokerAccount.objects.update_or_create(
            connection=connection,
            external_id=info.external_id,
            defaults={"name": info.name, "currency": info.currency, "is_active": True},
        )
        rows[info.external_id] = row
    return rows


def _import_account(
    provider: BrokerProvider, auth: AuthResult, row: BrokerAccount, info: BrokerAccountInfo, until: datetime
) -> ImportResult:
    since = row.sync_cursor - provider.sync_overlap if row.sync_cursor else until - provider.max_history
    progress = None
    if provider.trades_ascending:
        cursor = row.sync_cursor

        def progress(batch):
            # Every fill up to this batch's newest is committed: a rate-limit pause or a crash
            # after this point resumes here instead of refetching the whole backfill.
            nonlocal cursor
            newest = max(t.executed_at for t in batch)
            if cursor is None or newest > cursor:
                cursor = newest
                BrokerAccount.objects.filter(pk=row.pk).update(sync_cursor=newest)

    result = import_trades(row.pk, provider.get_trades(auth, info, since, until), on_batch_committed=progress)
    # Only now that every batch committed may the next sync start from `until`.
    BrokerAccount.objects.filter(pk=row.pk).update(sync_cursor=until)
    return result


def _close_log(sync_log: SyncLog, status: str, detail: dict | None, error: str = "", kind: str = "") -> None:
    now = timezone.now()
    sync_log.status = status
    sync_log.finished_at = now
    sync_log.duration_ms = int((now - sync_log.started_at).total_seconds() * 1000)
    if detail is not None:
        sync_log.detail = detail
        sync_log.trades_imported = sum(d["imported"] for d in detail.values())
        sync_log.trades_skipped = sum(d["skipped"] for d in detail.values())
    sync_log.error_message = error
    sync_log.error_kind = kind
    sync_log.save()


@transaction.atomic
def _finish_ok(connection: BrokerConnection, sync_log: SyncLog, detail: dict, bound) -> SyncLog:
    failed = [k for k, v in detail.items() if v.get("error")]
    status = SyncLog.Status.PARTIAL if failed else SyncLog.Status.SUCCESS
    error = "; ".join(f"{k}: {detail[k]['error']}" for k in failed)
    _close_log(sync_log, status, detail, error, "account" if failed else "")
    now = sync_log.finished_at
    failures_before = BrokerConnection.objects.values_list("consecutive_failures", flat=True).get(pk=connection.pk)
    BrokerConnection.objects.filter(pk=connection.pk).update(
        status=BrokerConnection.Status.CONNECTED,
        last_sync_at=now,
        last_success_at=now,
        last_sync_error=error,
        consecutive_failures=0,
    )
    notifications.run_succeeded(connection, failures_before)
    notifications.credentials_expiring(connection)
    bound.info(
        "sync_finished",
        status=status,
        imported=sync_log.trades_imported,
        skipped=sync_log.trades_skipped,
        duration_ms=sync_log.duration_ms,
    )
    return sync_log


@transaction.atomic
def _finish_failed(
    connection: BrokerConnection,
    sync_log: SyncLog,
    exc: Exception | None,
    bound,
    *,
    detail: dict | None = None,
    message: str = "",
    kind: str = "",
    credentials_rejected: bool = False,
) -> SyncLog:
    if isinstance(exc, BrokerError):
        message, kind = exc.message, exc.kind
    elif exc is not None:
        message, kind = UNEXPECTED_ERROR, "internal"
    _close_log(sync_log, SyncLog.Status.FAILED, detail, message, kind)
    fields = {
        "status": BrokerConnection.Status.ERROR,
        "last_sync_at": sync_log.finished_at,
        "last_sync_error": message,
        "consecutive_failures": F("consecutive_failures") + 1,
    }
    if credentials_rejected:
        # Hold automatic sync until the trader saves new credentials (services resume it).
        fields["credentials_rejected"] = True
        fields["token_ciphertext"] = ""
    was_rejected = connection.credentials_rejected
    BrokerConnection.objects.filter(pk=connection.pk).update(**fields)
    connection.refresh_from_db()
    if credentials_rejected:
        schedules.sync_schedule(connection)
        if not was_rejected:
            notifications.credentials_refused(connection, message)
    notifications.run_failed(connection, connection.consecutive_failures, message)
    bound.warning("sync_failed", error_kind=kind, error=message)
    return sync_log


def _pause(connection: BrokerConnection, sync_log: SyncLog, status_before: str, exc: BrokerError) -> None:
    """Between attempts: the log stays open, the connection says what happened and that we retry."""
    sync_log.error_message = exc.message
    sync_log.error_kind = exc.kind
    sync_log.save(update_fields=["error_message", "error_kind"])
    BrokerConnection.objects.filter(pk=connection.pk).update(status=status_before, last_sync_error=exc.message)


INTERRUPTED_MESSAGE = (
    "This sync was interrupted (its worker stopped) and did not resume. Nothing was lost: "
    "the next sync fetches everything since the last completed one."
)


def close_interrupted_runs() -> int:
    """Close runs a killed worker left behind, and free connections stuck in SYNCING.

    SYNCING is only ever set while the run's lock is held, so SYNCING without a lock is
    stale at once. A RUNNING log may legitimately wait between retries, so it is closed
    only once it is older than any run with all its retries could be.
    """
    client = _redis()
    closed = 0
    for connection in BrokerConnection.objects.filter(status=BrokerConnection.Status.SYNCING):
        if not client.exists(lock_key(connection.pk)):
            status = BrokerConnection.Status.ERROR if connection.last_sync_error else BrokerConnection.Status.CONNECTED
            BrokerConnection.objects.filter(pk=connection.pk, status=BrokerConnection.Status.SYNCING).update(
                status=status
            )
    oldest_live = timezone.now() - timedelta(
        seconds=settings.SYNC_LOCK_TIMEOUT_S + sum(settings.SYNC_RETRY_DELAYS_S) * 1.1
    )
    for sync_log in SyncLog.objects.filter(status=SyncLog.Status.RUNNING, started_at__lt=oldest_live):
        if client.exists(lock_key(sync_log.connection_id)):
            continue
        _close_log(sync_log, SyncLog.Status.INTERRUPTED, None, INTERRUPTED_MESSAGE, "interrupted")
        closed += 1
    if closed:
        log.warning("sync_runs_closed_as_interrupted", count=closed)
    return closed


def prune_sync_logs() -> int:
    cutoff = timezone.now() - timedelta(days=settings.SYNC_LOG_RETENTION_DAYS)
    deleted, _ = SyncLog.objects.filter(started_at__lt=cutoff).exclude(status=SyncLog.Status.RUNNING).delete()
    return deleted
