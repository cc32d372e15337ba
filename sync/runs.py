"""One run of one connection: start (lock, log, session, accounts), accounts, and its recorded end.

A run spans its retries and pauses: every attempt of one task id writes to the same SyncLog
row, and the run holds its connection's lock (sync.locks) from start to finish. The steps
raise what went wrong; sync.policy decides what follows and the functions here record it,
so the SyncLog and the connection always tell what is really happening.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import structlog
from django.db import transaction
from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Greatest
from django.utils import timezone

from brokers import crypto, periodic_tasks
from brokers.models import BrokerAccount, BrokerConnection, SyncLog
from brokers.providers import archive
from brokers.providers.errors import BrokerAuthError, BrokerError, ErrorKind
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import AuthResult, BrokerAccountInfo
from sync import accounts, archiving, locks, notifications, outcomes, policy, sessions
from sync.outcomes import DATABASE_ERRORS, RunSuperseded
from telemetry import counters

log = structlog.get_logger("sync")


@dataclass(frozen=True)
class RunPlan:
    """A run ready for its accounts: its log, its id (which holds the lock), and the moment to sync up to.

    started_at and trigger are the log's, carried so that no step reads them back; resumed says an
    earlier attempt of this run may have imported some trades already (a redelivered message, a
    retried or paused step), which only then must be counted as the run's own. The task that
    started the run also keeps the rows it read (connection, accounts, log): its accounts need
    no second read.
    """

    sync_log_id: int
    connection_id: int
    run_id: str
    account_ids: tuple[int, ...]
    until: datetime
    started_at: datetime
    trigger: str
    resumed: bool = False
    accounts: tuple[BrokerAccount, ...] = field(default=(), compare=False, repr=False)
    sync_log: SyncLog | None = field(default=None, compare=False, repr=False)
    parts: archiving.RunParts | None = field(default=None, compare=False, repr=False)

    def archive(self) -> archiving.RunParts:
        """Where this run's steps keep what they read: held by the task that started the run, else kept at once."""
        return self.parts or archiving.RunParts(self.sync_log_id, hold=False)

    def message(self) -> dict:
        """The run as the kwargs of its account tasks and its finish (JSON)."""
        return {
            "sync_log_id": self.sync_log_id,
            "connection_id": self.connection_id,
            "run_id": self.run_id,
            "until": self.until.isoformat(),
            "started_at": self.started_at.isoformat(),
            "trigger": self.trigger,
        }

    @classmethod
    def from_message(cls, *, resumed: bool = False, **run) -> RunPlan:
        return cls(
            run["sync_log_id"],
            run["connection_id"],
            run["run_id"],
            (),
            datetime.fromisoformat(run["until"]),
            datetime.fromisoformat(run["started_at"]),
            run["trigger"],
            resumed,
        )


def new_run_id() -> str:
    """The id of a run with no Celery task id (inline); a run's id is what holds its lock."""
    return f"inline-{uuid.uuid4()}"


