"""End to end: many demo connections synced by a real worker pool, then every trade checked.

--connections demo connections (two accounts each) are synced --rounds times: each round sends
one `sync.tasks.sync_connection` per connection at once (as beat does when many schedules fall
due together) to a real prefork worker pool of --concurrency processes, and waits until every
run's SyncLog is closed. Each run is the whole product path: lock, session, accounts, one
`sync_account` task per account in a chord, demo broker, `import_trades`, `finish_sync`.

Figures: syncs per minute per round (runs ÷ time from the first send to the last
finished_at), run durations, and the pool's CPU use (cores busy out of `nproc`), which tells
whether the pool or the database is the limit.

Check: the demo broker is deterministic, so after the last round each account's expected fills
are recomputed with the provider itself over [first cursor − sync_overlap, final cursor] and
compared as sets with the journal's rows; the SyncLogs' imported counts must add up to the rows.

Accounts start with a cursor --backfill-min minutes back (rather than the provider's two days of
first-sync history) so that a round stays a sync of minutes of fills, not a two-day backfill.
"""

from __future__ import annotations

import argparse
import os
import uuid
from datetime import timedelta

import harness
import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backfill-min", type=int, default=20)
    parser.add_argument("--fill-every", type=int, default=30, help="DEMO_FILL_EVERY_S: a fill slot per account")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    harness.print_machine()
    os.environ["DEMO_FILL_EVERY_S"] = str(args.fill_every)  # the worker and this process must agree
    with harness.django_on(args.db):
        connections, first_cursor = setup(args)
        with (
            harness.log_dir("end-to-end") as logs,
            harness.celery_worker(logs / "worker.log", args.concurrency) as worker,
        ):
            rounds = [run_round(r, connections, worker) for r in range(args.rounds)]
        check = verify(connections, first_cursor)
    report(rounds, check, args)


def setup(args):
    """Create the connections and their accounts; returns (connection ids, the accounts' first cursor)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from brokers import services
    from brokers.models import BrokerAccount
    from brokers.providers.demo import ACCOUNTS

    owner = get_user_model().objects.create_user("bench-e2e")
    # Auto-sync off: connection_create would otherwise queue a first sync of its own on commit.
    ids = [
        services.connection_create(
            owner=owner,
            broker_type="demo",
            label=f"demo {i}",
            sync_enabled=False,
            credentials={"api_key": f"key-{i}", "scenario": "normal"},
        ).pk
        for i in range(args.connections)
    ]
    cursor = timezone.now() - timedelta(minutes=args.backfill_min)
    BrokerAccount.objects.bulk_create(
        BrokerAccount(connection_id=pk, external_id=ext, name=name, currency="USD", sync_cursor=cursor)
        for pk in ids
        for ext, (name, _) in ACCOUNTS.items()
    )
    return ids, cursor


def pool_cpu(worker) -> float:
    """CPU seconds used so far by the worker's main process and its pool children."""
    processes = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def run_round(number: int, connections: list[int], worker) -> dict:
    from django.utils import timezone

    from brokers.models import SyncLog
    from sync import tasks

    task_ids = [str(uuid.uuid4()) for _ in connections]
    cpu_before = pool_cpu(worker)
    started = timezone.now()
    for pk, task_id in zip(connections, task_ids, strict=True):
        tasks.sync_connection.apply_async(kwargs={"connection_id": pk, "trigger": "scheduled"}, task_id=task_id)
    done = SyncLog.objects.filter(task_id__in=task_ids, finished_at__isnull=False)
    harness.wait_for(lambda: done.count() == len(task_ids), timeout=1800, what=f"round {number}'s runs", interval=0.5)
    cpu = pool_cpu(worker) - cpu_before
    logs = list(
        done.values(
            "status", "started_at", "finished_at", "duration_ms", "trades_imported", "trades_skipped", "attempt"
        )
    )
    wall = (max(log["finished_at"] for log in logs) - started).total_seconds()
    statuses: dict[str, int] = {}
    for log in logs:
        statuses[log["status"]] = statuses.get(log["status"], 0) + 1
    durations = [log["duration_ms"] / 1000 for log in logs]
    result = {
        "round": number,
        "runs": len(logs),
        "wall_s": wall,
        "per_min": len(logs) / wall * 60,
        "statuses": statuses,
        "retried": sum(1 for log in logs if log["attempt"] > 1),
        "imported": sum(log["trades_imported"] for log in logs),
        "skipped": sum(log["trades_skipped"] for log in logs),
        "p50_s": harness.percentile(durations, 50),
        "p95_s": harness.percentile(durations, 95),
        "max_s": max(durations),
        "cores": cpu / wall,
    }
    print(
        f"round {number}: {result['runs']} runs in {wall:.1f} s = {result['per_min']:.0f} syncs/min; "
        f"{statuses}, retried {result['retried']}; imported {result['imported']}, skipped {result['skipped']}; "
        f"run duration p50 {result['p50_s']:.2f} s p95 {result['p95_s']:.2f} s max {result['max_s']:.2f} s; "
        f"pool CPU {result['cores']:.2f} cores",
        flush=True,
    )
    return result


def verify(connections: list[int], first_cursor) -> dict:
    """Recompute each account's fills with the demo provider and compare them with the journal."""
    from django.db.models import Sum

    from brokers.models import BrokerAccount, SyncLog
    from brokers.providers.registry import get_broker_provider
    from brokers.providers.types import AuthResult, BrokerAccountInfo
    from journal.models import Trade

    provider = get_broker_provider("demo", "")
    auth = AuthResult(token="bench", expires_at=None, extra={"scenario": "normal"})
    stored: dict[int, list[str]] = {}
    for account_id, trade_id in Trade.objects.values_list("account_id", "broker_trade_id"):
        stored.setdefault(account_id, []).append(trade_id)
    wrong, expected_total = [], 0
    accounts = BrokerAccount.objects.filter(connection_id__in=connections)
    # Every account started from the same cursor (setup); its first run fetched from the overlap before it.
    start = first_cursor - provider.sync_overlap
    for account in accounts:
        info = BrokerAccountInfo(external_id=account.external_id, name=account.name, currency="USD")
        expected = {t.broker_trade_id for t in provider.get_trades(auth, info, start, account.sync_cursor)}
        expected_total += len(expected)
        rows = stored.get(account.pk, [])
        if len(rows) != len(set(rows)) or set(rows) != expected:
            wrong.append(account.pk)
    rows_total = sum(map(len, stored.values()))
    imported = SyncLog.objects.aggregate(n=Sum("trades_imported"))["n"] or 0
    return {
        "accounts": accounts.count(),
        "wrong": wrong,
        "rows": rows_total,
        "expected": expected_total,
        "imported": imported,
    }


def report(rounds: list[dict], check: dict, args) -> None:
    print()
    print(
        f"{args.connections} demo connections, {args.concurrency} worker processes, {args.db}, "
        f"fill slot {args.fill_every} s, cursors start {args.backfill_min} min back"
    )
    for r in rounds:
        print(
            f"  round {r['round']}: {r['per_min']:.0f} syncs/min ({r['runs']} runs, {r['wall_s']:.1f} s, "
            f"{r['cores']:.2f} of {harness.machine()['nproc']} cores busy in the pool)"
        )
    ok = not check["wrong"] and check["rows"] == check["expected"] == check["imported"]
    print(
        f"  trades: {check['rows']} rows, {check['expected']} expected from the provider, "
        f"{check['imported']} counted imported by SyncLogs; accounts wrong: {len(check['wrong'])} "
        f"of {check['accounts']} -> {'no trade lost or doubled' if ok else 'MISMATCH'}"
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
