"""Syncs that wait on brokers: the old path (prefork, a chord per run) against the new (threads, the lean run).

Alpaca connections (one account each) against the loopback Alpaca of tests/fakes/alpaca.py, every
answer held --latency seconds. Each path gets its own connections and its own real worker, in the
same run, on the same database and Redis: round 1 is every connection's first sync, then one new
fill per connection is published and round 2 is the incremental sync that is measured (all sent
at once; the worker's pool decides how many run together). Figures: syncs/s, worker CPU per sync
(process and children, psutil), SQL statements per incremental sync (CaptureQueriesContext on one
eager run of each path), RSS per 100 concurrent syncs, run duration p50/p99, lost/doubled fill by
fill, and what 100,000 connections every 15 minutes (111 syncs/s) would need at these figures.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import harness
import psutil


def tree(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def cpu_s(process: psutil.Process) -> float:
    total = 0.0
    for p in tree(process):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_mib(process: psutil.Process) -> float:
    total = 0
    for p in tree(process):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def make_connections(owner, prefix: str, count: int, fills: int):
    from brokers import services

    keys = [f"{prefix}{i:05d}" for i in range(count)]
    connections = [
        services.connection_create(
            owner=owner,
            broker_type="alpaca",
            environment="paper",
            label=key,
            credentials={"key_id": key, "secret_key": f"secret-{key}"},
            sync_enabled=False,
        )
        for key in keys
    ]
    return keys, connections


def run_round(worker, connections, concurrency: int, deadline_s: float) -> dict:
    """Send one sync per connection at once; wait for every run to close; the worker's figures over the round."""
    from django.utils import timezone

    from brokers.models import SyncLog
    from sync.tasks import sync_connection

    ids = [c.pk for c in connections]
    process = psutil.Process(worker.pid)
    began = timezone.now()
    cpu_before = cpu_s(process)
    started = time.monotonic()
    for pk in ids:
        sync_connection.apply_async(kwargs={"connection_id": pk})
    logs = SyncLog.objects.filter(connection_id__in=ids, started_at__gte=began)
    peak_rss, peak_running, rss_at_peak = 0.0, 0, 0.0
    while time.monotonic() - started < deadline_s:
        rss = rss_mib(process)
        running = logs.filter(status=SyncLog.Status.RUNNING).count()
        peak_rss = max(peak_rss, rss)
        if running > peak_running:
            peak_running, rss_at_peak = running, rss
        if logs.exclude(status=SyncLog.Status.RUNNING).count() == len(ids):
            break
        time.sleep(0.5)
    else:
        raise SystemExit("the round did not finish in time")
    cpu = cpu_s(process) - cpu_before
    closed = list(logs.values("connection_id", "status", "duration_ms", "finished_at", "error_message"))
    wall = (max(r["finished_at"] for r in closed) - began).total_seconds()
    durations = [r["duration_ms"] / 1000 for r in closed]
    return {
        "syncs": len(closed),
        "statuses": sorted({r["status"] for r in closed}),
        # Why a run did not succeed, with how many runs said it: a figure with failures is no figure.
        "errors": collections.Counter(r["error_message"] for r in closed if r["status"] != SyncLog.Status.SUCCESS),
        "runs_per_connection": max(sum(1 for r in closed if r["connection_id"] == pk) for pk in ids[:50]),
        "wall_s": wall,
        "syncs_per_s": len(closed) / wall,
        "cpu_ms_per_sync": cpu / len(closed) * 1000,
        "cores": cpu / wall,
        "p50_s": harness.percentile(durations, 50),
        "p99_s": harness.percentile(durations, 99),
        "peak_rss_mib": peak_rss,
        "peak_running": peak_running,
        # Syncs really running at once: open runs, but no more than the pool runs (a chord's open
        # runs include those whose account tasks wait in the queue).
        "rss_per_100_mib": rss_at_peak / max(1, min(peak_running, concurrency)) * 100,
    }


def sustained(worker, broker, keys, connections, rate: float, seconds: float) -> dict:
    """Syncs sent at `rate` a second for `seconds`, round the connections, each after one new fill of its
    own; the worker's figures over the time it took to close them all."""
    from django.utils import timezone

    from brokers.models import SyncLog
    from sync.tasks import sync_connection

    process = psutil.Process(worker.pid)
    began = timezone.now()
    cpu_before = cpu_s(process)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        for _ in range(int(elapsed * rate) - sent):
            i = sent % len(connections)
            broker.publish(keys[i], 1)
            sync_connection.apply_async(kwargs={"connection_id": connections[i].pk})
            sent += 1
        time.sleep(0.01)
    logs = SyncLog.objects.filter(connection_id__in=[c.pk for c in connections], started_at__gte=began)
    harness.wait_for(lambda: logs.exclude(status=SyncLog.Status.RUNNING).count() >= sent, 900, "the sustained runs")
    cpu = cpu_s(process) - cpu_before
    closed = list(logs.values("status", "duration_ms", "finished_at", "error_message"))
    wall = (max(r["finished_at"] for r in closed) - began).total_seconds()
    durations = [r["duration_ms"] / 1000 for r in closed]
    return {
        "asked_per_s": rate,
        "syncs": len(closed),
        "syncs_per_s": len(closed) / wall,
        "behind_s": wall - seconds,
        "cpu_ms_per_sync": cpu / len(closed) * 1000,
        "cores": cpu / wall,
        "p50_s": harness.percentile(durations, 50),
        "p99_s": harness.percentile(durations, 99),
        "skipped": sum(1 for r in closed if r["status"] == SyncLog.Status.SKIPPED),
        "errors": collections.Counter(
            r["error_message"] for r in closed if r["status"] not in (SyncLog.Status.SUCCESS, SyncLog.Status.SKIPPED)
        ),
    }


