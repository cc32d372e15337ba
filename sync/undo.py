"""Undo a sync run: the fills it added leave the journal, and the next sync reads their window again.

A run's fills are the connection's trades imported while it ran: the run lock keeps every other
run of the connection out from its start to its end, so nothing else imported into those
accounts then. They are removed outright, not as tombstones, so a later sync imports them again
(a trader's own deletion leaves a tombstone and stays deleted: journal.services.trades_delete).
A fill of the run that is a tombstone by now (busted by the broker, deleted by the trader) stays
one. Each account's cursor goes back to the earliest removed fill (not for a file import, which
moved none), and the round trips of the instruments touched are rebuilt from that moment. The
SyncLog keeps the run, marked undone.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from brokers.models import BrokerAccount, SyncLog
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class
from journal.models import Trade
from journal.positions import changed_by, positions_recompute
from sync import locks


class UndoRefused(Exception):
    """Why this run cannot be undone now, in words for the trader; nothing was changed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class RunFills:
    """What undoing a run would remove (or removed): how many fills, per account's external id."""

    by_account: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_account.values())


def run_fills(run: SyncLog) -> RunFills:
    """The fills this run added that are still in the journal, counted per account."""
    counts: dict[str, int] = defaultdict(int)
    for external_id in _added_by(run).values_list("account__external_id", flat=True):
        counts[external_id] += 1
    return RunFills(dict(sorted(counts.items())))


def beyond_reach(run: SyncLog) -> int:
    """How many of the run's fills are older than the broker still lists: undone, they would not come back by sync."""
    try:
        reach = get_provider_class(run.connection.broker_type).reach()
    except BrokerConfigurationError:
        return _added_by(run).count()  # a broker this installation no longer offers lists nothing again
    return _added_by(run).filter(executed_at__lt=timezone.now() - reach).count()


def run_undo(*, run: SyncLog, by) -> RunFills:
    """Remove the fills `run` added, move the cursors back, rebuild the round trips, mark the run undone.

    Raises UndoRefused (changing nothing) for a run still going, one already undone, one whose
    fills are all gone already, or while another sync of the connection holds its lock.
    """
    _refuse_if_unfinished(run)
    holder = f"undo-{uuid.uuid4()}"
    if not locks.acquire(run.connection_id, holder):
        raise UndoRefused("A sync of this connection is running now. Undo the run once it has finished.")
    try:
        with transaction.atomic():
            run = SyncLog.objects.select_for_update().get(pk=run.pk)
            _refuse_if_unfinished(run)
            removed = list(_added_by(run).select_related("account"))
            if not removed:
                raise UndoRefused("This run added no fill that is still in the journal: there is nothing to undo.")
            Trade.objects.filter(pk__in=[t.pk for t in removed]).delete()
            by_account: dict[BrokerAccount, list[Trade]] = defaultdict(list)
            for trade in removed:
                by_account[trade.account].append(trade)
            # A file import moved no cursor, so its undo moves none: the file's fills leave, and
            # the next sync reads from where it was going to.
            if run.trigger != SyncLog.Trigger.FILE:
                for account, fills in by_account.items():
                    _read_again_from(account, min(t.executed_at for t in fills))
            run.undone_at, run.undone_by, run.trades_undone = timezone.now(), by, len(removed)
            run.save(update_fields=["undone_at", "undone_by", "trades_undone"])
        for account, fills in by_account.items():
            positions_recompute(changed=changed_by(account.pk, fills))
    finally:
        locks.release(run.connection_id, holder)
    counts = {account.external_id: len(fills) for account, fills in by_account.items()}
    return RunFills(dict(sorted(counts.items())))


def _refuse_if_unfinished(run: SyncLog) -> None:
    if run.undone_at is not None:
        raise UndoRefused(f"This run was undone already, at {timezone.localtime(run.undone_at):%Y-%m-%d %H:%M}.")
    if run.status == SyncLog.Status.RUNNING or run.finished_at is None:
        raise UndoRefused("This run has not finished yet. Undo it once it has.")


def _added_by(run: SyncLog):
    return Trade.objects.filter(
        account__connection_id=run.connection_id,
        imported_at__gte=run.started_at,
        imported_at__lte=run.finished_at,
        deleted_at__isnull=True,
    )


def _read_again_from(account: BrokerAccount, earliest: datetime) -> None:
    """The next sync asks from here (less the provider's overlap), so the removed fills are listed again."""
    if account.sync_cursor is not None and account.sync_cursor > earliest:
        BrokerAccount.objects.filter(pk=account.pk).update(sync_cursor=earliest)
