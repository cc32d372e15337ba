"""Scheduler scale: one real beat (django-celery-beat's DatabaseScheduler) over many connections.

For each --sizes N: N connections with enabled PeriodicTasks (bulk-created rows carrying exactly
what `brokers.schedules.sync_schedule` writes — checked with `schedules.reconcile()`, which must
find nothing to repair), plus one probe connection, then one `celery beat` process. Nothing runs
the tasks: a counting consumer in this process pops beat's messages off the Redis queue and
stamps when each arrived. SYNC_INTERVAL_UNIT=seconds, so intervals are 5..60 s and N tasks ask
for a real dispatch rate (about 0.044·N per second: 1,000 tasks here = 60,000 connections on
5..60-minute intervals).

Phases, measured on the beat process with psutil:

1. start-up — beat launched with the probe due: seconds until its first dispatch arrives;
2. idle — every task's last run set in the future (nothing due), --idle-s seconds: beat CPU
   per tick (it ticks every 5 s, its max interval, when nothing is due);
3. changes, --changes times: switch the probe on, then its interval 60 -> 5, each through
   `schedules.sync_schedule` in a transaction as the services make them: seconds
   from the commit to the probe's dispatch arriving, and beat CPU per change (above idle);
   switching it off again is a third change, counted for CPU only;
4. load — every task's last run spread over its interval (so the tasks fall due evenly), for
   --load-s seconds: dispatches per second against the rate asked for, lag of each dispatch
   (arrival − due, where due = the previous dispatch + interval), beat CPU and memory.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness
import psutil

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
BEAT_TICK_S = 5  # DatabaseScheduler's max interval (DEFAULT_MAX_INTERVAL) when nothing is due sooner


class Consumer:
    """Pops beat's messages off the default queue; records (arrival, periodic task name)."""

    def __init__(self, redis_url: str):
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.arrivals: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            # kombu publishes with LPUSH: the oldest message is on the right.
            batch = self.client.rpop("celery", 1000)
            if not batch:
                popped = self.client.brpop("celery", timeout=0.1)
                batch = [popped[1]] if popped else []
            now = time.time()
            for raw in batch:
                headers = json.loads(raw)["headers"]
                self.arrivals.append((now, headers.get("periodic_task_name", headers.get("task", ""))))

    def first(self, name: str, after: float) -> float | None:
        return next((t for t, n in list(self.arrivals) if n == name and t >= after), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of connections, ascending")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--idle-s", type=float, default=30)
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument("--load-s", type=float, default=120)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    harness.print_machine()
    os.environ["SYNC_INTERVAL_UNIT"] = "seconds"
    results = []
    with harness.django_on(args.db):
        from django.conf import settings

        probe = create_connections(1, enabled=False)[0]
        existing = 0
        for n in sizes:
            create_connections(n - existing, enabled=True)
            existing = n
            check_rows_match_helpers()
            with Consumer(settings.REDIS_URL) as consumer, harness.log_dir(f"beat-{n}") as logs:
                results.append(measure(n, probe, consumer, logs, args))
    report(results, args)


