"""A first sync of an MT5 account through MetaApi (the loopback simulator), under our limiter.

One metatrader connection (operator's token) whose MT5 history holds --fills buys and sells over
two years in three symbols, plus --ledger balance and commission deals; the terminal takes
--connect-s to connect the first time (minutes at MetaApi). The connection is created as the form
does (which adds the account at MetaApi) and synced through `sync.runs.run_inline` with the
shipped limits and a look every --poll-s while the terminal connects. Measured in the same run:

- requests made, against the fewest that can do the job: find + add the account, the account
  once for the run's accounts, deploy, one look once connected, the open positions, the pages of
  1,000 each window needs, one specification per symbol, undeploy. Looks while the terminal connects are counted
  apart: they are the pause's cost (connect time / poll interval), not reading;
- wall time of the reading (from the look that found the terminal connected to the undeploy),
  against the time those requests take at MetaApi's published rate spread evenly (1,000 CPU
  credits a second per user at 50 a call: 20 calls a second; the limit is per 1 s window, so
  a burst of up to 20 within one second is within it), and the whole run with its connect wait;
- the most requests that reached MetaApi in any second (published 20, ours 10), and the 429s
  the simulator answered (it counts credits as MetaApi does);
- the terminal's deployed time (what MetaApi bills) and its state after the run;
- the trades stored, as a set against the simulator's fills (exact, asserted).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from datetime import UTC, datetime, timedelta

import harness

SERVER, LOGIN, PASSWORD = "ICMarketsSC-MT5", "51000042", "bench-investor"
SYMBOLS = ("EURUSD", "XAUUSD+", "US30.cash")
PUBLISHED_CALLS_PER_S = 20
PAGE_SIZE = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=4_000)
    parser.add_argument("--ledger", type=int, default=100)
    parser.add_argument("--connect-s", type=float, default=6.0)
    parser.add_argument("--poll-s", type=float, default=2.0)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    from tests.fakes.metaapi import MetaApiSim, env

    class TimedMetaApi(MetaApiSim):
        """The simulator, noting when each request arrived."""

        def _answer(self, request):
            with self.lock:
                self.arrivals.append((time.monotonic(), request.method, request.path))
            return super()._answer(request)

    harness.print_machine()
    with TimedMetaApi(first_connect_s=args.connect_s) as sim:
        sim.arrivals = []
        mt_account = sim.add_mt_account("mt5", SERVER, LOGIN, PASSWORD)
        now = datetime.now(UTC)
        span = timedelta(days=700)
        fills = {
            sim.add_deal(
                mt_account,
                type=("DEAL_TYPE_BUY", "DEAL_TYPE_SELL")[n % 2],
                symbol=SYMBOLS[n % len(SYMBOLS)],
                at=now - span + span * (n + 0.5) / args.fills,
            )["id"]
            for n in range(args.fills)
        }
        for n in range(args.ledger):
            kind = ("DEAL_TYPE_BALANCE", "DEAL_TYPE_COMMISSION")[n % 2]
            sim.add_deal(mt_account, type=kind, symbol="", volume=0, price=0, at=now - span * (n + 0.5) / args.ledger)
        os.environ.update(env(sim), METAAPI_CONNECT_POLL_S=str(args.poll_s))
        with harness.django_on(args.db):
            result = measure(sim, fills)
    report(result, args)


def measure(sim, fills: set[str]) -> dict:
    from django.contrib.auth import get_user_model

    from brokers import services
    from brokers.models import SyncLog
    from journal.models import Trade
    from sync import runs as sync_runs

    owner = get_user_model().objects.create_user("bench-metaapi")
    started = time.monotonic()
    connection = services.connection_create(
        owner=owner,
        broker_type="metatrader",
        label="IC Markets MT5",
        sync_enabled=False,
        credentials={"platform": "mt5", "server": SERVER, "login": LOGIN, "investor_password": PASSWORD},
    )
    provisioned_s = time.monotonic() - started
    started = time.monotonic()
    sync_runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    run_s = time.monotonic() - started
    log = SyncLog.objects.filter(connection=connection).latest("started_at")
    stored = set(Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True))
    [account] = sim.provisioned()
    return {
        "status": log.status,
        "error": log.error_message,
        "imported": log.trades_imported,
        "exact": stored == fills and log.trades_imported == len(fills),
        "provisioned_s": provisioned_s,
        "run_s": run_s,
        "arrivals": list(sim.arrivals),
        "throttled": sim.throttled,
        "deployed_s": sum(sim.deployed_s.values()),
        "state": account["state"],
        "account_id": account["_id"],
        "deals_per_window": _deals_per_window(sim),
    }


def _deals_per_window(sim) -> list[int]:
    from brokers.providers.metaapi import WINDOW, MetaTraderProvider

    until = datetime.now(UTC)
    start = until - MetaTraderProvider.max_history
    times = [datetime.fromisoformat(d["time"].replace("Z", "+00:00")) for d in next(iter(sim.deals.values()))]
    counts = []
    while start < until:
        end = min(start + WINDOW, until)
        counts.append(sum(1 for t in times if start <= t < end))
        start = end
    return counts


def report(r: dict, args) -> None:
    arrivals = r["arrivals"]
    account = f"/users/current/accounts/{r['account_id']}"
    by_kind: dict[str, int] = {}
    for _, method, path in arrivals:
        kind = f"{method} {path.replace(r['account_id'], '{id}')}"
        kind = kind.split("/history-deals/")[0] + "/history-deals/…" if "/history-deals/" in kind else kind
        kind = kind.split("/symbols/")[0] + "/symbols/…/specification" if "/symbols/" in kind else kind
        by_kind[kind] = by_kind.get(kind, 0) + 1
    pages = sum(n // PAGE_SIZE + 1 for n in r["deals_per_window"])
    fewest = 2 + 1 + 1 + 1 + 1 + pages + len(SYMBOLS) + 1
    looks = [t for t, method, path in arrivals if method == "GET" and path == account]
    # Looks beyond get_accounts' one and the one that found the terminal connected: the pause's cost.
    waiting_looks = len(looks) - 2
    made = len(arrivals) - waiting_looks
    connected_at = looks[-1]
    undeployed_at = next(t for t, method, path in arrivals if path == f"{account}/undeploy")
    reading = [a for a in arrivals if connected_at <= a[0] <= undeployed_at]
    read_s = undeployed_at - connected_at
    floor_s = len(reading) / PUBLISHED_CALLS_PER_S
    times = sorted(t for t, _, _ in arrivals)
    peak = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    print()
    print(f"status {r['status']} {r['error']}  imported {r['imported']}  trades {'exact' if r['exact'] else 'WRONG'}")
    print(f"requests: {len(arrivals)} ({', '.join(f'{k} {n}' for k, n in sorted(by_kind.items()))})")
    print(f"deals per window: {r['deals_per_window']}  ({args.fills} fills + {args.ledger} ledger deals)")
    print()
    print("| figure | measured | against | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| requests made (without waiting looks) | {made} | fewest possible {fewest} | {made / fewest:.2f}× | 1× |")
    expected_looks = math.ceil(args.connect_s / args.poll_s)
    print(
        f"| looks while the terminal connected | {waiting_looks} |"
        f" connect {args.connect_s:g} s / poll {args.poll_s:g} s = {expected_looks} | | |"
    )
    print(
        f"| reading wall time ({len(reading)} requests) | {read_s:.2f} s | at the published 20 a second"
        f" {floor_s:.2f} s | {read_s / floor_s if floor_s else 0:.2f}× | limit per 1 s window (below) |"
    )
    print(f"| whole run, with the connect wait | {r['run_s']:.1f} s | connect {args.connect_s:g} s | | |")
    print(f"| provisioning at save (find + add) | {r['provisioned_s']:.2f} s | | | |")
    print(f"| most requests in any 1 s | {peak} | published {PUBLISHED_CALLS_PER_S}, ours 10 | | ≤ 10 |")
    print(f"| 429 answers | {r['throttled']} | | | 0 |")
    print(f"| terminal deployed (billed) | {r['deployed_s']:.1f} s, then {r['state']} | | | UNDEPLOYED |")


if __name__ == "__main__":
    main()
