"""Fills a file names by content only, met with the fills a sync stores under the broker's id, in either order.

A content-keyed row (`file:<digest>:<n>`) and the broker's row of the same fill share the
account, symbol, side, quantity, price and second. File after sync: the file's row is
already there. Sync after file: the sync's row replaces the file's (the broker's id is the
better key, and the next import of that file finds it by content again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from brokers.providers.types import BrokerTrade
from journal.files.reading import CONTENT_KEY_PREFIX, content_of
from journal.models import Trade


def occurrence(trade: BrokerTrade) -> int:
    return int(trade.broker_trade_id.rsplit(":", 1)[1])


def is_content_keyed(broker_trade_id: str) -> bool:
    return broker_trade_id.startswith(CONTENT_KEY_PREFIX)


def _content(symbol, side, quantity, price, executed_at) -> str:
    return content_of(symbol, side, quantity, price, executed_at)


def _window(trades: list) -> tuple:
    first = min(t.executed_at for t in trades).replace(microsecond=0)
    return first, max(t.executed_at for t in trades) + timedelta(seconds=1)


def stored_by_broker_id(account_id: int, trades: list[BrokerTrade]) -> Counter[str]:
    """How many fills of each content the account holds under a broker's id, around these trades' times."""
    if not trades:
        return Counter()
    first, last = _window(trades)
    stored = (
        Trade.objects.filter(account_id=account_id, executed_at__gte=first, executed_at__lt=last)
        .exclude(broker_trade_id__startswith=CONTENT_KEY_PREFIX)
        .values_list("symbol", "side", "quantity", "price", "executed_at")
    )
    return Counter(_content(*fields) for fields in stored)


def already_synced(trade: BrokerTrade, synced: Counter[str]) -> bool:
    """The file's nth identical row matches the nth fill stored under a broker's id."""
    content = _content(trade.symbol, trade.side, trade.quantity, trade.price, trade.executed_at)
    return occurrence(trade) <= synced[content]


def replace_file_rows(account_id: int, batch: Iterable[BrokerTrade], *, inserted_since: datetime) -> list[Trade]:
    """Remove the content-keyed rows that fills a sync's batch has just inserted replace; returns them.

    Only fills inserted since `inserted_since` (this import's): a fill the journal already held
    was met with the file before, so a file row still standing beside it is another fill. One
    file row per inserted fill, the lowest occurrence first. The caller recomputes the positions
    of the rows returned.
    """
    fills = [t for t in batch if not t.busted and not is_content_keyed(t.broker_trade_id)]
    if not fills:
        return []
    first, last = _window(fills)
    candidates: dict[str, list[Trade]] = {}
    rows = Trade.objects.filter(
        account_id=account_id,
        broker_trade_id__startswith=CONTENT_KEY_PREFIX,
        deleted_at__isnull=True,
        executed_at__gte=first,
        executed_at__lt=last,
    ).order_by("broker_trade_id")
    for row in rows:
        candidates.setdefault(_content(row.symbol, row.side, row.quantity, row.price, row.executed_at), []).append(row)
    if not candidates:
        return []
    ids = {t.broker_trade_id for t in fills}
    stored_now = Trade.objects.filter(
        account_id=account_id, broker_trade_id__in=ids, imported_at__gte=inserted_since
    ).values_list("symbol", "side", "quantity", "price", "executed_at")
    replaced = []
    for fields in stored_now:
        waiting = candidates.get(_content(*fields))
        if waiting:
            replaced.append(waiting.pop(0))
    if replaced:
        Trade.objects.filter(pk__in=[row.pk for row in replaced]).delete()
    return replaced
