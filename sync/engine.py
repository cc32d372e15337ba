"""One sync of one connection: lock → session → accounts → trades → journal → SyncLog → status.

The Celery task (sync.tasks) decides about retries; this module does the work and tells the
truth about it in the SyncLog and on the connection. A run spans its retries: every attempt
of one task id writes to the same SyncLog row.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache

import redis
import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from brokers import schedules
from brokers.models import BrokerAccount, BrokerConnection, SyncLog
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError, BrokerError, BrokerRateLimitError
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import AuthResult, BrokerAccountInfo
from config import metrics
from journal.importing import ImportResult, import_trades
from journal.models import Trade
from sync import notifications

log = structlog.get_logger("sync")

UNEXPECTED_ERROR = (
    "The sync stopped on an unexpected error on our side. It will run again at the next "
    "interval; if this keeps happening, please report it."
)
DATABASE_ERROR = "The journal's database did not answer."
# The journal's own database going away for a moment is as transient as a broker outage.
DATABASE_ERRORS = (OperationalError, InterfaceError)


class RetryableSyncError(Exception):
    """A transient failure on a non-final attempt: the task retries it, holding the run's lock meanwhile."""

    def __init__(self, message: str, *, kind: str, connection_id: int, owner: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.connection_id = connection_id
        self.owner = owner
        self.retry_after = retry_after


class RunSuperseded(Exception):
    """An account task of a run whose connection another run now holds."""


class SyncRequeue(Exception):
    """The broker's rate limit needs a pause: re-queue without counting a failure."""

    def __init__(self, retry_after: float, *, connection_id: int, owner: str):
        super().__init__(f"rate limited for {retry_after:.1f} s")
        self.retry_after = retry_after
        self.connection_id = connection_id
        self.owner = owner


def retryable(exc: Exception, connection_id: int, owner: str) -> RetryableSyncError:
    if isinstance(exc, BrokerError):
        return RetryableSyncError(
            exc.message, kind=exc.kind, connection_id=connection_id, owner=owner, retry_after=exc.retry_after
        )
    return RetryableSyncError(DATABASE_ERROR, kind="database", connection_id=connection_id, owner=owner)


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, DATABASE_ERRORS) or (isinstance(exc, BrokerError) and exc.transient)


def what_happened(exc: Exception) -> tuple[str, str]:
    """The message and kind of a failure, as a trader reads it."""
    if isinstance(exc, BrokerError):
        return exc.message, exc.kind
    if isinstance(exc, RunSuperseded):
        return str(exc), "superseded"
    if isinstance(exc, DATABASE_ERRORS):
        return DATABASE_ERROR, "database"
    return UNEXPECTED_ERROR, "internal"


def final_message(exc: Exception) -> tuple[str, str]:
    """What happened, and what happens next, once a run has given up on this failure."""
    message, kind = what_happened(exc)
    if isinstance(exc, BrokerRateLimitError):
        return f"{message} It kept asking us to wait; the next scheduled sync will try again.", kind
    if is_transient(exc):
        attempts = len(settings.SYNC_RETRY_DELAYS_S) + 1
        return f"{message} All {attempts} attempts failed; the next scheduled sync will try again.", kind
    return message, kind


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


# Extend only our own lock, and never shorten it.
_HOLD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def _acquire_lock(connection_id: int, owner: str) -> bool:
    """Take the connection's lock, or re-enter it when it is held by this same run.

    The lock lives SYNC_LOCK_TTL_S and the run keeps it alive (hold_lock) while it works or
    waits for a retry, so a run that dies frees its connection within one TTL. Re-entry lets
    a message redelivered after its worker was killed finish the run it started.
    """
    key = lock_key(connection_id)
    if _redis().set(key, owner, nx=True, ex=settings.SYNC_LOCK_TTL_S):
        return True
    return hold_lock(connection_id, owner, settings.SYNC_LOCK_TTL_S)