# --- the connection step -----------------------------------------------------------------
def start_run(connection_id: int, *, run_id: str, trigger: str, attempt: int = 1) -> RunPlan | SyncLog | None:
    """Lock, open the log, get a session and the accounts. Returns the plan, or the run's end.

    With a plan (or on a raised error) the lock stays held: the caller retries, pauses or
    gives up (give_up releases it), and finish_run releases it once every account reported.
    """
    connection, known, open_log_id = _read(connection_id, run_id)
    if connection is None:
        log.info("sync_connection_gone", connection_id=connection_id)
        return None
    if not locks.acquire(connection.pk, run_id):
        return _record_skipped(connection, trigger, run_id, attempt)
    earlier = SyncLog.objects.get(pk=open_log_id) if open_log_id is not None else None
    sync_log = _open_log(connection, trigger, run_id, attempt, earlier)
    BrokerConnection.objects.filter(pk=connection.pk).update(
        status=BrokerConnection.Status.SYNCING, next_attempt_at=None, next_attempt_reason=""
    )
    _bound(connection, sync_log).info("sync_started", trigger=trigger)
    provider = get_broker_provider(connection.broker_type, connection.environment, run_id=run_id)
    session_before = _stored_session(connection)
    # A first attempt holds what its steps read until its end; a resumed run's parts may be written meanwhile.
    parts = archiving.RunParts(sync_log.pk, hold=open_log_id is None)
    try:
        with archive.recording() as read:
            try:
                with locks.kept_alive(connection.pk, run_id):
                    infos = sessions.with_session(connection, provider, provider.get_accounts)
            finally:
                _count_request_retries(sync_log.pk, provider.request_retries)
                # What the step read is kept whatever became of it: its answers are what the broker said.
                parts.keep(None, read, connection, session_before, _stored_session(connection))
    except BaseException:
        parts.write()  # the run waits or ends here, with no end of its own to write them
        raise
    rows = _refresh_accounts(connection, infos, known)
    if not rows:
        locks.release(connection.pk, run_id)
        return _finish_ok(connection, sync_log, {}, parts=parts)
    return RunPlan(
        sync_log_id=sync_log.pk,
        connection_id=connection.pk,
        run_id=run_id,
        account_ids=tuple(row.pk for row in rows),
        until=timezone.now(),
        started_at=sync_log.started_at,
        trigger=sync_log.trigger,
        resumed=open_log_id is not None,
        accounts=tuple(rows),
        sync_log=sync_log,
        parts=parts,
    )


def _read(connection_id: int, run_id: str) -> tuple[BrokerConnection | None, dict[str, BrokerAccount], int | None]:
    """The connection, its accounts by external id, and this run's open log if an earlier attempt left
    one: one query for a connection that has accounts (every sync but the first)."""
    open_log = SyncLog.objects.filter(
        connection_id=OuterRef("connection_id"), task_id=run_id, status=SyncLog.Status.RUNNING
    ).values("pk")[:1]
    rows = list(
        BrokerAccount.objects.select_related("connection")
        .filter(connection_id=connection_id)
        .annotate(open_log_id=Subquery(open_log))
        .order_by("pk")
    )
    if not rows:
        open_log = SyncLog.objects.filter(
            connection_id=OuterRef("pk"), task_id=run_id, status=SyncLog.Status.RUNNING
        ).values("pk")[:1]
        connection = BrokerConnection.objects.filter(pk=connection_id).annotate(open_log_id=Subquery(open_log)).first()
        return connection, {}, connection.open_log_id if connection else None
    connection = rows[0].connection
    for row in rows:
        # One connection object for the whole run: a renewed session written through it is seen by every step.
        row.connection = connection
    return connection, {row.external_id: row for row in rows}, rows[0].open_log_id


def _record_skipped(connection: BrokerConnection, trigger: str, run_id: str, attempt: int) -> SyncLog:
    now = timezone.now()
    log.info("sync_skipped_already_running", connection_id=connection.pk)
    skipped = SyncLog.objects.create(
        connection=connection,
        trigger=trigger,
        status=SyncLog.Status.SKIPPED,
        started_at=now,
        finished_at=now,
        duration_ms=0,
        task_id=run_id,
        attempt=attempt,
        error_message="Another sync of this connection was already running.",
    )
    _count_finished(skipped)
    return skipped


def _open_log(
    connection: BrokerConnection, trigger: str, run_id: str, attempt: int, existing: SyncLog | None
) -> SyncLog:
    """The run's log: the one an earlier attempt opened (`existing`), or a new one."""
    if existing:
        existing.connection = connection
        if attempt > existing.attempt:
            existing.attempt = attempt
            existing.save(update_fields=["attempt"])
        return existing
    return SyncLog.objects.create(
        connection=connection, trigger=trigger, started_at=timezone.now(), task_id=run_id, attempt=attempt
    )


def _running_log(connection_id: int, run_id: str) -> SyncLog | None:
    return (
        SyncLog.objects.select_related("connection")
        .filter(connection_id=connection_id, task_id=run_id, status=SyncLog.Status.RUNNING)
        .first()
    )


