"""Idempotent bulk import of normalized trades into the journal.

Rows go in with one `INSERT ... ON CONFLICT (account, broker_trade_id) DO NOTHING` per
batch (multi-row VALUES on SQLite, unnest() of column arrays on PostgreSQL): the database's
unique constraint decides what is a duplicate, so the counts are exact even when two runs
import the same fills at once, and a tombstoned (deleted) trade is never inserted again.
The statement's row count is the number imported; the rest of the batch was skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
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
    fee_currency: str
    currency: str
    multiplier: Decimal
    expiry: date | None
    strike: Decimal | None
    option_right: str
    fx_rate_to_base: Decimal | None
    other_fees: Sequence[Any]
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
    "fee_currency",
    "currency",
    "multiplier",
    "expiry",
    "strike",
    "option_right",
    "fx_rate_to_base",
    "executed_at",
    "other_fees",
    "raw",
    "imported_at",
)


# Column types for PostgreSQL's unnest(), in _COLUMNS order.
_POSTGRES_TYPES = (
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
    "numeric",
    "numeric",
    "numeric",
    "text",
    "text",
    "numeric",
    "date",
    "numeric",
    "text",
    "numeric",
    "timestamptz",
    "jsonb",
    "jsonb",
    "timestamptz",
)
# One encoder for every row: json.dumps with options builds a new encoder on each call.
_RAW_JSON = json.JSONEncoder(default=str, separators=(",", ":"))


def _fees_json(t: NormalizedTrade) -> str:
    return _RAW_JSON.encode([{"currency": f.currency, "cost": str(f.cost)} for f in t.other_fees])


def _conflict_clause() -> str:
    return "ON CONFLICT (account_id, broker_trade_id) DO NOTHING"


def _target() -> str:
    table = connection.ops.quote_name(Trade._meta.db_table)
    return f"INSERT INTO {table} ({', '.join(connection.ops.quote_name(c) for c in _COLUMNS)})"


def _postgres_batch(cursor, account_id: int, batch: list[NormalizedTrade], now: datetime) -> int:
    """One short, constant statement with a column of values per parameter.

    A multi-row VALUES list of 28,000 placeholders is re-parsed by the driver on every batch
    (psycopg caches only short statements); arrays through unnest() keep the SQL constant
    and measured about twice as fast (bench/RESULTS.md).
    """
    columns = [
        [account_id] * len(batch),
        *([getattr(t, name) for t in batch] for name in _COLUMNS[1:-3]),
        [_fees_json(t) for t in batch],
        [_RAW_JSON.encode(dict(t.raw)) for t in batch],
        [now] * len(batch),
    ]
    arrays = ", ".join(f"%s::{kind}[]" for kind in _POSTGRES_TYPES)
    cursor.execute(f"{_target()} SELECT * FROM unnest({arrays}) {_conflict_clause()}", columns)
    return cursor.rowcount


def _sqlite_batch(cursor, account_id: int, batch: list[NormalizedTrade], now: datetime) -> int:
    """One multi-row VALUES statement; datetimes written as Django stores them (naive UTC text)."""
    stored_now = str(now.astimezone(UTC).replace(tzinfo=None))
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
            t.fee_currency,
            t.currency,
            t.multiplier,
            t.expiry.isoformat() if t.expiry else None,
            t.strike,
            t.option_right,
            t.fx_rate_to_base,
            str(t.executed_at.astimezone(UTC).replace(tzinfo=None)),
            _fees_json(t),
            _RAW_JSON.encode(dict(t.raw)),
            stored_now,
        )
    one_row = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    cursor.execute(f"{_target()} VALUES {', '.join([one_row] * len(batch))} {_conflict_clause()}", params)
    return cursor.rowcount


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
    insert = _postgres_batch if connection.vendor == "postgresql" else _sqlite_batch
    result = ImportResult()
    now = timezone.now()
    iterator = iter(trades)
    size = _batch_size()
    while True:
        batch, stopped = _next_batch(iterator, size)
        if batch:
            with transaction.atomic(), connection.cursor() as cursor:
                inserted = insert(cursor, account_id, batch, now)
            result += ImportResult(imported=inserted, skipped=len(batch) - inserted)
            if on_batch_committed is not None:
                on_batch_committed(batch)
        if stopped is not None:
            raise stopped
        if len(batch) < size:
            return result


def _next_batch(iterator, size: int) -> tuple[list[NormalizedTrade], Exception | None]:
    """Up to `size` trades, and what stopped the source early (a broker's pause or failure).

    The trades read before the source stopped are still committed: a run paused halfway
    through a backfill resumes after them instead of fetching them again.
    """
    batch: list[NormalizedTrade] = []
    try:
        batch.extend(islice(iterator, size))
    except Exception as exc:  # the source raised after yielding some trades; islice kept them
        return batch, exc
    return batch, None
