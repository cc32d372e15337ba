"""Scheduler scale: django-celery-beat's DatabaseScheduler ("stock") and ours side by side, one real beat each.

For each --sizes N: N connections with enabled PeriodicTasks (bulk-created rows carrying exactly
what `brokers.periodic_tasks.sync_schedule` writes — checked with `periodic_tasks.reconcile()`, which must
find nothing to repair; their date_changed is set back to 2020, as for rows that exist before the
run), plus one probe connection. Then, for each of --schedulers in turn, real `celery beat`
processes with `-S` set to that scheduler. Nothing runs the tasks: a counting consumer in this
process pops beat's messages off the Redis queue and stamps when each arrived.

Phases, measured on the beat process with psutil (each phase starts its own beat, so every phase
begins from the same rows for both schedulers):

1. start-up — beat launched with the probe due: seconds until its first dispatch arrives;
2. idle — every task's last run in the future (nothing due), --idle-s seconds: beat CPU per
   second and per tick (stock ticks every 5 s when nothing is due, ours every 1 s);
3. changes, --changes times each: switch the probe on, its interval 60 -> 5, and off, each through
   `periodic_tasks.sync_schedule` in a transaction as the services make them: seconds from the commit
   to the probe's dispatch (on, interval) or to beat's log saying it changed (off), and beat CPU
   per change above idle;
4. capacity — SYNC_INTERVAL_UNIT=seconds (intervals 5..60 s: N tasks ask for about 0.044·N
   dispatches/s, 4,400/s at 100,000), last runs spread over each interval, --load-s seconds:
   dispatches per second sent against asked, lag (arrival − due), beat CPU;
5. real rate — every interval 15 minutes (the default; N/900 dispatches/s, 111/s at 100,000),
   last runs spread over the past 15 minutes, --real-s seconds, with one change per second
   (a random connection of a churn pool of 1 % switched off, on, or to another interval): lag
   p50/p99 of the other connections' dispatches, RSS, and per connection outside the churn pool
   a count of missed dispatches (due before the window's end − --grace-s, never sent) and
   doubled ones (sent twice in the window, a 15-minute interval allows one).
"""

from __future__ import annotations

