"""A first sync of one ProjectX trader (two funded accounts and an ended evaluation) against the loopback simulator.

The run goes through `sync.runs.run_inline` (what `manage.py sync_connection` does) with the
shipped limits (180 of ProjectX's published 200 requests per 60 s per user), so every
request books its slot in Redis and a first sync that needs more pauses as production would.
Measured in the same run:

- requests made, against the fewest with our day-long windows (one login, one account
  search, one open-positions read and one trade search per day of max_history per account,
  one lookup per contract), and against the fewest the API could allow if its trade search
  has no cap (one per account);
- wall time, against the documented rate's floor for those requests: a client allowed 200
  in any 60 s needs (ceil(requests / 200) - 1) × 60 s at least;
- the most requests that reached the simulator in any 60 s (limit respected: ≤ 200, and our
  target ≤ 180), and whether the simulator ever answered 429;
- the trades stored, as a set against the simulator's fills (exact, asserted).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from datetime import UTC, datetime, timedelta

import harness

CONTRACTS = ("CON.F.US.EP.Z26", "CON.F.US.ENQ.Z26", "CON.F.US.MNQ.Z26")
ACCOUNTS = ((536, "50K funded", True), (537, "100K funded", True), (412, "150K evaluation (failed)", False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=3_000, help="fills per account, spread over 80 days")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    from tests.fakes.projectx import ProjectXSim

    class TimedProjectX(ProjectXSim):
        """The simulator, noting when each request arrived."""

        def _answer(self, request):
            with self.lock:
                self.arrivals.append((time.monotonic(), request.path))
            return super()._answer(request)

    harness.print_machine()
    with TimedProjectX() as sim:
        sim.arrivals = []
        sim.add_user("bench")
        start = datetime.now(UTC) - timedelta(days=80)
        for account_id, name, active in ACCOUNTS:
            sim.add_account("bench", account_id, name, active=active)
            for n, contract in enumerate(CONTRACTS):
                share = args.fills // len(CONTRACTS)
                step = timedelta(days=80) / share
                sim.add_fills(account_id, share, start=start + timedelta(minutes=n), step=step, contract=contract)
        os.environ["PROJECTX_BASE_URL"] = sim.url
        with harness.django_on(args.db):
            result = measure(sim)
    report(result, sim)


def measure(sim) -> dict:
    from django.contrib.auth import get_user_model

    from brokers import services
    from brokers.models import SyncLog
    from brokers.providers.projectx import ProjectXProvider
    from journal.models import Trade
    from sync import runs as sync_runs
    from tests.fakes.projectx import API_KEY

    owner = get_user_model().objects.create_user("bench-projectx")
    connection = services.connection_create(
        owner=owner,
        broker_type="projectx",
        label="TopstepX",
        sync_enabled=False,
        credentials={"firm": "topstep", "username": "bench", "api_key": API_KEY},
    )
    started = time.monotonic()
    sync_runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    wall_s = time.monotonic() - started
    log = SyncLog.objects.filter(connection=connection).latest("started_at")
    stored = set(Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True))
    expected = set().union(*(sim.expected_ids(account_id) for account_id, _, _ in ACCOUNTS))
    return {
        "status": log.status,
        "error": log.error_message,
        "imported": log.trades_imported,
        "exact": stored == expected and log.trades_imported == len(expected),
        "wall_s": wall_s,
        "days": ProjectXProvider.max_history / timedelta(days=1),
    }


def report(r: dict, sim) -> None:
    arrivals = list(sim.arrivals)
    by_path: dict[str, int] = {}
    for _, path in arrivals:
        by_path[path] = by_path.get(path, 0) + 1
    windows = math.ceil(r["days"])
    fewest_windowed = 1 + 1 + len(ACCOUNTS) * (1 + windows) + len(CONTRACTS)
    fewest_uncapped = 1 + 1 + len(ACCOUNTS) * 2 + len(CONTRACTS)
    floor_s = (math.ceil(len(arrivals) / 200) - 1) * 60
    peak = max(sum(1 for t, _ in arrivals[i:] if t - start < 60) for i, (start, _) in enumerate(arrivals))
    print()
    print(f"status {r['status']} {r['error']}  imported {r['imported']}  trades {'exact' if r['exact'] else 'WRONG'}")
    print(
        f"requests: {len(arrivals)} ({', '.join(f'{p} {n}' for p, n in sorted(by_path.items()))}); "
        f"429s {sim.refused_429}"
    )
    print()
    print("| figure | measured | against | ratio |")
    print("|---|---|---|---|")
    print(
        f"| requests made | {len(arrivals)} | fewest with day windows {fewest_windowed}; "
        f"fewest if the search has no cap {fewest_uncapped} | {len(arrivals) / fewest_windowed:.2f}× / "
        f"{len(arrivals) / fewest_uncapped:.1f}× |"
    )
    print(f"| wall time | {r['wall_s']:.1f} s | the documented rate's floor {floor_s} s | |")
    print(f"| most requests in any 60 s | {peak} | published 200, ours 180 | {peak / 200:.2f} |")
    if not r["exact"] or r["status"] != "SUCCESS" or sim.refused_429:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
