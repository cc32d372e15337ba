"""Import throughput: journal.importing.import_trades against raw DB-API executemany, same run.

    .venv/bin/python bench/import_throughput.py --db sqlite
    .venv/bin/python bench/import_throughput.py --db postgres [--rows 100000] [--repeat 3] [--profile]

Paths compared, each over the same pre-built BrokerTrade objects of one account, in batches
of the size import_trades uses and one transaction per batch (as import_trades commits):

  import       journal.importing.import_trades (multi-row INSERT ... ON CONFLICT DO NOTHING)
  raw          the DB-API driver's own executemany into `bench_raw_trade`, a structural copy
               of journal_trade (same columns, unique constraint, indexes, foreign key), so
               the ratio measures our code path and not a lighter table. New rows: plain
               INSERT; duplicates: INSERT ... ON CONFLICT DO NOTHING.
  bulk_create  Django's Trade.objects.bulk_create(ignore_conflicts=True), for reference only
               (it cannot say how many rows it skipped, which is why import_trades exists).

Every path builds its rows from the BrokerTrade objects inside the timed region, including
the JSON text of `raw`: a driver cannot store a dict, so that work belongs to any import.
Target: import >= 0.5x the raw rate, for all-new rows and for all-duplicate rows, with
exact counts (asserted). The figure is the ratio of medians over --repeat runs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice

import harness

TARGET_RATIO = 0.5
RAW_TABLE = "bench_raw_trade"
SYMBOLS = ("ESZ4", "NQZ4", "AAPL", "MSFT", "CLF5", "GCG5", "SPY", "TSLA")
PRICES = tuple(Decimal(p) for p in ("4512.25", "20110.50", "227.48", "418.16", "68.91", "2651.30", "598.02", "338.74"))
QUANTITIES = tuple(Decimal(q) for q in ("1", "2", "5", "10", "100"))
FEES = Decimal("1.24")
START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def make_trades(n: int) -> Iterator:
    """n distinct fills of one account, lazily; `raw` is shaped like a broker's fill record."""
    from brokers.providers.types import BUY, SELL, BrokerTrade

    for i in range(n):
        k = i % len(SYMBOLS)
        executed_at = START + timedelta(seconds=i, microseconds=i % 1000)
        side = BUY if i % 2 == 0 else SELL
        quantity = QUANTITIES[i % len(QUANTITIES)]
        yield BrokerTrade(
            broker_trade_id=f"F{i:010d}",
            account_external_id="BENCH-1",
            symbol=SYMBOLS[k],
            side=side,
            quantity=quantity,
            price=PRICES[k],
            executed_at=executed_at,
            fees=FEES,
            order_id=f"O{i // 3:010d}",
            raw={
                "id": i,
                "orderId": i // 3,
                "contractId": 3_000_000 + k,
                "timestamp": executed_at.isoformat(),
                "action": "Buy" if side == BUY else "Sell",
                "qty": int(quantity),
                "price": str(PRICES[k]),
                "commission": str(FEES),
            },
        )


def make_account() -> int:
    from django.contrib.auth import get_user_model

    from brokers.models import BrokerAccount, BrokerConnection

    owner = get_user_model().objects.create_user(username="bench", password="bench-password-1")
    connection = BrokerConnection.objects.create(owner=owner, broker_type="demo", label="bench")
    return BrokerAccount.objects.create(connection=connection, external_id="BENCH-1").pk


def create_raw_table() -> None:
    """Copy journal_trade's structure exactly (columns, checks, unique, indexes, foreign key)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT type, sql FROM sqlite_master WHERE tbl_name = 'journal_trade' AND sql IS NOT NULL")
            for kind, sql in cursor.fetchall():
                if kind == "index":
                    sql = sql.replace('CREATE INDEX "', f'CREATE INDEX "{RAW_TABLE}_', 1)
                cursor.execute(sql.replace('"journal_trade"', f'"{RAW_TABLE}"'))
        else:
            cursor.execute(f"CREATE TABLE {RAW_TABLE} (LIKE journal_trade INCLUDING ALL)")
            cursor.execute(
                f"ALTER TABLE {RAW_TABLE} ADD FOREIGN KEY (account_id) REFERENCES brokers_brokeraccount (id) "
                "DEFERRABLE INITIALLY DEFERRED"
            )


def empty_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DELETE FROM journal_trade")
            cursor.execute(f"DELETE FROM {RAW_TABLE}")
        else:
            cursor.execute(f"TRUNCATE journal_trade, {RAW_TABLE}")


def batches(trades: Iterable, size: int) -> Iterator[list]:
    iterator = iter(trades)
    while batch := list(islice(iterator, size)):
        yield batch


def raw_insert(account_id: int, trades: list, *, on_conflict: bool) -> int:
    """The driver's own executemany, one transaction per batch; returns rows inserted."""
    from django.db import connection, transaction
    from django.utils import timezone

    from journal.importing import _COLUMNS, _batch_size

    mark = "?" if connection.vendor == "sqlite" else "%s"
    sql = f"INSERT INTO {RAW_TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join([mark] * len(_COLUMNS))})" + (
        " ON CONFLICT (account_id, broker_trade_id) DO NOTHING" if on_conflict else ""
    )
    connection.ensure_connection()
    dbapi = connection.connection
    now = timezone.now()
    inserted = 0
    for batch in batches(trades, _batch_size()):
        rows = [
            (
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
                t.executed_at,
                json.dumps(dict(t.raw), default=str, separators=(",", ":")),
                now,
            )
            for t in batch
        ]
        with transaction.atomic():
            # psycopg.Cursor is psycopg's default (server-side binding, pipelined executemany);
            # Django's own connection hands out client-side binding cursors.
            cursor = dbapi.cursor() if connection.vendor == "sqlite" else _psycopg_cursor(dbapi)
            cursor.executemany(sql, rows)
            inserted += cursor.rowcount
            cursor.close()
    return inserted


