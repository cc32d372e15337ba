"""Idempotent bulk import of normalized trades into the journal.

Rows go in with one multi-row `INSERT ... ON CONFLICT (account, broker_trade_id) DO NOTHING`
per batch: the database's unique constraint decides what is a duplicate, so the counts are
exact even when two runs import the same fills at once, and a tombstoned (deleted) trade
is never inserted again. The statement's row count is the number imported; the rest of
the batch was skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from journal.models import Trade


class NormalizedTrade(Protocol):
    """What the journal needs of one execution (brokers' BrokerTrade has this shape)."""

    broker_trade_id: str
    order_id: str
    symbol: str
    asset_class: str
    side: str
    quantity: Decimal
    price: Decimal
    fees: Decimal
    currency: str
    multiplier: Decimal
    executed_at: datetime
    raw: Any


@dataclass
class ImportResult:
    imported: int = 0
    skipped: int = 0

    def __iadd__(self, other: ImportResult) -> ImportResult:
        self.imported += other.imported
        self.skipped += other.skipped
        return self


_COLUMNS = (
    "account_id",
    "broker_trade_id",
    "order_id",
    "symbol",
    "asset_class",
    "side",
    "quantity",
    "price",
    "fees",
    "currency",
    "multiplier",
    "executed_at",
    "raw",
    "imported_at",
)


def _insert_sql(rows: int) -> str:
    table = connection.ops.quote_name(Trade._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _COLUMNS)
    one_row = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    return (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join([one_row] * rows)} "
        "ON CONFLICT (account_id, broker_trade_id) DO NOTHING"
    )


def _batch_size() -> int:
    # SQLite allows 32,766 parameters per statement; stay well inside it on every backend.
    return min(settings.SYNC_IMPORT_BATCH_SIZE, 32_000 // len(_COLUMNS))


def import_trades(
    account_id: int,
    trades: Iterable[NormalizedTrade],
    on_batch_committed: Callable[[list[NormalizedTrade]], None] | None = None,
) -> ImportResult:
    """Insert the trades of one account; duplicates are skipped and counted. Batches commit one by one.

    on_batch_committed(batch) runs after each batch's commit, e.g. to record progress.
    """
    result = ImportResult()
    adapt_dt = connection.ops.adapt_datetimefield_value
    now = adapt_dt(timezone.now())
    iterator = iter(trades)
    size = _batch_size()
    sql_full = None
    while batch := list(islice(iterator, size)):
        params = []
        for t in batch:
            params += (
                account_id,
                t.broker_trade_id,
                t.order_id,
                t.symbol,
                t.asset_class,
                t.side,
                t.quantity,
                t.price,
                t.fees,
                t.currency,
                t.multiplier,
                adapt_dt(t.executed_at),
                json.dumps(dict(t.raw), default=str, separators=(",", ":")),
                now,
            )
        if len(batch) == size:
            sql_full = sql_full or _insert_sql(size)
            sql = sql_full
        else:
            sql = _insert_sql(len(batch))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            inserted = cursor.rowcount
        result += ImportResult(imported=inserted, skipped=len(batch) - inserted)
        if on_batch_committed is not None:
            on_batch_committed(batch)
    return result
