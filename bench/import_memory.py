"""Import memory: peak RSS while import_trades takes 1,000,000 trades from a lazy generator.

    .venv/bin/python bench/import_memory.py --db sqlite [--rows 1000000]

A sync streams a broker's history into import_trades; a long history must not have to fit
in memory. The trades come from a generator (never a list), so the process holds only what
import_trades holds. Its own process, so the peak belongs to this import alone.

Measured: peak RSS (getrusage ru_maxrss, or a higher sample) against the RSS before the import (Django set up,
migrated), and RSS every 10 % of the rows, which must stay flat if memory is bounded by the
batch and not by the history. Target: peak < 300 MB. Counts are asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Iterable, Iterator

import harness
from import_throughput import make_account, make_trades

TARGET_MB = 300
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_MB


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def sampled(trades: Iterable, every: int, samples: list[float]) -> Iterator:
    """Pass the trades through, noting the RSS each `every` trades (as import_trades pulls them)."""
    for i, trade in enumerate(trades, 1):
        yield trade
        if i % every == 0:
            samples.append(rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()

    harness.print_machine()
    with harness.django_on(args.db):
        from journal.importing import import_trades

        account_id = make_account()
        before = rss_mb()
        samples: list[float] = []
        start = time.perf_counter()
        result = import_trades(account_id, sampled(make_trades(args.rows), max(1, args.rows // 10), samples))
        seconds = time.perf_counter() - start
        assert (result.imported, result.skipped) == (args.rows, 0), result
        # The kernel updates ru_maxrss lazily; a sample can read a page above it.
        peak = max(peak_rss_mb(), *samples)

    print(
        f"\n{args.db}, {args.rows:,} trades from a generator in {seconds:.1f} s "
        f"({args.rows / seconds:,.0f} rows/s, generation included)\n"
    )
    print("| measure | value | target | |")
    print("|---|---:|---|---|")
    print(f"| RSS before the import | {before:.0f} MiB | | |")
    verdict = "met" if peak < TARGET_MB else "**missed**"
    print(f"| peak RSS (ru_maxrss) | {peak:.0f} MiB | < {TARGET_MB} MiB | {verdict} |")
    print(f"| peak − before | {peak - before:.0f} MiB | | |")
    print(f"| RSS at each 10 % of rows | {' / '.join(f'{s:.0f}' for s in samples)} MiB | flat | |")


if __name__ == "__main__":
    main()
