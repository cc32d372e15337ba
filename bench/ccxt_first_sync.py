"""A first sync of 10,000 trades on one ccxt exchange (OKX) against the loopback fake, under our limiter.

One ccxt_okx connection with one spot account whose history holds --fills fills; the run
goes through `sync.runs.run_inline` (what `manage.py sync_connection` does) with the shipped
limits, so every request books its endpoint's cost in Redis. Measured in the same run:

- requests made, against the fewest that can fetch the history (pages of 100, plus the
  markets, the balance, and the one page that shows nothing older is left);
- wall time, against the time ccxt's own pace needs for the same requests (the sum of
  cost × rateLimit: the floor for a client that keeps to the exchange's pace);
- the limiter's peak rate: the most cost units booked by requests that reached the fake in
  any window of the bucket's length, against ccxt's pace over that window (target ≤ 0.8,
  the shipped margin, and never above 1);
- peak memory: the process' maximum RSS before and after the run (ru_maxrss);
- the trades stored, as a set against the fake's fills (exact, asserted).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time

import harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=10_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    from tests.fakes.okx import PAGE_SIZE, FakeOkx

    class TimedOkx(FakeOkx):
        """The fake, noting when each request arrived."""

        def _answer(self, request):
            with self.lock:
                self.arrivals.append((time.monotonic(), request.path))
            return super()._answer(request)

    harness.print_machine()
    with TimedOkx({"SPOT": args.fills}, days=300) as broker:
        broker.arrivals = []
        os.environ["CCXT_OKX_BASE_URL"] = broker.url
        with harness.django_on(args.db):
            result = measure(broker, args)
    report(result, args, PAGE_SIZE)


def measure(broker, args) -> dict:
    from django.contrib.auth import get_user_model

    from brokers import services
    from brokers.models import SyncLog
    from brokers.providers.ccxt import catalog as ccxt_catalog
    from brokers.providers.ccxt.family import FAMILY
    from journal.models import Trade
    from sync import runs as sync_runs

    owner = get_user_model().objects.create_user("bench-ccxt")
    connection = services.connection_create(
        owner=owner,
        broker_type="ccxt_okx",
        label="OKX",
        environment="live",
        sync_enabled=False,
        credentials=broker.credentials,
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.monotonic()
    sync_runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    wall_s = time.monotonic() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log = SyncLog.objects.filter(connection=connection).latest("started_at")
    stored = set(Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True))
    provider = FAMILY["okx"]
    return {
        "status": log.status,
        "error": log.error_message,
        "imported": log.trades_imported,
        "exact": stored == broker.expected_ids("SPOT") and log.trades_imported == args.fills,
        "wall_s": wall_s,
        "arrivals": list(broker.arrivals),
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rate_limit_ms": provider.rate_limit_ms,
        "window_s": ccxt_catalog.window_s(provider),
    }


# ccxt's costs for the endpoints this run calls (ccxt/okx.py, 4.5.90).
COSTS = {"/api/v5/public/instruments": 1, "/api/v5/account/balance": 2, "/api/v5/trade/fills-history": 2}


def report(r: dict, args, page_size: int) -> None:
    arrivals = r["arrivals"]
    by_path: dict[str, int] = {}
    for _, path in arrivals:
        by_path[path] = by_path.get(path, 0) + 1
    # Markets (spot, future, swap lists), the balance twice (test at login, accounts), pages + the last one.
    fewest = 3 + 2 + math.ceil(args.fills / page_size) + 1
    paced_floor_s = sum(COSTS[path] for _, path in arrivals) * r["rate_limit_ms"] / 1000
    window = r["window_s"]
    peak = 0.0
    for i, (start, _) in enumerate(arrivals):
        booked = sum(COSTS[p] for t, p in arrivals[i:] if t - start < window)
        peak = max(peak, booked)
    allowed = window * 1000 / r["rate_limit_ms"]
    print()
    print(f"status {r['status']} {r['error']}  imported {r['imported']}  trades {'exact' if r['exact'] else 'WRONG'}")
    print(f"requests: {len(arrivals)} ({', '.join(f'{p} {n}' for p, n in sorted(by_path.items()))})")
    print()
    print("| figure | measured | against | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| requests made | {len(arrivals)} | fewest possible {fewest} | {len(arrivals) / fewest:.2f}× | 1× |")
    print(
        f"| wall time | {r['wall_s']:.1f} s | ccxt's pace for those requests {paced_floor_s:.1f} s "
        f"| {r['wall_s'] / paced_floor_s:.2f}× | ≥ 1.25× (80 % of the pace) |"
    )
    print(
        f"| peak cost in any {window:g} s | {peak:g} units | ccxt's pace {allowed:.1f} units "
        f"| {peak / allowed:.2f} | ≤ 0.8 |"
    )
    print(f"| peak RSS | {r['rss_after']:.0f} MiB (before the run {r['rss_before']:.0f} MiB) | | | |")
    if not r["exact"] or r["status"] != "SUCCESS":
        raise SystemExit(1)


if __name__ == "__main__":
    main()