def _bound(connection: BrokerConnection, sync_log: SyncLog):
    return log.bind(
        connection_id=connection.pk,
        broker=connection.broker_type,
        task_id=sync_log.task_id,
        attempt=sync_log.attempt,
        sync_log_id=sync_log.pk,
    )


def _refresh_accounts(
    connection: BrokerConnection, infos: list[BrokerAccountInfo], known: dict[str, BrokerAccount]
) -> list[BrokerAccount]:
    """The rows of the accounts the broker listed, written only where the broker says something new."""
    rows: dict[str, BrokerAccount] = {}
    for info in infos:
        facts = {
            "name": info.name,
            "currency": info.currency,
            "is_active": True,
            "broker_refreshed_on": _day(info.extra.get("refreshed_on")),
        }
        row = known.get(info.external_id)
        if row is None:
            row, _ = BrokerAccount.objects.update_or_create(
                connection=connection, external_id=info.external_id, defaults=facts
            )
        elif any(getattr(row, name) != value for name, value in facts.items()):
            BrokerAccount.objects.filter(pk=row.pk).update(**facts)
            for name, value in facts.items():
                setattr(row, name, value)
        row.connection = connection
        rows[info.external_id] = row
    return list(rows.values())


def _day(text: str | None) -> date | None:
    """A date the broker gave as YYYY-MM-DD (or a timestamp starting with one); None otherwise."""
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def _stored_session(connection: BrokerConnection) -> AuthResult | None:
    """The session stored now, to blank its tokens in the archive; None when there is none or no key opens it."""
    try:
        return connection.auth
    except crypto.CredentialsUnreadable:
        return None


def _count_request_retries(sync_log_id: int, retries: int) -> None:
    if retries:
        SyncLog.objects.filter(pk=sync_log_id).update(request_retries=F("request_retries") + retries)


# --- an account --------------------------------------------------------------------------
def sync_account(plan: RunPlan, account_id: int) -> dict:
    """An account step on its own (an account task, or the inline runner): read, import, move the cursor."""
    row = BrokerAccount.objects.select_related("connection").get(pk=account_id)
    if not locks.acquire(row.connection_id, plan.run_id):
        # This run's lock lapsed and a newer run owns the connection: it fetches this account.
        raise RunSuperseded()
    outcome = import_account(plan, row)
    BrokerAccount.objects.filter(pk=row.pk).update(sync_cursor=plan.until)
    return outcome


def import_account(plan: RunPlan, row: BrokerAccount) -> dict:
    """Fetch and import one account's trades since its cursor; raises what went wrong.

    The cursor moves to plan.until only once every batch committed, and the caller moves it (the
    run that syncs its accounts in its own task moves them all in one statement at its end).
    """
    connection = row.connection
    provider = get_broker_provider(connection.broker_type, connection.environment, run_id=plan.run_id)
    provider.trader_asked = plan.trigger == SyncLog.Trigger.MANUAL
    info = BrokerAccountInfo(external_id=row.external_id, name=row.name, currency=row.currency)
    session_before = _stored_session(connection)
    with archive.recording() as read:
        try:
            with locks.kept_alive(connection.pk, plan.run_id):
                outcome = sessions.with_session(
                    connection,
                    provider,
                    lambda auth: accounts.import_account(
                        provider, auth, row, info, plan.until, plan.started_at if plan.resumed else None
                    ),
                )
        finally:
            _count_request_retries(plan.sync_log_id, provider.request_retries)
            # An attempt that stopped early keeps its answers too: the batches it committed came from them.
            not_archived = plan.archive().keep(row.pk, read, connection, session_before, _stored_session(connection))
    result = outcome.counts
    log.info(
        "account_synced",
        connection_id=connection.pk,
        broker=connection.broker_type,
        account=row.external_id,
        sync_log_id=plan.sync_log_id,
        imported=result.imported,
        skipped=result.skipped,
        busted=result.busted,
        request_retries=provider.request_retries,
        unreadable=len(provider.unreadable_rows),
    )
    done = {"account": row.external_id, "imported": result.imported, "skipped": result.skipped}
    if result.busted:
        done["busted"] = result.busted
    notes = [*provider.notes, not_archived] if not_archived else provider.notes
    if notes:
        done["note"] = " ".join(notes)
    if provider.unreadable_rows:
        done["unreadable"] = list(provider.unreadable_rows)
    if outcome.differences is not None:
        # Stored with the run (SyncLog.detail): the brokers card shows the last successful run's.
        done["differences"] = outcome.differences
    if outcome.marks:
        # The positions page values open positions at the last successful run's prices.
        done["marks"] = outcome.marks
    return done