def hold_lock(connection_id: int, owner: str, seconds: float) -> bool:
    """Keep the run's lock for at least `seconds` more; False when the lock is not this run's."""
    return bool(_redis().eval(_HOLD, 1, lock_key(connection_id), owner, int(seconds * 1000)))


def _heartbeat(trades, connection_id: int, owner: str):
    """Pass the trades through, keeping the run's lock alive while a long import goes on."""
    last = time.monotonic()
    for trade in trades:
        if time.monotonic() - last > settings.SYNC_LOCK_TTL_S / 4:
            hold_lock(connection_id, owner, settings.SYNC_LOCK_TTL_S)
            last = time.monotonic()
        yield trade


def _release_lock(connection_id: int, owner: str) -> None:
    if not _redis().eval(_RELEASE, 1, lock_key(connection_id), owner):
        log.warning("sync_lock_lost_before_release", connection_id=connection_id)


@dataclass(frozen=True)
class RunPlan:
    """A run ready for its accounts: its log, the lock's owner, and the moment to sync up to."""

    sync_log_id: int
    connection_id: int
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
    except (RetryableSyncError, SyncRequeue):
        raise  # the task holds the lock through the pause, so no other run slips in
    except BaseException:
        _release_lock(connection.pk, attempt.task_id)
        raise
    if not isinstance(outcome, RunPlan):
        _release_lock(connection.pk, attempt.task_id)
    return outcome