def statements_per_sync(connection, accounts_in_task: int, broker_url: str) -> int:
    """SQL statements of one incremental sync of `connection`, run eagerly here with the path's setting."""
    from django.conf import settings
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from config.celery_app import app
    from sync.tasks import sync_connection

    settings.SYNC_ACCOUNTS_IN_TASK, kept = accounts_in_task, settings.SYNC_ACCOUNTS_IN_TASK
    settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "alpaca": broker_url}
    app.conf.task_always_eager = True
    try:
        with CaptureQueriesContext(db) as queries:
            sync_connection.apply_async(kwargs={"connection_id": connection.pk}).get()
    finally:
        app.conf.task_always_eager = False
        settings.SYNC_ACCOUNTS_IN_TASK = kept
    return len(queries)


def check_fills(broker, keys, connections) -> tuple[int, int]:
    """(lost, doubled) over every fill the loopback broker holds for these connections."""
    from journal.models import Trade

    lost = doubled = 0
    for key, connection in zip(keys, connections, strict=True):
        stored = list(Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True))
        lost += len(broker.ids(key) - set(stored))
        doubled += len(stored) - len(set(stored))
    return lost, doubled


PATHS = {
    # name: (pool, concurrency, accounts synced in the run's own task; 0 = always a chord)
    "old: prefork, chord": ("prefork", 6, 0),
    "new: threads, lean run": ("threads", 200, 4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000, help="connections of the new path")
    parser.add_argument("--old-connections", type=int, default=300, help="connections of the old path")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds every broker answer waits")
    parser.add_argument("--threads", type=int, default=200, help="concurrency of the threads worker")
    parser.add_argument("--fills", type=int, default=5)
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--sustain-s", type=float, default=0, help="then syncs at --rate a second for this long")
    parser.add_argument("--rate", type=float, default=60, help="syncs sent a second while sustained")
    args = parser.parse_args()
    PATHS["new: threads, lean run"] = ("threads", args.threads, 4)
    harness.print_machine()
    print(f"latency {args.latency} s per broker answer, db {args.db}")
    with harness.django_on(args.db), harness.log_dir("io-pool") as logs:
        from django.contrib.auth import get_user_model

        from tests.fakes.alpaca import ScriptedAlpaca

        owner = get_user_model().objects.create_user(username="bench", password="bench-password-1")
        sizes = {"old: prefork, chord": args.old_connections, "new: threads, lean run": args.connections}
        prefixes = {"old: prefork, chord": "OLD", "new: threads, lean run": "NEW"}
        all_keys = [f"{prefixes[n]}{i:05d}" for n in PATHS for i in range(sizes[n])]
        with ScriptedAlpaca(dict.fromkeys(all_keys, args.fills)) as broker:
            broker.server.delay_s = args.latency
            results = {}
            for name, (pool, concurrency, in_task) in PATHS.items():
                made = time.monotonic()
                keys, connections = make_connections(owner, prefixes[name], sizes[name], args.fills)
                print(f"{name}: {len(connections)} connections made in {time.monotonic() - made:.0f} s", flush=True)
                env = {"ALPACA_BASE_URL": broker.url, "SYNC_ACCOUNTS_IN_TASK": str(in_task)}
                with harness.celery_worker(Path(logs) / f"{pool}.log", concurrency, pool=pool, **env) as worker:
                    first = run_round(worker, connections, concurrency, 900)
                    print(f"  round 1 (first syncs): {first['syncs_per_s']:.1f} syncs/s", flush=True)
                    for key in keys:
                        broker.publish(key, 1)
                    second = run_round(worker, connections, concurrency, 900)
                    if args.sustain_s and pool == "threads":
                        held = sustained(worker, broker, keys, connections, args.rate, args.sustain_s)
                        print(f"  sustained: {held}", flush=True)
                        # A run skipped while another of its connection's ran leaves a fill for the next.
                        run_round(worker, connections, concurrency, 900)
                lost, doubled = check_fills(broker, keys, connections)
                for key in keys:
                    broker.publish(key, 1)
                second["sql"] = statements_per_sync(connections[0], in_task, broker.url)
                second["lost"], second["doubled"] = lost, doubled
                # Measured throughput per OS process (prefork: each child; threads: the one process).
                per_process = second["syncs_per_s"] / (concurrency if pool == "prefork" else 1)
                second["workers_for_111"] = 111 / per_process
                second["cores_for_111"] = 111 * second["cpu_ms_per_sync"] / 1000
                results[name] = second
                print(f"  round 2 (incremental): {second}", flush=True)
    print()
    print(
        "| path | syncs/s | CPU per sync | SQL per sync | RSS per 100 running | p50 / p99 | lost / doubled "
        "| statuses | for 111 syncs/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} ({PATHS[name][1]}) | {r['syncs_per_s']:.1f} | {r['cpu_ms_per_sync']:.1f} ms "
            f"| {r['sql']} | {r['rss_per_100_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f}, {r['peak_running']} open) "
            f"| {r['p50_s']:.2f} / {r['p99_s']:.2f} s | {r['lost']} / {r['doubled']} | {','.join(r['statuses'])} "
            f"| {r['workers_for_111']:.1f} processes, {r['cores_for_111']:.1f} cores |"
        )


if __name__ == "__main__":
    main()