def account_label(account_id: int) -> str:
    """The account's id at the broker, for messages; its row id when the database does not answer."""
    try:
        external_id = BrokerAccount.objects.filter(pk=account_id).values_list("external_id", flat=True).first()
    except DATABASE_ERRORS:
        external_id = None
    return external_id or str(account_id)


def account_gave_up(plan: RunPlan, account_id: int, exc: BaseException, attempts: int) -> dict:
    """The result of an account that gave up; the run goes on with the others.

    What the account imported before it gave up (earlier batches, earlier attempts) counts.
    """
    try:
        row = BrokerAccount.objects.filter(pk=account_id).first()
        imported = accounts.imported_by_run(row, plan.sync_log_id) if row else 0
    except DATABASE_ERRORS:
        row, imported = None, 0
    if not isinstance(exc, (BrokerError, RunSuperseded, *DATABASE_ERRORS)):
        log.error("account_sync_crashed", account_id=account_id, exc_info=exc)
    message = outcomes.given_up(exc, attempts)
    kind = outcomes.what_happened(exc)[1]
    external_id = row.external_id if row else str(account_id)
    log.warning("account_sync_failed", account=external_id, error_kind=kind, error=message)
    return {"account": external_id, "imported": imported, "skipped": 0, "error": message, "kind": kind}


# --- between attempts --------------------------------------------------------------------
def record_wait(connection_id: int, run_id: str, message: str, kind: str, wait_s: float, *, attempt: int = 0) -> None:
    """A step waits (a retry, or a broker's limit): the log stays open and the connection says so.

    The connection stays SYNCING, with next_attempt_at telling when the run goes on.
    """
    try:
        updates = {"error_message": message, "error_kind": kind}
        if attempt:
            updates["attempt"] = Greatest(F("attempt"), attempt)
        SyncLog.objects.filter(connection_id=connection_id, task_id=run_id, status=SyncLog.Status.RUNNING).update(
            **updates
        )
        BrokerConnection.objects.filter(pk=connection_id).update(
            status=BrokerConnection.Status.SYNCING,
            last_sync_error=message,
            next_attempt_at=timezone.now() + timedelta(seconds=wait_s),
            next_attempt_reason=(
                BrokerConnection.NextAttempt.RATE_LIMIT
                if kind == ErrorKind.RATE_LIMIT
                else BrokerConnection.NextAttempt.RETRY
            ),
        )
    except DATABASE_ERRORS:
        log.warning("sync_wait_not_recorded", connection_id=connection_id)


# --- the end -----------------------------------------------------------------------------
def give_up(connection_id: int, run_id: str, trigger: str, exc: BaseException, attempts: int) -> SyncLog | None:
    """The connection step failed for good: close the run as FAILED and free the connection."""
    try:
        connection = BrokerConnection.objects.filter(pk=connection_id).first()
        if connection is None:
            return None
        sync_log = _running_log(connection_id, run_id) or _open_log(connection, trigger, run_id, attempts, None)
        if not isinstance(exc, (BrokerError, *DATABASE_ERRORS)):
            _bound(connection, sync_log).exception("sync_crashed", exc_info=exc)
        return _finish_failed(
            connection,
            sync_log,
            detail=None,
            message=outcomes.given_up(exc, attempts),
            kind=outcomes.what_happened(exc)[1],
            credentials_rejected=isinstance(exc, BrokerAuthError),
        )
    finally:
        locks.release(connection_id, run_id)