def _record_skipped(connection: BrokerConnection, attempt: Attempt) -> SyncLog:
    now = timezone.now()
    log.info("sync_skipped_already_running", connection_id=connection.pk)
    skipped = SyncLog.objects.create(
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
    metrics.run_finished(skipped)
    return skipped


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
        _pause(connection, sync_log, status_before, exc.message, exc.kind)
        raise SyncRequeue(exc.retry_after, connection_id=connection.pk, owner=attempt.task_id) from exc
    except Exception as exc:
        if is_transient(exc) and not attempt.final:
            _pause(connection, sync_log, status_before, *what_happened(exc))
            raise retryable(exc, connection.pk, attempt.task_id) from exc
        if not isinstance(exc, (BrokerError, *DATABASE_ERRORS)):
            bound.exception("sync_crashed")
        return _finish_failed(connection, sync_log, exc, bound)
    rows = _refresh_accounts(connection, infos)
    if not rows:
        return _finish_ok(connection, sync_log, {}, bound)
    return RunPlan(
        sync_log_id=sync_log.pk,
        connection_id=connection.pk,
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
    if not _acquire_lock(connection.pk, plan.owner):
        # This run's lock lapsed and a newer run owns the connection: it fetches this account.
        raise RunSuperseded(
            "A newer sync of this connection took over before this account was fetched; it fetches it instead."
        )
    run_started = SyncLog.objects.values_list("started_at", flat=True).get(pk=plan.sync_log_id)
    provider = get_broker_provider(connection.broker_type, connection.environment)
    info = BrokerAccountInfo(external_id=row.external_id, name=row.name, currency=row.currency)
    auth, reused = _session(connection, provider)
    try:
        result = _import_account(provider, auth, row, info, plan, run_started)
    except BrokerAuthError:
        if not reused:
            raise
        _store_session(connection, None)
        auth, _ = _session(connection, provider)
        result = _import_account(provider, auth, row, info, plan, run_started)
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
    try:
        external_id = BrokerAccount.objects.filter(pk=account_id).values_list("external_id", flat=True).first()
    except DATABASE_ERRORS:
        external_id = None
    if not isinstance(exc, (BrokerError, RunSuperseded, *DATABASE_ERRORS)):
        log.error("account_sync_crashed", account_id=account_id, exc_info=exc)
    message, kind = final_message(exc)
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
    if sync_log.status != SyncLog.Status.RUNNING:
        # Closed meanwhile (e.g. as interrupted, after a long outage): its outcome stands.
        log.warning("sync_run_already_closed", sync_log_id=sync_log.pk, status=sync_log.status)
        return sync_log
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
    provider: BrokerProvider,
    auth: AuthResult,
    row: BrokerAccount,
    info: BrokerAccountInfo,
    plan: RunPlan,
    run_started: datetime,
) -> ImportResult:
    until = plan.until
    since = row.sync_cursor - provider.sync_overlap if row.sync_cursor else until - provider.max_history
    attempt_started = timezone.now()
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

    trades = _heartbeat(provider.get_trades(auth, info, since, until), plan.connection_id, plan.owner)
    result = import_trades(row.pk, trades, on_batch_committed=progress)
    # Only now that every batch committed may the next sync start from `until`.
    BrokerAccount.objects.filter(pk=row.pk).update(sync_cursor=until)
    return _whole_run_counts(row, result, run_started, attempt_started, since, until)


def _whole_run_counts(
    row: BrokerAccount,
    result: ImportResult,
    run_started: datetime,
    attempt_started: datetime,
    since: datetime,
    until: datetime,
) -> ImportResult:
    """Count what the whole run imported, not just this attempt.

    Batches an earlier attempt of this run committed were imported by the run; when this
    attempt fetches them again they are not duplicates the run skipped. (The run's lock
    keeps other runs of the connection out, so rows imported since the run began are its own.)
    """
    earlier = Trade.objects.filter(account_id=row.pk, imported_at__gte=run_started, imported_at__lt=attempt_started)
    imported_before = earlier.count()
    if not imported_before:
        return result
    refetched = earlier.filter(executed_at__gte=since, executed_at__lte=until).count()
    return ImportResult(imported=result.imported + imported_before, skipped=result.skipped - refetched)


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
    metrics.run_finished(sync_log)


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
    if exc is not None:
        message, kind = final_message(exc)
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


def _pause(connection: BrokerConnection, sync_log: SyncLog, status_before: str, message: str, kind: str) -> None:
    """Between attempts: the log stays open, the connection says what happened and that we retry."""
    if kind != "rate_limit":  # a rate-limit message already says when the sync continues
        message = f"{message} Retrying automatically."
    try:
        sync_log.error_message = message
        sync_log.error_kind = kind
        sync_log.save(update_fields=["error_message", "error_kind"])
        BrokerConnection.objects.filter(pk=connection.pk).update(status=status_before, last_sync_error=message)
    except DATABASE_ERRORS:
        log.warning("sync_pause_not_recorded", connection_id=connection.pk)


INTERRUPTED_MESSAGE = (
    "This sync was interrupted (its worker stopped) and did not resume. Nothing was lost: "
    "the next sync fetches everything since the last completed one."
)


def close_interrupted_runs() -> int:
    """Close runs a killed worker (or a Redis outage) left behind, and free connections stuck in SYNCING.

    A live run holds its connection's lock the whole time, retries and pauses included
    (hold_lock), so a RUNNING log whose lock is gone or another run's is dead. SYNCING is
    only set under a lock, so SYNCING without one is stale too.
    """
    client = _redis()
    closed = 0
    for connection in BrokerConnection.objects.filter(status=BrokerConnection.Status.SYNCING):
        if not client.exists(lock_key(connection.pk)):
            status = BrokerConnection.Status.ERROR if connection.last_sync_error else BrokerConnection.Status.CONNECTED
            BrokerConnection.objects.filter(pk=connection.pk, status=BrokerConnection.Status.SYNCING).update(
                status=status
            )
    # A run opens its log just after taking the lock: give that moment a margin.
    settled = timezone.now() - timedelta(seconds=60)
    for sync_log in SyncLog.objects.filter(status=SyncLog.Status.RUNNING, started_at__lt=settled):
        holder = client.get(lock_key(sync_log.connection_id))
        if holder is not None and holder.decode() == sync_log.task_id:
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
