"""Reparse: today's parser over a connection's archived broker answers, imported through the same dedup.

Each account's archived read of a run (sync.archiving: one part per attempt of its step) is
replayed on its own: a fresh provider reads its answers (and, for what its step took from the
run, such as a report another step fetched, the rest of that run's answers) through
BrokerHTTP, which serves them from the archive, so no request reaches the broker. Its
get_trades is asked for the same window the run asked for, so it asks for the same pages.
What it finds goes through import_trades: a fill the journal lacks is imported, and a fill it
holds (the unique key) is corrected where today's parser reads it differently
(journal.importing.trades_correct), so a parser fix reaches fills stored before it.

A reparse holds the connection's run lock as a sync does, leaves a SyncLog with the trigger
"reparse" and its counts per account, moves no cursor and changes no connection status.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from django.utils import timezone

from brokers import crypto
from brokers.models import BrokerConnection, RunArchive, SyncLog
from brokers.providers import archive
from brokers.providers.errors import BrokerConfigurationError, BrokerError, ErrorKind
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import AuthResult, BrokerAccountInfo
from journal.importing import import_trades, trades_correct
from journal.positions import ChangedInstruments, positions_recompute
from sync import accounts, archiving, locks
from sync.runs import close_log

log = structlog.get_logger("sync.reparse")


class ReparseRefused(Exception):
    """Why this reparse cannot run, in words for the operator; nothing was changed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class _Counts:
    """One account's reparse: its counts over every read replayed, and why reads failed."""

    imported: int = 0
    skipped: int = 0
    corrected: int = 0
    reads: int = 0
    errors: list[str] = field(default_factory=list)
    kind: str = ""


def archived_reads(connection: BrokerConnection, since: datetime, run_id: int | None = None) -> list[list[RunArchive]]:
    """The connection's kept account reads from runs started at or after `since`, oldest first.

    One read is an account's parts of one run: a step that paused (a rate limit) and resumed
    kept a part per attempt, and the resumed attempt went on from what the first one asked for.
    A read with a part the cap left out is listed too: its reparse says so instead of replaying half.
    """
    parts = RunArchive.objects.filter(
        sync_log__connection=connection,
        sync_log__started_at__gte=since,
        kind=RunArchive.Kind.ANSWERS,
        account__isnull=False,
        read_since__isnull=False,
    )
    if run_id is not None:
        parts = parts.filter(sync_log_id=run_id)
    reads: dict[tuple[int, int], list[RunArchive]] = {}
    for part in parts.select_related("account").order_by("sync_log__started_at", "id"):
        reads.setdefault((part.sync_log_id, part.account_id), []).append(part)
    return list(reads.values())


def connection_reparse(*, connection: BrokerConnection, since: datetime, run_id: int | None = None) -> SyncLog:
    """Replay the archived answers of the connection's runs since `since` (or of one run) and import what they hold.

    Raises ReparseRefused, changing nothing, when the connection's broker is not offered here, its
    credentials cannot be read, nothing is archived for the period, or a sync holds its lock.
    """
    try:
        get_broker_provider(connection.broker_type, connection.environment)
        secrets = archiving.run_secrets(connection, connection.auth)
    except BrokerConfigurationError as exc:
        raise ReparseRefused(str(exc)) from None
    except crypto.CredentialsUnreadable:
        raise ReparseRefused("No key opens this connection's credentials: a reparse needs its session.") from None
    reads = archived_reads(connection, since, run_id)
    if not reads:
        where = f"run {run_id}" if run_id is not None else f"runs since {timezone.localtime(since):%Y-%m-%d}"
        raise ReparseRefused(f"No archived broker answers for {connection} in {where}: nothing to reparse.")
    holder = f"reparse-{uuid.uuid4().hex}"
    if not locks.acquire(connection.pk, holder):
        raise ReparseRefused("A sync of this connection is running now. Reparse once it has finished.")
    try:
        with locks.kept_alive(connection.pk, holder):
            run = SyncLog.objects.create(
                connection=connection, trigger=SyncLog.Trigger.REPARSE, started_at=timezone.now(), task_id=holder
            )
            counts: dict[str, _Counts] = defaultdict(_Counts)
            for parts in reads:
                _reparse(connection, parts, secrets, counts[parts[0].account.external_id])
            _close(run, counts)
    finally:
        locks.release(connection.pk, holder)
    return run


