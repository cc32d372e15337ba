"""One account's part of a run: fetch its trades since the cursor, import them, count what landed."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from brokers.models import BrokerAccount, SyncLog
from brokers.providers.base import BrokerProvider
from brokers.providers.types import AuthResult, BrokerAccountInfo
from journal.importing import ImportResult, import_trades
from journal.models import Trade


def import_account(
    provider: BrokerProvider,
    auth: AuthResult,
    row: BrokerAccount,
    info: BrokerAccountInfo,
    until: datetime,
    run_started: datetime,
) -> ImportResult:
    """Import the account's trades in (cursor - overlap, run start]; the cursor moves once all committed.

    The overlap only decides what to ask the broker for: providers pass on every fill the
    broker returned within max_history, and the journal's unique constraint drops the ones
    it already has.
    """
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

    result = import_trades(row.pk, provider.get_trades(auth, info, since, until), on_batch_committed=progress)
    # Only now that every batch committed may the next sync start from `until`.
    BrokerAccount.objects.filter(pk=row.pk).update(sync_cursor=until)
    return _whole_run_counts(row, result, run_started, attempt_started, since)


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
