"""Idempotent bulk import of normalized trades into the journal.

Rows go in with one `INSERT ... ON CONFLICT (account, broker_trade_id) DO NOTHING` per
batch (multi-row VALUES on SQLite, unnest() of column arrays on PostgreSQL): the database's
unique constraint decides what is a duplicate, so the counts are exact even when two runs
import the same fills at once, and a tombstoned (deleted) trade is never inserted again.
The statement's row count is the number imported; the rest of the batch was skipped.

A busted fill (the broker cancelled it after the fact) is not inserted: the row it arrived as
before, if any, becomes a tombstone (deleted_at) in the same transaction, so it leaves the journal
and no later sync brings it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from itertools import islice
from operator import attrgetter
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from brokers.providers.types import BrokerTrade
from journal.models import REPORTED_FIELDS, Trade


@dataclass
class ImportResult:
    imported: int = 0
    skipped: int = 0
    # Fills the journal held that the broker has since cancelled: now tombstones.
    busted: int = 0

    def __iadd__(self, other: ImportResult) -> ImportResult:
        self.imported += other.imported
        self.skipped += other.skipped
        self.busted += other.busted
        return self


# The columns each row writes: the account, what the broker reported (the one description of a
# trade's fields, journal.models.REPORTED_FIELDS), and when it was imported.
_COLUMN_FIELDS = ("account", *REPORTED_FIELDS, "imported_at")
_COLUMNS = tuple(Trade._meta.get_field(name).column for name in _COLUMN_FIELDS)
_reported = attrgetter(*REPORTED_FIELDS)
# One encoder for every row: json.dumps with options builds a new encoder on each call.
_RAW_JSON = json.JSONEncoder(default=str, separators=(",", ":"))


def _as_json(value) -> str:
    # A mapping (the broker's record), or a list of frozen values (other_fees: a Fee per currency).
    plain = dict(value) if isinstance(value, Mapping) else [dataclasses.asdict(item) for item in value]
    return _RAW_JSON.encode(plain)


def _as_sqlite_date(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _as_sqlite_moment(value: datetime) -> str:
    # As Django stores a datetime on SQLite: naive UTC text.
    return str(value.astimezone(UTC).replace(tzinfo=None))


def _converters(sqlite: bool) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, conversion) for the reported fields whose Python value the driver cannot take as is."""
    found = []
    for position, name in enumerate(REPORTED_FIELDS):
        field = Trade._meta.get_field(name)
        if isinstance(field, models.JSONField):
            found.append((position, _as_json))
        elif sqlite and isinstance(field, models.DateTimeField):
            found.append((position, _as_sqlite_moment))
        elif sqlite and isinstance(field, models.DateField):
            found.append((position, _as_sqlite_date))
    return tuple(found)


_SQLITE_CONVERTERS = _converters(sqlite=True)
_POSTGRES_CONVERTERS = _converters(sqlite=False)


def _postgres_type(field: models.Field) -> str:
    # Bare text and numeric: an explicit cast to varchar(n) would cut a longer value silently,
    # where the column itself refuses it; the column keeps its own scale for numbers.
    if isinstance(field, models.CharField):
        return "text"
    if isinstance(field, models.DecimalField):
        return "numeric"
    return field.db_type(connection)


@cache
def _postgres_types() -> tuple[str, ...]:
    """Each column's type for unnest(), read off the model, so a new trade field needs no edit here."""
    return tuple(_postgres_type(Trade._meta.get_field(name)) for name in _COLUMN_FIELDS)


def _rows(account_id: int, batch: list[BrokerTrade], converters, stamped) -> list[list]:
    rows = []
    for t in batch:
        row = [account_id, *_reported(t), stamped]
        for position, convert in converters:
            row[position + 1] = convert(row[position + 1])
        rows.append(row)
    return rows


def _conflict_clause() -> str:
    return "ON CONFLICT (account_id, broker_trade_id) DO NOTHING"


def _target() -> str:
    table = connection.ops.quote_name(Trade._meta.db_table)
    return f"INSERT INTO {table} ({', '.join(connection.ops.quote_name(c) for c in _COLUMNS)})"


def _postgres_batch(cursor, account_id: int, batch: list[BrokerTrade], now: datetime) -> int:
    """One short, constant statement with a column of values per parameter.

    A multi-row VALUES list of 28,000 placeholders is re-parsed by the driver on every batch
    (psycopg caches only short statements); arrays through unnest() keep the SQL constant
    and measured about twice as fast (bench/RESULTS.md).
    """
    columns = [list(column) for column in zip(*_rows(account_id, batch, _POSTGRES_CONVERTERS, now), strict=True)]
    arrays = ", ".join(f"%s::{kind}[]" for kind in _postgres_types())
    cursor.execute(f"{_target()} SELECT * FROM unnest({arrays}) {_conflict_clause()}", columns)
    return cursor.rowcount


def _sqlite_batch(cursor, account_id: int, batch: list[BrokerTrade], now: datetime) -> int:
    """One multi-row VALUES statement; datetimes written as Django stores them (naive UTC text)."""
    params = [value for row in _rows(account_id, batch, _SQLITE_CONVERTERS, _as_sqlite_moment(now)) for value in row]
    one_row = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    cursor.execute(f"{_target()} VALUES {', '.join([one_row] * len(batch))} {_conflict_clause()}", params)
    return cursor.rowcount


