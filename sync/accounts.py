"""One account's part of a run: the broker's positions, its trades since the cursor, what landed, what differs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from django.utils import timezone

from brokers.models import BrokerAccount, SyncLog
from brokers.providers import archive
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError, BrokerError, BrokerRateLimitError
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerPosition, BrokerTrade
from journal.files.matching import replace_file_rows
from journal.importing import ImportResult, import_trades
from journal.models import Trade
from journal.positions import ChangedInstruments, positions_recompute
from journal.reconciling import broker_marks, position_differences

log = structlog.get_logger("sync")


@dataclass(frozen=True)
class AccountImport:
    """What one account's import counted, and how the journal's positions differ from the broker's.

    differences is None when the broker reports no positions (or could not this time); marks
    are the broker's prices of the instruments it reported with one, to value open positions.
    """

    counts: ImportResult
    differences: list[dict] | None = None
    marks: dict[str, dict] | None = None


def import_account(
    provider: BrokerProvider,
    auth: AuthResult,
    row: BrokerAccount,
    info: BrokerAccountInfo,
    until: datetime,
    resumed_run_started: datetime | None,
) -> AccountImport:
    """Import the account's trades in (cursor - overlap, run start]; the caller moves the cursor to `until`.

    The overlap only decides what to ask the broker for: providers pass on every fill the
    broker returned within max_history, and the journal's unique constraint drops the ones
    it already has. Where the broker reports positions they are read first, and the fills
    are read up to that moment at least, so every fill behind them is in the journal when
    the two are compared. resumed_run_started is the run's start when an earlier attempt of the
    run may have imported some of these trades (None on a run's first attempt: nothing to look up).
    """
    reported = _broker_positions(provider, auth, info, row)
    read_at = timezone.now()
    if reported is not None:
        until = max(until, read_at)
    since = row.sync_cursor - provider.sync_overlap if row.sync_cursor else until - provider.max_history
    archive.note_window(since, until)
    attempt_started = timezone.now()
    cursor = row.sync_cursor
    changes = ChangedInstruments(row.pk)

    def committed(batch, voided, last):
        landed(row, changes, batch, voided, attempt_started)
        if last or not provider.trades_ascending:
            return  # after the last batch of a source that ended well, the caller moves the cursor
        # Every fill up to this batch's newest is committed: a rate-limit pause or a crash
        # after this point resumes here instead of refetching the whole backfill.
        nonlocal cursor
        newest = max(t.executed_at for t in batch)
        if cursor is None or newest > cursor:
            cursor = newest
            BrokerAccount.objects.filter(pk=row.pk).update(sync_cursor=newest)

    try:
        result = import_trades(row.pk, provider.get_trades(auth, info, since, until), on_batch_committed=committed)
    finally:
        # What committed is in the journal even when the source stopped early: its positions follow it.
        positions_recompute(changed=changes.since)
    if resumed_run_started is not None:
        result = _whole_run_counts(row, result, resumed_run_started, attempt_started, since)
    if reported is None:
        return AccountImport(result)
    return AccountImport(result, position_differences(row.pk, reported, read_at), broker_marks(reported, read_at))


def landed(
    row: BrokerAccount, changes: ChangedInstruments, batch: list[BrokerTrade], voided: list[Trade], since: datetime
) -> None:
    """After a batch of broker fills committed (a sync's or a reparse's): what changed, and file rows replaced.

    since: when this import began, so only the fills it inserted replace a file's rows.
    """
    changes.add(batch, voided)
    if row.has_file_fills:
        # Fills a file stored by content, now delivered under the broker's id: one row each.
        replaced = replace_file_rows(row.pk, batch, inserted_since=since)
        if replaced:
            changes.add([], replaced)
            log.info("file_fills_replaced", account=row.external_id, fills=len(replaced))


def _broker_positions(
    provider: BrokerProvider, auth: AuthResult, info: BrokerAccountInfo, row: BrokerAccount
) -> list[BrokerPosition] | None:
    """The broker's positions, or None: a broker that offers none, or fails to answer, skips the comparison only.

    A refused session is raised, so the run logs in again as for any other call, and so is a
    wait (a rate limit, a terminal still starting), which pauses the run as any call's does.
    """
    try:
        return provider.get_positions(auth, info)
    except (BrokerAuthError, BrokerRateLimitError):
        raise
    except BrokerError as exc:
        log.warning("positions_not_read", account=row.external_id, broker=provider.key, error=str(exc))
        return None


def _whole_run_counts(row: BrokerAccount, result: ImportResult, run_started, attempt_started, since) -> ImportResult:
    """Count what the whole run imported, not just this attempt.

    Batches an earlier attempt of this run committed were imported by the run; when this
    attempt fetches them again they are not duplicates the run skipped. (The run's lock
    keeps other runs of the connection out, so rows imported since the run began are its own.)
    """
    earlier = Trade.objects.filter(account_id=row.pk, imported_at__gte=run_started, imported_at__lt=attempt_started)
    imported_before = earlier.count()
    if not imported_before:
        return result
    refetched = earlier.filter(executed_at__gte=since).count()
    return ImportResult(
        imported=result.imported + imported_before, skipped=max(0, result.skipped - refetched), busted=result.busted
    )


def imported_by_run(row: BrokerAccount, sync_log_id: int) -> int:
    """Trades of this account a run imported before it gave up on the account."""
    started = SyncLog.objects.values_list("started_at", flat=True).get(pk=sync_log_id)
    return Trade.objects.filter(account_id=row.pk, imported_at__gte=started).count()
