"""File import: a template CSV through sync.files.file_import against import_trades on the same fills, same run.

    .venv/bin/python bench/file_import.py --db sqlite [--rows 200000] [--repeat 2]
    .venv/bin/python bench/file_import.py --db sqlite --memory [--rows 1000000]

The CSV holds import_throughput.make_trades' fills, one per row with its exec_id (written once
to a temporary file, streamed from disk by the import). Timed, rounds interleaved, tables
emptied between paths:

  import_trades  journal.importing.import_trades over the BrokerTrade generator (the sync's path)
  file           sync.files.file_import of the CSV: decode, parse, account check, import in one
                 transaction (positions_recompute left out here: both paths' callers run it)

Target (issue 23): file >= 0.5x import_trades, exact counts. --memory imports the file once in
this process (positions_recompute left out: it is the sync's, and rebuilds every instrument of a
fresh account from its first fill) and reports RSS every 10 % of rows and the peak.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import harness
from import_memory import peak_rss_mb, rss_mb
from import_throughput import make_account, make_trades

TARGET_RATIO = 0.5
COLUMNS = (
    "account", "executed_at", "symbol", "asset_class", "side", "quantity", "price", "multiplier", "fees", "exec_id",
    "order_id",
)  # fmt: skip


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for t in make_trades(rows):
            out.writerow(
                ("BENCH-1", t.executed_at.isoformat(), t.symbol, "stock", t.side.lower(), t.quantity, t.price,
                 t.multiplier, t.fees, t.broker_trade_id, t.order_id)
            )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()

    harness.print_machine()
    with tempfile.TemporaryDirectory() as folder, harness.django_on(args.db):
        path = Path(folder) / "fills.csv"
        write_csv(path, args.rows)
        print(f"\n{args.rows:,} rows, {path.stat().st_size / 2**20:.0f} MiB of CSV")
        from unittest import mock

        from brokers.models import BrokerAccount
        from journal.importing import import_trades
        from sync import files

        account = BrokerAccount.objects.get(pk=make_account())
        if args.memory:
            return memory(files, account, path, args.rows)
        times: dict[str, list[float]] = {"import_trades": [], "file": []}
        for _ in range(args.repeat):
            empty_tables_and_logs()
            start = time.perf_counter()
            result = import_trades(account.pk, make_trades(args.rows))
            times["import_trades"].append(time.perf_counter() - start)
            assert result.imported == args.rows, result
            empty_tables_and_logs()
            with path.open("rb") as stream, mock.patch.object(files, "positions_recompute"):
                start = time.perf_counter()
                done = files.file_import(account=account, stream=stream, name="fills.csv")
                times["file"].append(time.perf_counter() - start)
            assert (done.imported, done.error) == (args.rows, ""), done
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["import_trades"] / medians["file"]
    print("| path | median s | rows/s |\n|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.1f} | {args.rows / seconds:,.0f} |")
    verdict = "met" if ratio >= TARGET_RATIO else "**missed**"
    print(f"\nfile import speed = {ratio:.2f}x import_trades (target >= {TARGET_RATIO}x): {verdict}")


def empty_tables_and_logs() -> None:
    from brokers.models import SyncLog
    from journal.models import Trade

    Trade.objects.all().delete()
    SyncLog.objects.all().delete()


def memory(files, account, path: Path, rows: int) -> None:
    from unittest import mock

    samples: list[float] = []
    every = max(1, rows // 10)
    real = files._counted

    def counted(row, names, result):
        if getattr(row, "row", 0) % every == 0:
            samples.append(rss_mb())
        return real(row, names, result)

    before = rss_mb()
    with (
        path.open("rb") as stream,
        mock.patch.object(files, "_counted", counted),
        mock.patch.object(files, "positions_recompute"),
    ):
        start = time.perf_counter()
        done = files.file_import(account=account, stream=stream, name="fills.csv")
    seconds = time.perf_counter() - start
    assert done.imported == rows, done
    peak = max(peak_rss_mb(), *samples)
    print(f"file import of {rows:,} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s)")
    print(f"RSS before {before:.0f} MiB, peak {peak:.0f} MiB (+{peak - before:.0f})")
    print(f"RSS at each 10 % of rows: {' / '.join(f'{s:.0f}' for s in samples)} MiB")


if __name__ == "__main__":
    main()