def _batch_size() -> int:
    # SQLite allows 32,766 parameters per statement; stay well inside it on every backend.
    return min(settings.SYNC_IMPORT_BATCH_SIZE, 32_000 // len(_COLUMNS))


def import_trades(
    account_id: int,
    trades: Iterable[BrokerTrade],
    on_batch_committed: Callable[[list[BrokerTrade], list[Trade], bool], None] | None = None,
) -> ImportResult:
    """Insert the trades of one account; duplicates are skipped and counted. Batches commit one by one.

    on_batch_committed(batch, voided, last) runs after each batch's commit with the stored fills its
    busts tombstoned, e.g. to recompute what changed and record progress; `last` is true for the
    last batch of a source that ended well, after which the caller records the whole import as done.
    """
    insert = _postgres_batch if connection.vendor == "postgresql" else _sqlite_batch
    result = ImportResult()
    now = timezone.now()
    iterator = iter(trades)
    size = _batch_size()
    while True:
        batch, stopped = _next_batch(iterator, size)
        if batch:
            fills = [t for t in batch if not t.busted]
            busts = [t for t in batch if t.busted]
            # One statement commits on its own; only busts (updates beside the insert) need a transaction.
            with transaction.atomic() if busts else contextlib.nullcontext(), connection.cursor() as cursor:
                inserted = insert(cursor, account_id, fills, now) if fills else 0
                voided = _bust(account_id, busts, now)
            result += ImportResult(imported=inserted, skipped=len(fills) - inserted, busted=len(voided))
            if on_batch_committed is not None:
                on_batch_committed(batch, voided, stopped is None and len(batch) < size)
        if stopped is not None:
            raise stopped
        if len(batch) < size:
            return result


def _bust(account_id: int, busts: list[BrokerTrade], now: datetime) -> list[Trade]:
    """Tombstone the stored fills the broker voided, keeping its record of the bust; returns those fills.

    A tombstone, as a trader's deletion: no later sync brings the fill back. Busts are rare, so
    one update each keeps the broker's own voided record with the fill it voided. A bust of a
    fill already tombstoned (brokers repeat them on every read) voids nothing new.
    """
    voided = []
    for bust in busts:
        stored = Trade.objects.filter(
            account_id=account_id, broker_trade_id=bust.broker_trade_id, deleted_at__isnull=True
        ).first()
        # Written only if still standing: another import may have voided it in between.
        if stored is not None and Trade.objects.filter(pk=stored.pk, deleted_at__isnull=True).update(
            deleted_at=now, raw=dict(bust.raw)
        ):
            voided.append(stored)
    return voided


def _next_batch(iterator, size: int) -> tuple[list[BrokerTrade], Exception | None]:
    """Up to `size` trades, and what stopped the source early (a broker's pause or failure).

    The trades read before the source stopped are still committed: a run paused halfway
    through a backfill resumes after them instead of fetching them again.
    """
    batch: list[BrokerTrade] = []
    try:
        batch.extend(islice(iterator, size))
    except Exception as exc:  # the source raised after yielding some trades; islice kept them
        return batch, exc
    return batch, None


# What a correction may rewrite: everything the broker reported but the key that found the fill.
_CORRECTED_FIELDS = tuple(name for name in REPORTED_FIELDS if name != "broker_trade_id")


def _stored_form(name: str, value):
    """A reported value as the journal's column holds it, to compare with a stored fill's."""
    field = Trade._meta.get_field(name)
    if isinstance(field, models.JSONField):
        return json.loads(_as_json(value))
    if isinstance(field, models.DecimalField) and value is not None:
        # The column rounds to its places: more digits from the parser are not a difference.
        return value.quantize(Decimal(1).scaleb(-field.decimal_places))
    return value


def trades_correct(account_id: int, fills: Iterable[BrokerTrade]) -> list[tuple[Trade, Trade]]:
    """Rewrite the stored fills these fills match on the unique key where what the broker reported differs.

    For a reparse (sync.reparse): today's parser reads the same broker answers as the run that stored
    the fills, so a field it now reads (or reads right) reaches them. A tombstone stays as it is, and
    so does a fill a file stored (its raw says which file and row: it keeps what the file said).
    Returns (before, after) for each fill rewritten, so positions can follow from the earlier moment.
    """
    by_id = {t.broker_trade_id: t for t in fills if not t.busted}
    stored = Trade.objects.filter(account_id=account_id, broker_trade_id__in=list(by_id), deleted_at__isnull=True)
    corrected = []
    for trade in stored:
        if isinstance(trade.raw, dict) and "file" in trade.raw:
            continue
        fill = by_id[trade.broker_trade_id]
        changes = {
            name: getattr(fill, name)
            for name in _CORRECTED_FIELDS
            if _stored_form(name, getattr(fill, name)) != getattr(trade, name)
        }
        if not changes:
            continue
        changes = {name: _stored_form(name, value) for name, value in changes.items()}
        Trade.objects.filter(pk=trade.pk, deleted_at__isnull=True).update(**changes)
        after = Trade(**{**{f.attname: getattr(trade, f.attname) for f in Trade._meta.concrete_fields}, **changes})
        corrected.append((trade, after))
    return corrected