def create_connections(count: int, *, enabled: bool) -> list[int]:
    """Bulk-create connections and the PeriodicTasks sync_schedule would give them; returns their ids."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django_celery_beat.models import PeriodicTask

    from brokers import schedules
    from brokers.models import BrokerConnection

    owner, _ = get_user_model().objects.get_or_create(username="bench-beat")
    # Encrypting once and sharing the ciphertext: beat never reads credentials.
    template = BrokerConnection()
    template.credentials = {"api_key": "bench", "scenario": "normal"}
    intervals = {n: schedules.interval_schedule(n) for n in range(5, 61)}
    ids = []
    with transaction.atomic():
        for start in range(0, count, 5000):
            rows = BrokerConnection.objects.bulk_create(
                BrokerConnection(owner=owner, broker_type="demo", label=f"beat {start + i}", environment="",
                                 sync_enabled=enabled, sync_interval_min=5 + (start + i) % 56,
                                 credentials_ciphertext=template.credentials_ciphertext)
                for i in range(min(5000, count - start))
            )
            PeriodicTask.objects.bulk_create(
                PeriodicTask(name=schedules.task_name(c.pk), task=schedules.SYNC_TASK,
                             interval=intervals[c.sync_interval_min], kwargs=json.dumps({"connection_id": c.pk}),
                             enabled=c.schedule_active, expire_seconds=c.sync_interval_min,
                             description=f"Automatic sync of {c.label} ({c.broker_type})",
                             last_run_at=LONG_AGO if not enabled else FAR_FUTURE)
                for c in rows
            )
            ids += [c.pk for c in rows]
    schedules.mark_schedules_changed()
    return ids


def check_rows_match_helpers() -> None:
    from brokers import schedules

    changes = schedules.reconcile()
    if any(changes.values()):
        raise SystemExit(f"bulk-created schedules differ from sync_schedule's: {changes}")


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def schedule_changes_seen(log_path: Path) -> int:
    return len(re.findall(r"Schedule changed", log_path.read_text(errors="replace")))


def settle(beat: psutil.Process, log_path: Path, seen_before: int) -> None:
    """Wait until beat has noticed a change (its log says so) and finished reloading (CPU quiet)."""
    harness.wait_for(lambda: schedule_changes_seen(log_path) > seen_before, timeout=600, what="beat to reload",
                     interval=0.2)
    while True:
        before = cpu(beat)
        time.sleep(0.5)
        if cpu(beat) - before < 0.02:
            return


def measure(n: int, probe: int, consumer: Consumer, logs: Path, args) -> dict:
    from django.db import transaction
    from django_celery_beat.models import PeriodicTask

    from brokers import schedules
    from brokers.models import BrokerConnection

    probe_name = schedules.task_name(probe)
    sync_tasks = PeriodicTask.objects.filter(name__startswith=schedules.TASK_NAME_PREFIX).exclude(name=probe_name)
    # Idle until phase 4: nothing due but the probe, which is switched on for the start-up figure.
    sync_tasks.update(last_run_at=FAR_FUTURE)
    with transaction.atomic():
        BrokerConnection.objects.filter(pk=probe).update(sync_enabled=True, sync_interval_min=60)
        schedules.sync_schedule(BrokerConnection.objects.get(pk=probe))
    PeriodicTask.objects.filter(name=probe_name).update(last_run_at=LONG_AGO)
    result: dict = {"n": n}
    log_path, schedule_file = logs / "beat.log", logs / "beat-schedule"
    launched = time.time()
    with harness.celery_process("beat", log_path, "-l", "INFO", "--schedule", str(schedule_file)) as process:
        beat = psutil.Process(process.pid)
        arrived = harness.wait_for(lambda: consumer.first(probe_name, launched), timeout=900, what="start-up")
        result["startup_s"] = arrived - launched
        result["rss_start_mib"] = beat.memory_info().rss / 2**20
        print(f"N={n}: start-up to first dispatch {result['startup_s']:.1f} s, RSS {result['rss_start_mib']:.0f} MiB",
              flush=True)

        def switch(enabled: bool, interval: int) -> float:
            """One change through sync_schedule, as the services make it; returns the moment it committed."""
            with transaction.atomic():
                BrokerConnection.objects.filter(pk=probe).update(sync_enabled=enabled, sync_interval_min=interval)
                schedules.sync_schedule(BrokerConnection.objects.get(pk=probe))
                if enabled:
                    # PeriodicTask.save() clears the last run of a disabled task, so a task switched on
                    # would wait one interval; a last run long ago makes beat send it the moment it
                    # has picked the change up, which is what we time.
                    PeriodicTask.objects.filter(name=probe_name, last_run_at__isnull=True).update(
                        last_run_at=LONG_AGO)
            return time.time()

        seen = schedule_changes_seen(log_path)
        switch(False, 60)
        settle(beat, log_path, seen)

        # 2. idle ticks
        before, start = cpu(beat), time.time()
        time.sleep(args.idle_s)
        idle_cpu, idle_wall = cpu(beat) - before, time.time() - start
        result["idle_cpu_per_s"] = idle_cpu / idle_wall
        result["tick_cpu_ms"] = idle_cpu / (idle_wall / BEAT_TICK_S) * 1000
        print(f"N={n}: idle {result['idle_cpu_per_s'] * 100:.1f}% CPU, {result['tick_cpu_ms']:.1f} ms per tick",
              flush=True)

        # 3. changes
        pickups: dict[str, list[float]] = {"enable": [], "interval": []}
        change_cpu: dict[str, list[float]] = {"enable": [], "interval": [], "disable": []}

        def change(kind: str, enabled: bool, interval: int) -> None:
            seen, before, start = schedule_changes_seen(log_path), cpu(beat), time.time()
            committed = switch(enabled, interval)
            if kind in pickups:
                arrived = harness.wait_for(lambda: consumer.first(probe_name, committed), timeout=600,
                                           what=f"the probe's dispatch after {kind}")
                pickups[kind].append(arrived - committed)
            settle(beat, log_path, seen)
            change_cpu[kind].append(cpu(beat) - before - result["idle_cpu_per_s"] * (time.time() - start))

        for _ in range(args.changes):
            change("enable", True, 60)
            # Past the new interval since the dispatch: due at once when beat reloads.
            time.sleep(5)
            change("interval", True, 5)
            change("disable", False, 60)
        for kind, values in pickups.items():
            result[f"pickup_{kind}_s"] = statistics.median(values)
        for kind, values in change_cpu.items():
            result[f"cpu_{kind}_s"] = statistics.median(values)
        print(f"N={n}: pick-up enable {pickups['enable']} s, interval {pickups['interval']} s; beat CPU per change "
              + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in change_cpu.items()), flush=True)

        # 4. load at the real rate
        result.update(load(n, beat, log_path, consumer, sync_tasks, args))
    return result


def load(n: int, beat: psutil.Process, log_path: Path, consumer: Consumer, sync_tasks, args) -> dict:
    from django_celery_beat.models import PeriodicTask

    from brokers import schedules

    tasks = list(sync_tasks.select_related("interval").only("id", "name", "interval__every"))
    every = {t.name: t.interval.every for t in tasks}
    now = datetime.now(UTC)
    due: dict[str, float] = {}
    for t in tasks:
        # Last run somewhere in the past interval: the tasks fall due evenly from now on.
        t.last_run_at = now - timedelta(seconds=random.uniform(0, every[t.name]))
        due[t.name] = t.last_run_at.timestamp() + every[t.name]
    PeriodicTask.objects.bulk_update(tasks, ["last_run_at"], batch_size=2000)
    seen, mark = schedule_changes_seen(log_path), len(consumer.arrivals)
    schedules.mark_schedules_changed()
    cpu_before, start = cpu(beat), time.time()
    time.sleep(args.load_s)
    end = time.time()
    beat_cpu = cpu(beat) - cpu_before
    rss = beat.memory_info().rss / 2**20
    arrivals = [(t, name) for t, name in consumer.arrivals[mark:] if name in every and t <= end]
    lags, late_first, late_last = [], [], []
    # Per 10 s of the window: dispatches and the worst lag, to show when beat fell behind.
    buckets: dict[int, list[float]] = {}
    for arrived, name in arrivals:
        lag = arrived - due[name]
        lags.append(lag)
        buckets.setdefault(int((arrived - start) // 10), []).append(lag)
        if arrived < start + 30:
            late_first.append(lag)
        elif arrived > end - 30:
            late_last.append(lag)
        due[name] = arrived + every[name]
    # What an ideal beat would send over the window: each task's dues from its first due to the end.
    asked = sum(1 / every[name] for name in every) * (end - start)
    reloads = schedule_changes_seen(log_path) - seen
    out = {
        "asked_per_s": asked / (end - start), "sent_per_s": len(arrivals) / (end - start),
        "lag_p50_s": harness.percentile(lags, 50), "lag_p95_s": harness.percentile(lags, 95),
        "lag_p99_s": harness.percentile(lags, 99), "lag_max_s": max(lags),
        "lag_first30_p50_s": statistics.median(late_first) if late_first else float("nan"),
        "lag_last30_p50_s": statistics.median(late_last) if late_last else float("nan"),
        "load_cpu": beat_cpu / (end - start), "cpu_per_dispatch_ms": beat_cpu / max(1, len(arrivals)) * 1000,
        "rss_end_mib": rss, "reloads": reloads,
    }
    print(f"N={n}: load asked {out['asked_per_s']:.1f}/s, sent {out['sent_per_s']:.1f}/s; "
          f"lag p50 {out['lag_p50_s']:.2f} p95 {out['lag_p95_s']:.2f} p99 {out['lag_p99_s']:.2f} "
          f"max {out['lag_max_s']:.2f} s (first 30 s p50 "
          f"{out['lag_first30_p50_s']:.2f}, last 30 s p50 {out['lag_last30_p50_s']:.2f}); beat CPU "
          f"{out['load_cpu'] * 100:.0f}% ({out['cpu_per_dispatch_ms']:.2f} ms per dispatch), RSS {rss:.0f} MiB, "
          f"reloads {reloads}", flush=True)
    print(f"N={n}: per 10 s, dispatches / worst lag s: "
          + ", ".join(f"{len(v)}/{max(v):.1f}" for _, v in sorted(buckets.items())), flush=True)
    return out


def report(results: list[dict], args) -> None:
    print()
    print(f"beat (DatabaseScheduler, {args.db}), SYNC_INTERVAL_UNIT=seconds, intervals 5..60 s:")
    header = ("N", "start-up s", "tick ms", "pick-up on s", "pick-up interval s", "CPU/change s", "asked/s",
              "sent/s", "lag p50/p95/max s", "beat CPU", "RSS MiB")
    print(" | ".join(header))
    for r in results:
        print(" | ".join([
            f"{r['n']:,}", f"{r['startup_s']:.1f}", f"{r['tick_cpu_ms']:.1f}", f"{r['pickup_enable_s']:.2f}",
            f"{r['pickup_interval_s']:.2f}", f"{r['cpu_enable_s']:.3f}", f"{r['asked_per_s']:.1f}",
            f"{r['sent_per_s']:.1f}", f"{r['lag_p50_s']:.2f}/{r['lag_p95_s']:.2f}/{r['lag_max_s']:.2f}",
            f"{r['load_cpu'] * 100:.0f}%", f"{r['rss_end_mib']:.0f}",
        ]))


if __name__ == "__main__":
    main()