def _psycopg_cursor(dbapi):
    import psycopg

    return psycopg.Cursor(dbapi)


def bulk_create(account_id: int, trades: list) -> None:
    from django.utils import timezone

    from journal.importing import _batch_size
    from journal.models import Trade

    now = timezone.now()
    for batch in batches(trades, _batch_size()):
        Trade.objects.bulk_create(
            [
                Trade(
                    account_id=account_id,
                    broker_trade_id=t.broker_trade_id,
                    order_id=t.order_id,
                    symbol=t.symbol,
                    asset_class=t.asset_class,
                    side=t.side,
                    quantity=t.quantity,
                    price=t.price,
                    fees=t.fees,
                    currency=t.currency,
                    multiplier=t.multiplier,
                    executed_at=t.executed_at,
                    raw=dict(t.raw),
                    imported_at=now,
                )
                for t in batch
            ],
            ignore_conflicts=True,
        )


def trade_count(account_id: int) -> int:
    from journal.models import Trade

    return Trade.objects.filter(account_id=account_id).count()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def one_round(account_id: int, trades: list, raw_first: bool) -> dict[tuple[str, str], float]:
    """Time every path once on empty tables; assert every count. Returns seconds per (case, path)."""
    from journal.importing import import_trades

    n = len(trades)
    seconds = {}

    def import_path():
        seconds["new", "import"], result = timed(lambda: import_trades(account_id, trades))
        assert (result.imported, result.skipped) == (n, 0), result
        seconds["duplicate", "import"], result = timed(lambda: import_trades(account_id, trades))
        assert (result.imported, result.skipped) == (0, n), result

    def raw_path():
        seconds["new", "raw"], inserted = timed(lambda: raw_insert(account_id, trades, on_conflict=False))
        assert inserted == n, inserted
        seconds["duplicate", "raw"], inserted = timed(lambda: raw_insert(account_id, trades, on_conflict=True))
        assert inserted == 0, inserted

    empty_tables()
    # Alternate which path goes first, so that neither always meets the warmer cache.
    for path in (raw_path, import_path) if raw_first else (import_path, raw_path):
        path()
    empty_tables()
    seconds["new", "bulk_create"], _ = timed(lambda: bulk_create(account_id, trades))
    assert trade_count(account_id) == n
    seconds["duplicate", "bulk_create"], _ = timed(lambda: bulk_create(account_id, trades))
    assert trade_count(account_id) == n
    return seconds


def profile_import(account_id: int, trades: list) -> None:
    """cProfile of import_trades, new rows then duplicates: where the time of the import path goes."""
    from journal.importing import import_trades

    empty_tables()
    for case in ("new", "duplicate"):
        profiler = cProfile.Profile()
        profiler.runcall(import_trades, account_id, trades)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        print(f"\n--- cProfile import_trades, {case} rows (sorted by own time) ---")
        print(out.getvalue().split("Ordered by: internal time", 1)[1].strip())


def driver_version(connection) -> str:
    if connection.vendor == "sqlite":
        return f"(SQLite {connection.Database.sqlite_version})"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"(PostgreSQL {cursor.fetchone()[0]}, psycopg {connection.Database.__version__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of import_trades")
    args = parser.parse_args()

    harness.print_machine()
    with harness.django_on(args.db):
        from django.db import connection

        from journal.importing import _batch_size

        account_id = make_account()
        create_raw_table()
        trades = list(make_trades(args.rows))
        rounds = [one_round(account_id, trades, raw_first=i % 2 == 0) for i in range(args.repeat)]
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}

        print(
            f"\n{args.db} {driver_version(connection)}, {args.rows:,} trades, "
            f"batch {_batch_size()}, median of {args.repeat}\n"
        )
        print("| case | path | median s | rows/s | × raw | target | |")
        print("|---|---|---:|---:|---:|---|---|")
        for case in ("new", "duplicate"):
            raw_s = median[case, "raw"]
            for path in ("raw", "import", "bulk_create"):
                s = median[case, path]
                ratio = raw_s / s
                verdict = ("met" if ratio >= TARGET_RATIO else "**missed**") if path == "import" else ""
                target = {"import": f"≥ {TARGET_RATIO}× raw", "bulk_create": "reference"}.get(path, "")
                print(f"| {case} | {path} | {s:.3f} | {args.rows / s:,.0f} | {ratio:.2f} | {target} | {verdict} |")
        if args.profile:
            profile_import(account_id, trades)


if __name__ == "__main__":
    main()