import argparse
import contextlib
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
SCHEDULERS = {
    "stock": ("django_celery_beat.schedulers:DatabaseScheduler", 5.0),  # idle tick: its max interval
    "ours": ("sync.beat.scheduler:IncrementalScheduler", 1.0),  # idle tick: it reads changes every second
}
REAL_INTERVAL_MIN = 15


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

    def fresh_mark(self) -> int:
        """Empty the queue (messages a previous phase's beat left) and return the index new arrivals start at."""
        self.client.delete("celery")
        time.sleep(0.3)
        self.client.delete("celery")
        return len(self.arrivals)

    def first(self, name: str, after: float) -> float | None:
        return next((t for t, n in list(self.arrivals) if n == name and t >= after), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of connections, ascending")
    parser.add_argument("--schedulers", default="stock,ours")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--idle-s", type=float, default=30)
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument("--load-s", type=float, default=60)
    parser.add_argument("--real-s", type=float, default=120)
    parser.add_argument("--grace-s", type=float, default=2)
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
            for kind in args.schedulers.split(","):
                with Consumer(settings.REDIS_URL) as consumer, harness.log_dir(f"beat-{kind}-{n}") as logs:
                    results.append(measure(n, kind, probe, consumer, logs, args))
    report(results, args)


def create_connections(count: int, *, enabled: bool) -> list[int]:
    """Bulk-create connections and the PeriodicTasks sync_schedule would give them; returns their ids."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django_celery_beat.models import PeriodicTask

    from brokers import periodic_tasks
    from brokers.models import BrokerConnection

    owner, _ = get_user_model().objects.get_or_create(username="bench-beat")
    # Encrypting once and sharing the ciphertext: beat never reads credentials.
    template = BrokerConnection()
    template.credentials = {"api_key": "bench", "scenario": "normal"}
    intervals = {n: periodic_tasks.interval_schedule(n) for n in range(5, 61)}
    ids = []
    with transaction.atomic():
        for start in range(0, count, 5000):
            rows = BrokerConnection.objects.bulk_create(
                BrokerConnection(
                    owner=owner,
                    broker_type="demo",
                    label=f"beat {start + i}",
                    environment="",
                    sync_enabled=enabled,
                    sync_interval_min=5 + (start + i) % 56,
                    credentials_ciphertext=template.credentials_ciphertext,
                )
                for i in range(min(5000, count - start))
            )
            PeriodicTask.objects.bulk_create(
                PeriodicTask(
                    name=periodic_tasks.task_name(c.pk),
                    task=periodic_tasks.SYNC_TASK,
                    interval=intervals[c.sync_interval_min],
                    kwargs=json.dumps({"connection_id": c.pk}),
                    enabled=c.schedule_active,
                    expire_seconds=c.sync_interval_min,
                    description=f"Automatic sync of {c.label} ({c.broker_type})",
                    last_run_at=LONG_AGO if not enabled else FAR_FUTURE,
                )
                for c in rows
            )
            ids += [c.pk for c in rows]
        # Rows that exist before the run, not changes made during it.
        PeriodicTask.objects.filter(name__in=[periodic_tasks.task_name(i) for i in ids]).update(date_changed=LONG_AGO)
    periodic_tasks.mark_schedules_changed()
    return ids


def check_rows_match_helpers() -> None:
    from brokers import periodic_tasks

    changes = periodic_tasks.reconcile()
    if any(changes.values()):
        raise SystemExit(f"bulk-created schedules differ from sync_schedule's: {changes}")


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def schedule_changes_seen(log_path: Path) -> int:
    return len(re.findall(r"Schedule changed", log_path.read_text(errors="replace")))


def settle(beat: psutil.Process, log_path: Path, seen_before: int) -> float:
    """Wait until beat has noticed a change (its log says so) and gone quiet; when it was noticed."""
    noticed = harness.wait_for(
        lambda: schedule_changes_seen(log_path) > seen_before and time.time(),
        timeout=600,
        what="beat to reload",
        interval=0.05,
    )
    while True:
        before = cpu(beat)
        time.sleep(0.5)
        if cpu(beat) - before < 0.02:
            return noticed


@contextlib.contextmanager
def beat(kind: str, logs: Path, phase: str):
    scheduler = SCHEDULERS[kind][0]
    log_path = logs / f"{phase}.log"
    options = ("-l", "INFO", "-S", scheduler, "--schedule", str(logs / "beat-schedule"))
    # The bench reads beat's INFO lines ("Schedule changed"); the other processes log warnings only.
    with harness.celery_process("beat", log_path, *options, LOG_LEVEL="INFO") as process:
        yield psutil.Process(process.pid), log_path


def sync_tasks(probe_name: str):
    from django_celery_beat.models import PeriodicTask

    from brokers import periodic_tasks

    return PeriodicTask.objects.filter(name__startswith=periodic_tasks.TASK_NAME_PREFIX).exclude(name=probe_name)


def measure(n: int, kind: str, probe: int, consumer: Consumer, logs: Path, args) -> dict:
    from django.conf import settings
    from django.db import transaction
    from django_celery_beat.models import PeriodicTask

    from brokers import periodic_tasks
    from brokers.models import BrokerConnection

    settings.SYNC_INTERVAL_UNIT = "seconds"
    probe_name = periodic_tasks.task_name(probe)
    tasks = sync_tasks(probe_name)
    # Idle until phase 4: nothing due but the probe, which is switched on for the start-up figure.
    tasks.update(last_run_at=FAR_FUTURE)
    with transaction.atomic():
        BrokerConnection.objects.filter(pk=probe).update(sync_enabled=True, sync_interval_min=60)
        periodic_tasks.sync_schedule(BrokerConnection.objects.get(pk=probe))
    PeriodicTask.objects.filter(name=probe_name).update(last_run_at=LONG_AGO)
    result: dict = {"n": n, "kind": kind}
    label = f"N={n} {kind}"
    launched = time.time()
    with beat(kind, logs, "changes") as (process, log_path):
        arrived = harness.wait_for(lambda: consumer.first(probe_name, launched), timeout=900, what="start-up")
        result["startup_s"] = arrived - launched
        result["rss_start_mib"] = process.memory_info().rss / 2**20
        print(
            f"{label}: start-up to first dispatch {result['startup_s']:.1f} s, RSS {result['rss_start_mib']:.0f} MiB",
            flush=True,
        )

        def switch(enabled: bool, interval: int) -> float:
            """One change through sync_schedule, as the services make it; returns the moment it committed."""
            with transaction.atomic():
                BrokerConnection.objects.filter(pk=probe).update(sync_enabled=enabled, sync_interval_min=interval)
                periodic_tasks.sync_schedule(BrokerConnection.objects.get(pk=probe))
                if enabled:
                    # PeriodicTask.save() clears the last run of a disabled task, so a task switched on
                    # would wait one interval; a last run long ago makes beat send it the moment it
                    # has picked the change up, which is what we time.
                    PeriodicTask.objects.filter(name=probe_name, last_run_at__isnull=True).update(last_run_at=LONG_AGO)
            return time.time()

        seen = schedule_changes_seen(log_path)
        switch(False, 60)
        settle(process, log_path, seen)

        # 2. idle ticks
        before, start = cpu(process), time.time()
        time.sleep(args.idle_s)
        idle_cpu, idle_wall = cpu(process) - before, time.time() - start
        result["idle_cpu_per_s"] = idle_cpu / idle_wall
        result["tick_cpu_ms"] = idle_cpu / (idle_wall / SCHEDULERS[kind][1]) * 1000
        print(
            f"{label}: idle {result['idle_cpu_per_s'] * 100:.2f}% CPU, {result['tick_cpu_ms']:.1f} ms per tick",
            flush=True,
        )

        # 3. changes
        pickups: dict[str, list[float]] = {"enable": [], "interval": [], "disable": []}
        change_cpu: dict[str, list[float]] = {"enable": [], "interval": [], "disable": []}

        def change(change_kind: str, enabled: bool, interval: int) -> None:
            seen, before, start = schedule_changes_seen(log_path), cpu(process), time.time()
            committed = switch(enabled, interval)
            if enabled:
                arrived = harness.wait_for(
                    lambda: consumer.first(probe_name, committed),
                    timeout=600,
                    what=f"the probe's dispatch after {change_kind}",
                )
                settle(process, log_path, seen)
            else:
                arrived = settle(process, log_path, seen)
            pickups[change_kind].append(arrived - committed)
            change_cpu[change_kind].append(cpu(process) - before - result["idle_cpu_per_s"] * (time.time() - start))

        for _ in range(args.changes):
            change("enable", True, 60)
            # Past the new interval since the dispatch: due at once when beat reloads.
            time.sleep(5)
            change("interval", True, 5)
            change("disable", False, 60)
        for change_kind in pickups:
            result[f"pickup_{change_kind}_s"] = statistics.median(pickups[change_kind])
            result[f"cpu_{change_kind}_s"] = statistics.median(change_cpu[change_kind])
        print(
            f"{label}: pick-up "
            + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in pickups.items())
            + "; beat CPU per change "
            + ", ".join(f"{k} {statistics.median(v) * 1000:.1f} ms" for k, v in change_cpu.items()),
            flush=True,
        )

    result.update(capacity(n, kind, probe_name, consumer, logs, args))
    result.update(real_rate(n, kind, probe_name, consumer, logs, args))
    return result


def spread_last_runs(tasks, every: dict[str, int]) -> dict[str, float]:
    """Each task's last run somewhere in its past interval: they fall due evenly from now on; returns dues."""
    from django_celery_beat.models import PeriodicTask

    now = datetime.now(UTC)
    rows, due = [], {}
    for pk, name in tasks.values_list("pk", "name"):
        last = now - timedelta(seconds=random.uniform(0, every[name]))
        rows.append(PeriodicTask(pk=pk, last_run_at=last))
        due[name] = last.timestamp() + every[name]
    PeriodicTask.objects.bulk_update(rows, ["last_run_at"], batch_size=2000)
    return due


def capacity(n: int, kind: str, probe_name: str, consumer: Consumer, logs: Path, args) -> dict:
    tasks = sync_tasks(probe_name)
    every = dict(tasks.values_list("name", "interval__every"))
    due = spread_last_runs(tasks, every)
    mark = consumer.fresh_mark()
    with beat(kind, logs, "capacity") as (process, _):
        # Counted from the first dispatch: start-up is phase 1's figure.
        start = harness.wait_for(
            lambda: len(consumer.arrivals) > mark and consumer.arrivals[mark][0], timeout=900, what="the first dispatch"
        )
        cpu_before = cpu(process)
        time.sleep(args.load_s)
        end = time.time()
        beat_cpu = cpu(process) - cpu_before
    arrivals = [(t, name) for t, name in consumer.arrivals[mark:] if name in every and start <= t <= end]
    lags = []
    for arrived, name in arrivals:
        lags.append(arrived - due[name])
        due[name] = arrived + every[name]
    asked = sum(1 / e for e in every.values())
    out = {
        "asked_per_s": asked,
        "sent_per_s": len(arrivals) / (end - start),
        "cap_lag_p50_s": harness.percentile(lags, 50),
        "cap_lag_max_s": max(lags),
        "cap_cpu": beat_cpu / (end - start),
        "cpu_per_dispatch_ms": beat_cpu / max(1, len(arrivals)) * 1000,
    }
    print(
        f"N={n} {kind}: capacity asked {asked:.0f}/s, sent {out['sent_per_s']:.0f}/s, lag p50 "
        f"{out['cap_lag_p50_s']:.2f} max {out['cap_lag_max_s']:.2f} s, beat CPU {out['cap_cpu'] * 100:.0f}% "
        f"({out['cpu_per_dispatch_ms']:.2f} ms per dispatch)",
        flush=True,
    )
    return out


def real_rate(n: int, kind: str, probe_name: str, consumer: Consumer, logs: Path, args) -> dict:
    from django.conf import settings
    from django.db import transaction

    from brokers import periodic_tasks
    from brokers.models import BrokerConnection

    settings.SYNC_INTERVAL_UNIT = "minutes"
    periodic_tasks.ensure_interval_schedules()
    tasks = sync_tasks(probe_name)
    connections = BrokerConnection.objects.filter(sync_enabled=True).exclude(pk=int(probe_name.split(":")[1]))
    connections.update(sync_interval_min=REAL_INTERVAL_MIN)
    tasks.update(
        interval=periodic_tasks.interval_schedule(REAL_INTERVAL_MIN),
        expire_seconds=REAL_INTERVAL_MIN * 60,
        date_changed=LONG_AGO,
    )
    periodic_tasks.sync_schedule(BrokerConnection.objects.get(pk=int(probe_name.split(":")[1])))
    check_rows_match_helpers()
    every = dict.fromkeys(tasks.values_list("name", flat=True), REAL_INTERVAL_MIN * 60)
    due = spread_last_runs(tasks, every)
    ids = list(connections.values_list("pk", flat=True))
    churn_pool = set(random.sample(ids, max(10, n // 100)))
    churned: set[str] = set()
    changes = 0
    mark = consumer.fresh_mark()
    with beat(kind, logs, "real-rate") as (process, _):
        harness.wait_for(lambda: len(consumer.arrivals) > mark, timeout=900, what="the first dispatch")
        start = time.time()
        cpu_before, rss_max = cpu(process), 0.0
        while time.time() < start + args.real_s:
            tick = time.time()
            pk = random.choice(list(churn_pool))
            with transaction.atomic():
                connection = BrokerConnection.objects.select_for_update().get(pk=pk)
                step = random.choice(("toggle", "interval"))
                if step == "toggle":
                    connection.sync_enabled = not connection.sync_enabled
                else:
                    connection.sync_interval_min = random.choice((5, 15, 30, 60))
                connection.save(update_fields=["sync_enabled", "sync_interval_min"])
                periodic_tasks.sync_schedule(connection)
            churned.add(periodic_tasks.task_name(pk))
            changes += 1
            rss_max = max(rss_max, process.memory_info().rss / 2**20)
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))
        end = time.time()
        time.sleep(args.grace_s)
        beat_cpu = cpu(process) - cpu_before
    steady = {name for name in every if name not in {periodic_tasks.task_name(pk) for pk in churn_pool}}
    window = [(t, name) for t, name in consumer.arrivals[mark:] if name in steady and t <= end + args.grace_s]
    sent: dict[str, list[float]] = {}
    for arrived, name in window:
        sent.setdefault(name, []).append(arrived)
    lags = [times[0] - due[name] for name, times in sent.items() if start <= due[name]]
    expected = {name for name in steady if start <= due[name] <= end - args.grace_s}
    missed = len([name for name in expected if name not in sent])
    doubled = sum(len(times) - 1 for times in sent.values())
    if doubled:
        examples = [
            (name, [round(t - start, 2) for t in times], round(due[name] - start, 2))
            for name, times in sent.items()
            if len(times) > 1
        ][:5]
        print(f"N={n} {kind}: doubled, as (task, arrivals s from the window's start, due s): {examples}", flush=True)
    out = {
        "real_asked_per_s": len(steady) / (REAL_INTERVAL_MIN * 60),
        "real_sent_per_s": len([t for t, _ in window if start <= t <= end]) / (end - start),
        "lag_p50_s": harness.percentile(lags, 50) if lags else float("nan"),
        "lag_p99_s": harness.percentile(lags, 99) if lags else float("nan"),
        "lag_max_s": max(lags) if lags else float("nan"),
        "missed": missed,
        "doubled": doubled,
        "expected": len(expected),
        "changes_per_s": changes / (end - start),
        "real_cpu": beat_cpu / (end - start),
        "rss_max_mib": rss_max,
    }
    print(
        f"N={n} {kind}: real rate asked {out['real_asked_per_s']:.1f}/s, sent {out['real_sent_per_s']:.1f}/s "
        f"with {out['changes_per_s']:.2f} changes/s; lag p50 {out['lag_p50_s']:.2f} p99 {out['lag_p99_s']:.2f} max "
        f"{out['lag_max_s']:.2f} s; missed {missed} / doubled {doubled} of {len(expected)} due; beat CPU "
        f"{out['real_cpu'] * 100:.0f}%, RSS max {rss_max:.0f} MiB",
        flush=True,
    )
    # Back to phase 1's shape for the next scheduler or size.
    settings.SYNC_INTERVAL_UNIT = "seconds"
    restore_phase_one_shape(probe_name)
    return out


def restore_phase_one_shape(probe_name: str) -> None:
    """Every connection but the probe enabled on its 5..60 s interval again, as create_connections left it."""
    from django_celery_beat.models import PeriodicTask

    from brokers import periodic_tasks
    from brokers.models import BrokerConnection

    probe = int(probe_name.split(":")[1])
    intervals = {n: periodic_tasks.interval_schedule(n) for n in range(5, 61)}
    connections = list(BrokerConnection.objects.exclude(pk=probe).order_by("pk").only("pk"))
    for i, connection in enumerate(connections):
        connection.sync_enabled, connection.sync_interval_min = True, 5 + i % 56
    BrokerConnection.objects.bulk_update(connections, ["sync_enabled", "sync_interval_min"], batch_size=2000)
    tasks = {t.name: t for t in sync_tasks(probe_name).only("pk", "name")}
    for connection in connections:
        task = tasks[periodic_tasks.task_name(connection.pk)]
        task.interval, task.enabled = intervals[connection.sync_interval_min], True
        task.expire_seconds, task.date_changed = connection.sync_interval_min, LONG_AGO
    PeriodicTask.objects.bulk_update(
        tasks.values(), ["interval", "enabled", "expire_seconds", "date_changed"], batch_size=2000
    )
    periodic_tasks.sync_schedule(BrokerConnection.objects.get(pk=probe))
    check_rows_match_helpers()


def report(results: list[dict], args) -> None:
    print()
    print(
        f"beat on {args.db}; capacity at SYNC_INTERVAL_UNIT=seconds (intervals 5..60 s), real rate at "
        f"{REAL_INTERVAL_MIN} min with 1 change/s:"
    )
    header = (
        "N",
        "scheduler",
        "start-up s",
        "idle CPU %",
        "tick ms",
        "pick-up on/interval/off s",
        "CPU/change on/interval/off ms",
        "capacity sent/asked per s",
        "real sent/asked per s",
        "lag p50/p99/max s",
        "missed/doubled of due",
        "RSS max MiB",
    )
    print(" | ".join(header))
    for r in results:
        print(
            " | ".join(
                [
                    f"{r['n']:,}",
                    r["kind"],
                    f"{r['startup_s']:.1f}",
                    f"{r['idle_cpu_per_s'] * 100:.2f}",
                    f"{r['tick_cpu_ms']:.1f}",
                    f"{r['pickup_enable_s']:.2f}/{r['pickup_interval_s']:.2f}/{r['pickup_disable_s']:.2f}",
                    f"{r['cpu_enable_s'] * 1000:.0f}/{r['cpu_interval_s'] * 1000:.0f}/{r['cpu_disable_s'] * 1000:.0f}",
                    f"{r['sent_per_s']:.0f}/{r['asked_per_s']:.0f}",
                    f"{r['real_sent_per_s']:.1f}/{r['real_asked_per_s']:.1f}",
                    f"{r['lag_p50_s']:.2f}/{r['lag_p99_s']:.2f}/{r['lag_max_s']:.2f}",
                    f"{r['missed']}/{r['doubled']} of {r['expected']}",
                    f"{r['rss_max_mib']:.0f}",
                ]
            )
        )
    by = {(r["n"], r["kind"]): r for r in results}
    for n in sorted({r["n"] for r in results}):
        stock, ours = by.get((n, "stock")), by.get((n, "ours"))
        if stock and ours:
            print(
                f"N={n:,} ours/stock: tick {ours['tick_cpu_ms'] / stock['tick_cpu_ms']:.4f}x, CPU per change "
                f"{ours['cpu_enable_s'] / max(stock['cpu_enable_s'], 1e-9):.4f}x, capacity "
                f"{ours['sent_per_s'] / stock['sent_per_s']:.1f}x, "
                f"RSS {ours['rss_max_mib'] / stock['rss_max_mib']:.2f}x"
            )


if __name__ == "__main__":
    main()