def _reparse(connection: BrokerConnection, parts: list[RunArchive], secrets: list[str], counts: _Counts) -> None:
    row = parts[0].account
    row.connection = connection
    run_id = parts[0].sync_log_id
    # A fresh provider per read: what one read's answers held must not serve another's.
    provider = get_broker_provider(connection.broker_type, connection.environment)
    info = BrokerAccountInfo(external_id=row.external_id, name=row.name, currency=row.currency)
    others = RunArchive.objects.filter(sync_log_id=run_id, kind=RunArchive.Kind.ANSWERS).exclude(
        pk__in=[part.pk for part in parts]
    )
    replayer = archive.Replayer(
        archiving.answers_of(parts), archiving.answers_of(others.order_by("id")), secrets=secrets
    )
    # The first attempt's window: a resumed one asked from where the first had got to.
    since, until = min(p.read_since for p in parts), max(p.read_until for p in parts)
    changes = ChangedInstruments(row.pk)
    started = timezone.now()

    def committed(batch, voided, last):
        accounts.landed(row, changes, batch, voided, started)
        corrected = trades_correct(row.pk, batch)
        counts.corrected += len(corrected)
        changes.add([], [trade for pair in corrected for trade in pair])

    counts.reads += 1
    if any(part.not_kept for part in parts):
        counts.errors.append(f"the answers of run {run_id} were not all kept ({parts[-1].not_kept}), so not reparsed")
        counts.kind = ErrorKind.API
        return
    try:
        with archive.replaying(replayer):
            auth = _session(connection, provider)
            result = import_trades(row.pk, provider.get_trades(auth, info, since, until), on_batch_committed=committed)
    except BrokerError as exc:
        counts.errors.append(f"the answers archived by run {run_id}: {exc}")
        counts.kind = exc.kind
        log.warning("reparse_read_failed", run_id=run_id, account=row.external_id, error=str(exc))
    except Exception:
        counts.errors.append(f"the answers archived by run {run_id} failed on our side; it was logged")
        counts.kind = ErrorKind.INTERNAL
        log.exception("reparse_read_crashed", run_id=run_id, account=row.external_id)
    else:
        counts.imported += result.imported
        counts.skipped += result.skipped
    finally:
        positions_recompute(changed=changes.since)


def _session(connection: BrokerConnection, provider) -> AuthResult:
    """The stored session, or a login answered from the archive: either way no request leaves, so
    a token that has expired since does no harm (the archive's copy of a login's token is blanked)."""
    return connection.auth or provider.authenticate(connection.broker_credentials())


def _close(run: SyncLog, counts: dict[str, _Counts]) -> None:
    detail = {
        account: {"imported": c.imported, "skipped": c.skipped, "corrected": c.corrected, "reads": c.reads}
        | ({"error": "; ".join(c.errors)} if c.errors else {})
        for account, c in counts.items()
    }
    failed = [f"{account}: {'; '.join(c.errors)}" for account, c in counts.items() if c.errors]
    if sum(len(c.errors) for c in counts.values()) == sum(c.reads for c in counts.values()):
        status, kind = SyncLog.Status.FAILED, next(c.kind for c in counts.values() if c.kind)
    elif failed:
        status, kind = SyncLog.Status.PARTIAL, ErrorKind.ACCOUNT
    else:
        status, kind = SyncLog.Status.SUCCESS, ""
    close_log(run, status, detail, "; ".join(failed), kind)
