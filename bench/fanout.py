"""Fan-out per account: one Tradovate connection with N accounts against a slow loopback Tradovate.

Three ways to sync, interleaved round by round, each on a fresh connection (its own Tradovate
user, accounts and fills, so every run imports everything and the counts can be exact):

- fanout-N — `sync.tasks.sync_connection` sent to a real prefork worker pool; the run fans out
  one `sync_account` task per account in a chord;
- fanout-1 — the same with a one-account connection: the floor a parallel run can approach;
- serial-N — `sync.runs.run_inline` in this process, what `manage.py sync_connection` does:
  the same N accounts one after another.

Wall time = from just before the task is sent (or run_sync called) to the SyncLog's
finished_at. Every broker call waits --delay seconds at the fake server. The Tradovate rate
limiter stays in the path (every call books its slots in Redis); its buckets are emptied
before each run, because a 20-account run books 122 of the 150 calls the `requests` bucket
allows per minute and settings offer no environment override (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics

import harness
from fake_tradovate import FakeTradovate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--fills", type=int, default=5, help="fills per account (N × fills ≤ 100 keeps one batch)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds every broker call waits")
    parser.add_argument("--concurrency", type=int, default=24, help="worker pool processes (≥ accounts + 2)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    cases = ("fanout-N", "fanout-1", "serial-N")
    size = {"fanout-N": args.accounts, "fanout-1": 1, "serial-N": args.accounts}
    # One Tradovate user per run (warm-up included), each with its own accounts and fills.
    runs = [("warmup", "fanout-N")] + [(f"r{r}-{case}", case) for r in range(args.repeat) for case in cases]
    users = {name: size[case] for name, case in runs}

    harness.print_machine()
    with FakeTradovate(users, args.fills, args.delay) as broker:
        os.environ["TRADOVATE_BASE_URL"] = broker.url
        with (
            harness.django_on(args.db),
            harness.log_dir("fanout") as logs,
            harness.celery_worker(logs / "worker.log", args.concurrency),
        ):
            results = measure(broker, runs)
    report(results, args)


def new_connection(owner, user: str):
    from brokers import services

    # Auto-sync off: connection_create would otherwise queue a sync of its own on commit.
    return services.connection_create(
        owner=owner,
        broker_type="tradovate",
        label=user,
        environment="demo",
        sync_enabled=False,
        credentials={
            "username": user,
            "password": "pw",
            "app_id": "TradeJournal",
            "app_version": "1.0",
            "cid": "4321",
            "sec": "sec",
        },
    )


def measure(broker: FakeTradovate, runs) -> list[dict]:
    import redis
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from brokers.models import SyncLog
    from journal.models import Trade
    from sync import runs as sync_runs
    from sync import tasks

    owner = get_user_model().objects.create_user("bench-fanout")
    limiter = redis.Redis.from_url(settings.REDIS_URL)
    buckets = [f"rl:tradovate:{b}" for b in ("auth", "requests", "hourly")]
    results = []
    for user, case in runs:
        connection = new_connection(owner, user)
        limiter.delete(*buckets)
        calls_before = sum(broker.calls.values())
        started = timezone.now()
        if case == "serial-N":
            sync_runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
        else:
            tasks.sync_connection.apply_async(kwargs={"connection_id": connection.pk, "trigger": "manual"})
        finished = SyncLog.objects.filter(connection=connection, finished_at__isnull=False)
        log = harness.wait_for(finished.first, timeout=600, what=f"the run of {user}")
        booked = limiter.zcard("rl:tradovate:requests")
        expected = broker.expected_ids(user)
        stored = {}
        for external_id, trade_id in Trade.objects.filter(account__connection=connection).values_list(
            "account__external_id", "broker_trade_id"
        ):
            stored.setdefault(external_id, []).append(trade_id)
        exact = (
            log.status == SyncLog.Status.SUCCESS
            and log.trades_imported == sum(map(len, expected.values()))
            and log.trades_skipped == 0
            and all(sorted(stored.get(a, [])) == sorted(ids) for a, ids in expected.items())
        )
        results.append(
            {
                "run": user,
                "case": case,
                "accounts": len(expected),
                "status": log.status,
                "wall_s": (log.finished_at - started).total_seconds(),
                "queue_s": (log.started_at - started).total_seconds(),
                "imported": log.trades_imported,
                "skipped": log.trades_skipped,
                "exact": exact,
                "calls": sum(broker.calls.values()) - calls_before,
                "booked": booked,
            }
        )
        r = results[-1]
        print(
            f"{r['run']:<14} {r['status']:<8} wall {r['wall_s']:6.2f} s (queued {r['queue_s']:.2f} s)  "
            f"imported {r['imported']} skipped {r['skipped']}  broker calls {r['calls']}  "
            f"slots in the limiter window {r['booked']}  counts {'exact' if exact else 'WRONG'}",
            flush=True,
        )
    return results


def report(results: list[dict], args) -> None:
    measured = [r for r in results if r["run"] != "warmup"]
    median = {
        case: statistics.median(r["wall_s"] for r in measured if r["case"] == case)
        for case in ("fanout-N", "fanout-1", "serial-N")
    }
    n = args.accounts
    print()
    print(
        f"median wall time over {args.repeat} rounds ({n} accounts, {args.fills} fills each, "
        f"{args.delay} s per broker call, {args.concurrency} worker processes, {args.db}):"
    )
    for case, seconds in median.items():
        print(f"  {case.replace('N', str(n)):<12} {seconds:7.2f} s")
    ratio_one = median["fanout-N"] / median["fanout-1"]
    ratio_serial = median["fanout-N"] / median["serial-N"]
    print(f"  fanout-{n} / fanout-1 = {ratio_one:.2f}x  (target < 2x: {'met' if ratio_one < 2 else 'MISSED'})")
    print(f"  fanout-{n} / serial-{n} = {ratio_serial:.3f}x  (speed-up {1 / ratio_serial:.1f}x)")
    many, one = ([r["wall_s"] for r in measured if r["case"] == case] for case in ("fanout-N", "fanout-1"))
    print("  per-round ratios N/1: " + ", ".join(f"{a / b:.2f}" for a, b in zip(many, one, strict=True)))
    wrong = [r["run"] for r in results if not r["exact"]]
    print(f"  trade counts: {f'WRONG in {wrong}' if wrong else 'exact in every run'}")
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