def finish_run(plan: RunPlan, results: list[dict], *, synced: tuple[int, ...] = ()) -> SyncLog:
    """Write the run's outcome from every account's result, then free the connection's lock.

    synced: accounts whose trades this step imported and whose cursors move to plan.until now, in
    the closing transaction (the run that synced its accounts in its own task).
    """
    sync_log = plan.sync_log or SyncLog.objects.select_related("connection").get(pk=plan.sync_log_id)
    connection = sync_log.connection
    try:
        detail = {r["account"]: {k: v for k, v in r.items() if k != "account"} for r in results}
        failed = [r for r in results if r.get("error")]
        if failed and len(failed) == len(results):
            return _finish_failed(
                connection,
                sync_log,
                detail=detail,
                message=failed[0]["error"],
                kind=failed[0]["kind"],
                credentials_rejected=any(r["kind"] == ErrorKind.AUTH for r in failed),
                parts=plan.parts,
            )
        return _finish_ok(connection, sync_log, detail, synced=synced, until=plan.until, parts=plan.parts)
    finally:
        locks.release(connection.pk, plan.run_id)


def _count_finished(sync_log: SyncLog) -> None:
    counters.run_finished(
        broker=sync_log.connection.broker_type,
        outcome=sync_log.status,
        imported=sync_log.trades_imported,
        skipped=sync_log.trades_skipped,
        duration_s=(sync_log.duration_ms or 0) / 1000,
    )


def close_log(sync_log: SyncLog, status: str, detail: dict | None, error: str = "", kind: str = "") -> bool:
    """Close a RUNNING log with its outcome; False (and nothing written) if it was closed meanwhile."""
    now = timezone.now()
    closed = {
        "status": status,
        "finished_at": now,
        "duration_ms": int((now - sync_log.started_at).total_seconds() * 1000),
        "error_message": error,
        "error_kind": kind,
    }
    if detail is not None:
        closed |= {
            "detail": detail,
            "trades_imported": sum(d["imported"] for d in detail.values()),
            "trades_skipped": sum(d["skipped"] for d in detail.values()),
        }
    # Only a log still RUNNING: a run the sweep closed as interrupted (after a long outage) keeps that
    # outcome. request_retries is counted by the steps with F(): never written back from a stale copy.
    if not SyncLog.objects.filter(pk=sync_log.pk, status=SyncLog.Status.RUNNING).update(**closed):
        log.warning("sync_run_already_closed", sync_log_id=sync_log.pk)
        return False
    for name, value in closed.items():
        setattr(sync_log, name, value)
    _count_finished(sync_log)
    return True


