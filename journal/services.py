"""Writes to the journal's fills that keep the round trips in step with them."""

from __future__ import annotations

from collections import defaultdict

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from journal.models import Trade
from journal.positions import changed_by, positions_recompute


def trades_delete(*, trades: QuerySet[Trade]) -> int:
    """Delete these fills as tombstones and recompute the instruments they were in; returns how many were deleted.

    A tombstone, not a removed row: the unique key keeps the next sync from importing the fill again.
    """
    with transaction.atomic():
        deleted = list(trades.filter(deleted_at__isnull=True).select_for_update())
        Trade.objects.filter(pk__in=[t.pk for t in deleted]).update(deleted_at=timezone.now())
    by_account = defaultdict(list)
    for trade in deleted:
        by_account[trade.account_id].append(trade)
    for account_id, fills in by_account.items():
        positions_recompute(changed=changed_by(account_id, fills))
    return len(deleted)