@transaction.atomic
def _finish_ok(
    connection: BrokerConnection,
    sync_log: SyncLog,
    detail: dict,
    *,
    synced: tuple[int, ...] = (),
    until: datetime | None = None,
    parts: archiving.RunParts | None = None,
) -> SyncLog:
    if parts:
        parts.write()
    if synced:
        # Their trades are committed whatever becomes of the log: the next sync starts from here.
        BrokerAccount.objects.filter(pk__in=synced).update(sync_cursor=until)
    failed = [k for k, v in detail.items() if v.get("error")]
    status = SyncLog.Status.PARTIAL if failed else SyncLog.Status.SUCCESS
    # Rows left out are said next to the errors: the run succeeded, but not with every row.
    notes = [f"{k}: {detail[k]['error']}" for k in failed]
    notes += [f"{k}: {outcomes.unreadable(v['unreadable'])}" for k, v in detail.items() if v.get("unreadable")]
    error = "; ".join(notes)
    if not close_log(sync_log, status, detail, error, ErrorKind.ACCOUNT if failed else ""):
        sync_log.refresh_from_db()
        return sync_log
    now = sync_log.finished_at
    # Read when the run started: only this run, which holds the lock, changes it meanwhile.
    failures_before = connection.consecutive_failures
    BrokerConnection.objects.filter(pk=connection.pk).update(
        status=BrokerConnection.Status.CONNECTED,
        last_sync_at=now,
        last_success_at=now,
        last_sync_error=error,
        next_attempt_at=None,
        next_attempt_reason="",
        consecutive_failures=0,
    )
    notifications.run_succeeded(connection, failures_before)
    notifications.credentials_expiring(connection)
    notifications.link_expiring(connection)
    _bound(connection, sync_log).info(
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
    *,
    detail: dict | None,
    message: str,
    kind: str,
    credentials_rejected: bool = False,
    parts: archiving.RunParts | None = None,
) -> SyncLog:
    if parts:
        parts.write()
    if not close_log(sync_log, SyncLog.Status.FAILED, detail, message, kind):
        sync_log.refresh_from_db()
        return sync_log
    fields = {
        "status": BrokerConnection.Status.ERROR,
        "last_sync_at": sync_log.finished_at,
        "last_sync_error": message,
        "next_attempt_at": None,
        "next_attempt_reason": "",
        "consecutive_failures": F("consecutive_failures") + 1,
    }
    if credentials_rejected:
        # A Reconnect or new credentials since the run began were not what the broker refused. (The
        # refused session itself was cleared where it was refused, only if still stored: sync.sessions.)
        authorised_at = (
            BrokerConnection.objects.select_for_update().values_list("authorised_at", flat=True).get(pk=connection.pk)
        )
        credentials_rejected = authorised_at is None or authorised_at <= sync_log.started_at
    if credentials_rejected:
        # Hold automatic sync until the trader saves new credentials (services resume it).
        fields["credentials_rejected"] = True
    was_rejected = connection.credentials_rejected
    BrokerConnection.objects.filter(pk=connection.pk).update(**fields)
    connection.refresh_from_db()
    if credentials_rejected:
        periodic_tasks.sync_schedule(connection)
        if not was_rejected:
            notifications.credentials_refused(connection, message)
    notifications.run_failed(connection, connection.consecutive_failures, message)
    _bound(connection, sync_log).warning("sync_failed", error_kind=kind, error=message)
    return sync_log


# --- inline (manage.py sync_connection) --------------------------------------------------
def run_inline(connection_id: int, *, trigger: str = SyncLog.Trigger.MANUAL, run_id: str = "") -> SyncLog | None:
    """Run one sync in this process, accounts one after another; returns its SyncLog.

    The same policy as the tasks, with no scheduler to come back later: a rate-limit pause
    is waited out here (holding the lock), a failure is final for its step.
    """
    run_id = run_id or new_run_id()
    started = _inline_step(
        connection_id,
        run_id,
        lambda: start_run(connection_id, run_id=run_id, trigger=trigger),
        lambda exc: give_up(connection_id, run_id, trigger, exc, attempts=1),
    )
    if not isinstance(started, RunPlan):
        return started
    # A step paused here runs again: what its earlier attempt imported counts as the run's.
    resumable = replace(started, resumed=True)
    results = [
        _inline_step(
            connection_id,
            run_id,
            lambda pk=pk: sync_account(resumable, pk),
            lambda exc, pk=pk: account_gave_up(resumable, pk, exc, attempts=1),
        )
        for pk in started.account_ids
    ]
    return finish_run(started, results)


def _inline_step(connection_id: int, run_id: str, step, on_give_up):
    pauses = 0
    while True:
        try:
            return step()
        except Exception as exc:
            decision = policy.next_step(exc, failures=0, pauses=pauses, retries=False)
            if not isinstance(decision, policy.Pause):
                return on_give_up(exc)
            record_wait(
                connection_id,
                run_id,
                outcomes.pausing(exc, decision.countdown),
                ErrorKind.RATE_LIMIT,
                decision.countdown,
            )
            with locks.kept_alive(connection_id, run_id):
                time.sleep(decision.countdown)
            pauses += 1
