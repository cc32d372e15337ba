"""Beat's scheduler: django-celery-beat's tables and semantics, read incrementally (docs/operations.md, "Beat").

django-celery-beat's DatabaseScheduler rereads every PeriodicTask on any change, compares the
whole schedule on every tick and sends one task per loop, so at 100,000 connections a change
costs seconds of CPU and it sends a few tasks a second. This one keeps the same rows as the
truth and does work in proportion to what changed:

- it reads all enabled rows once, when it takes the beat lease, and after that only rows whose
  `date_changed` is recent (indexed by sync/migrations/0003), with an overlap because
  `date_changed` is the writer's clock at save time, not at commit; a row read twice is
  recognised by its version and skipped;
- a changed row replaces its entry and pushes one item on the heap (older items go stale and
  are skipped when they surface);
- every entry due in a tick is checked against the database in one query (deleted or disabled
  rows, whichever way they were deleted or disabled, are dropped there), its last run is written
  in one UPDATE that does not touch `date_changed` and skips disabled rows (`PeriodicTask.save()`
  cleared their last run; it stays cleared), and only then are the tasks sent, in one pipelined
  batch through the scheduler's producer. A database error sends nothing (the entries stay due);
  a crash after the write and before the send loses that tick's batch instead of sending it twice;
- a move of `PeriodicTasks.last_update` that no save explains (django-celery-beat's admin actions
  bulk-update `enabled` and touch only that) makes it compare the enabled ids with the schedule;
- a slow sweep walks the table a page at a time (a full pass per SYNC_BEAT_SWEEP_PASS_S) to catch
  what bypassed `date_changed`: bulk updates, rows deleted while nothing fell due;
- only the holder of the Redis beat lease (sync/beat/lease.py) reads or sends anything.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import logging
import math
import time
from datetime import datetime, timedelta

import redis
from celery import schedules as celery_schedules
from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
    SolarSchedule,
)
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from sync.beat.lease import BeatLease
from telemetry import heartbeat
from telemetry.redis_client import redis_client

logger = logging.getLogger(__name__)

READ_CHANGES_EVERY_S = 1.0
SWEEP_EVERY_S = 5.0
# Ticks closer than this gather their due entries into one batch (one query, one UPDATE, one
# pipeline) at the price of at most this much lag.
MIN_TICK_S = 0.05
# A standby looks at the lease this often, so that it takes over within a second of it lapsing.
STANDBY_POLL_S = 1.0
MAX_BATCH = 2000
# config/beat.py's heartbeat (for /readyz) is written at most this often while batches go out.
HEARTBEAT_EVERY_S = 1.0
LOAD_CHUNK = 5000
ROW_FIELDS = (
    "id",
    "name",
    "task",
    "interval_id",
    "crontab_id",
    "solar_id",
    "clocked_id",
    "args",
    "kwargs",
    "queue",
    "exchange",
    "routing_key",
    "priority",
    "headers",
    "expires",
    "expire_seconds",
    "one_off",
    "start_time",
    "enabled",
    "last_run_at",
    "date_changed",
)
SCHEDULE_MODELS = (
    ("interval", IntervalSchedule),
    ("crontab", CrontabSchedule),
    ("solar", SolarSchedule),
    ("clocked", ClockedSchedule),
)
EMPTY_JSON = frozenset((None, "", "[]", "{}"))
# As in django-celery-beat: a task with a start time and no last run counts as run long ago.
START_TIME_BACKDATE = timedelta(days=365 * 30)


class Entry:
    """One enabled PeriodicTask, as little as beat needs of it (there may be a million)."""

    __slots__ = (
        "pk",
        "name",
        "task",
        "args",
        "kwargs",
        "routing",
        "schedule_key",
        "one_off",
        "start_time",
        "expires",
        "last_run_at",
        "version",
        "due_at",
    )

    def __init__(self, row: dict, schedule_key: tuple[str, int]):
        self.pk = row["id"]
        self.name = row["name"]
        self.task = row["task"]
        self.args = row["args"] or "[]"
        self.kwargs = row["kwargs"] or "{}"
        routing = (
            row["queue"],
            row["exchange"],
            row["routing_key"],
            row["priority"],
            row["expires"] or row["expire_seconds"],
            row["headers"] or "{}",
        )
        self.routing = None if routing == (None, None, None, None, None, "{}") else routing
        self.schedule_key = schedule_key
        self.one_off = row["one_off"]
        self.start_time = row["start_time"]
        self.expires = row["expires"]
        self.last_run_at = row["last_run_at"] or row["date_changed"] or timezone.now()
        if row["last_run_at"] is None and self.start_time is not None:
            if schedule_key[0] == "crontab":
                # Its first run is its first crontab time after start_time, even for a beat
                # (re)started between the two.
                self.last_run_at = self.start_time
            else:
                self.last_run_at -= START_TIME_BACKDATE
        self.version = row_version(row)
        self.due_at: float | None = None  # set while the entry is on the heap

    def message_options(self) -> dict:
        queue, exchange, routing_key, priority, expires, headers = self.routing or (None,) * 5 + ("{}",)
        options = {
            key: value
            for key, value in (
                ("queue", queue),
                ("exchange", exchange),
                ("routing_key", routing_key),
                ("priority", priority),
                ("expires", expires),
            )
            if value is not None
        }
        options["headers"] = {**json.loads(headers), "periodic_task_name": self.name, "celery_beat_task": True}
        # Nobody holds the id of what beat sends, so nobody reads its result; asking for one would
        # also make every send subscribe to, and later unsubscribe from, a Redis result channel
        # (two round trips per message, most of a send's cost).
        options["ignore_result"] = True
        return options


def row_version(row: dict) -> int:
    """What identifies a row's definition: a row read again with the same version is already applied."""
    return hash(tuple(row[field] for field in ROW_FIELDS if field not in ("enabled", "last_run_at")))


def schedule_key(row: dict) -> tuple[str, int] | None:
    for kind, _ in SCHEDULE_MODELS:
        if row[f"{kind}_id"] is not None:
            return kind, row[f"{kind}_id"]
    return None


class IncrementalScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler, reading only what changed and dispatching in batches."""

    def __init__(self, *args, **kwargs):
        # The base classes' __init__ writes the housekeeping entries and resets _heap: state after it.
        super().__init__(*args, **kwargs)
        self._entries: dict[int, Entry] = {}
        self._heap: list = []
        self._sequence = itertools.count()
        self._schedules: dict[tuple[str, int], tuple[tuple, object]] = {}
        self._loaded = False
        self._read_from: datetime | None = None
        self._next_read = 0.0
        self._last_update = None
        self._next_sweep = 0.0
        self._sweep_after = 0
        self._sweep_pks: list[int] = []
        self._heartbeat_at = -math.inf
        self.lease = BeatLease(redis_client(), settings.SYNC_BEAT_LEASE_TTL_S)

    # --- set-up: the housekeeping entries are written to the table like every other schedule ---

    def setup_schedule(self):
        self.install_default_entries(None)
        self.update_from_dict(self.app.conf.beat_schedule)

    def update_from_dict(self, mapping):
        for name, fields in mapping.items():
            try:
                ModelEntry.from_entry(name, app=self.app, **fields)
            except Exception:
                logger.exception("beat: cannot write the schedule %s to the database", name)

    @property
    def schedule(self):
        return {entry.name: entry for entry in self._entries.values()}

    @property
    def info(self):
        return f"    . lease -> {self.lease.holder} (dispatches only while holding the {self.lease.ttl_s:g} s lease)"

    def sync(self):
        """Nothing is left to write: every dispatch's last run is written before it is sent."""

    def close(self):
        self.lease.release()
        super().close()

    # --- the loop ---

    def tick(self, *args, **kwargs) -> float:
        if not self.lease.hold():
            if self._loaded:
                logger.warning("beat: lost the beat lease; standing by")
                self._forget()
            return min(self.max_interval, STANDBY_POLL_S)
        if self.lease.taken_afresh:
            self.lease.taken_afresh = False
            self._forget()
        try:
            if not self._loaded:
                self._load_all()
            elif time.monotonic() >= self._next_read:
                self._read_changes()
                self._sweep_step()
            sent = self._dispatch_due()
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("beat: database error, retrying in %s s: %r", self.max_interval, exc)
            close_old_connections()
            return self.max_interval
        if sent >= MAX_BATCH:
            return 0
        delay = self.max_interval
        if self._heap:
            delay = min(delay, max(self._heap[0][0] - time.time(), MIN_TICK_S))
        return min(delay, max(self._next_read - time.monotonic(), MIN_TICK_S))

    def _forget(self) -> None:
        """Drop the schedule: whoever holds the lease now writes last runs we would not see."""
        self._entries, self._heap, self._loaded = {}, [], False

    # --- reading the table ---

    def _load_all(self) -> None:
        started = timezone.now()
        self._last_update = PeriodicTasks.last_change()
        self._load_schedules()
        self._entries, self._heap = {}, []
        rows = PeriodicTask.objects.filter(enabled=True).values(*ROW_FIELDS).iterator(chunk_size=LOAD_CHUNK)
        now = timezone.now()
        for count, row in enumerate(rows, 1):
            if count % LOAD_CHUNK == 0:
                # A load of 100,000 rows takes longer than the lease lives: keep it, or give up.
                if not self.lease.hold():
                    logger.warning("beat: lost the beat lease while loading; standing by")
                    self._forget()
                    return
                now = timezone.now()
            self._apply(row, now)
        self._read_from, self._loaded = started, True
        self._next_read = time.monotonic() + READ_CHANGES_EVERY_S
        self._sweep_after, self._sweep_pks = 0, sorted(self._entries)
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        logger.info("beat: holding the lease; %d enabled schedules loaded", len(self._entries))

    def _read_changes(self) -> None:
        started = timezone.now()
        since = self._read_from - timedelta(seconds=settings.SYNC_BEAT_CHANGE_OVERLAP_S)
        changed = 0
        latest_save = None
        for row in PeriodicTask.objects.filter(date_changed__gte=since).values(*ROW_FIELDS):
            changed += self._apply(row, started)
            latest_save = max(latest_save or row["date_changed"], row["date_changed"])
        last_update = PeriodicTasks.last_change()
        if last_update != self._last_update:
            # Edits to the interval/crontab/... rows themselves move only PeriodicTasks.last_update.
            self._last_update = last_update
            self._reschedule(self._load_schedules())
            # save() moves last_update just before it stamps date_changed, so a last_update later than
            # every row read came from a write without save(): django-celery-beat's admin actions
            # ("Enable selected", "Toggle activity") or a delete. Those take effect now, not at the sweep.
            if last_update is not None and (latest_save is None or last_update > latest_save):
                changed += self._reconcile_enabled(started)
        self._read_from = started
        self._next_read = time.monotonic() + READ_CHANGES_EVERY_S
        if changed:
            logger.info("beat: Schedule changed: %d entries updated", changed)

    def _sweep_step(self) -> None:
        """Every few seconds: pick up edited schedule rows, and compare one page of the table with the
        schedule (a whole pass takes SYNC_BEAT_SWEEP_PASS_S)."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_EVERY_S
        page = max(100, math.ceil(len(self._entries) * SWEEP_EVERY_S / settings.SYNC_BEAT_SWEEP_PASS_S))
        rows = list(PeriodicTask.objects.filter(pk__gt=self._sweep_after).order_by("pk").values(*ROW_FIELDS)[:page])
        last = rows[-1]["id"] if len(rows) == page else math.inf
        now = timezone.now()
        changed = sum(self._apply(row, now) for row in rows)
        present = {row["id"] for row in rows}
        low = bisect.bisect_right(self._sweep_pks, self._sweep_after)
        high = bisect.bisect_right(self._sweep_pks, last)
        for pk in self._sweep_pks[low:high]:
            if pk not in present and self._entries.pop(pk, None):
                changed += 1
        if last == math.inf:
            self._sweep_after, self._sweep_pks = 0, sorted(self._entries)
        else:
            self._sweep_after = last
        if changed:
            logger.info("beat: sweep found %d entries out of step with the table", changed)

    def _reconcile_enabled(self, now: datetime) -> int:
        """Bring the schedule in step with which rows are enabled: one query of ids, then only the rows that differ."""
        enabled = set(PeriodicTask.objects.filter(enabled=True).values_list("pk", flat=True))
        gone = [pk for pk in self._entries if pk not in enabled]
        for pk in gone:
            del self._entries[pk]
        new = sorted(enabled.difference(self._entries))
        changed = len(gone)
        for start in range(0, len(new), LOAD_CHUNK):
            chunk = new[start : start + LOAD_CHUNK]
            changed += sum(
                self._apply(row, now) for row in PeriodicTask.objects.filter(pk__in=chunk).values(*ROW_FIELDS)
            )
        return changed

    def _apply(self, row: dict, now: datetime) -> int:
        """Bring one row's entry in step with the row; 1 if that changed anything."""
        pk, entry = row["id"], self._entries.get(row["id"])
        if not row["enabled"]:
            return 1 if self._entries.pop(pk, None) else 0
        if entry is not None and entry.version == row_version(row):
            return 0
        key = schedule_key(row)
        if key not in self._schedules:
            self._load_schedules()
        try:
            for text in (row["args"], row["kwargs"], row["headers"]):
                if text not in EMPTY_JSON:
                    json.loads(text)
            if key not in self._schedules:
                raise ValueError("it has no schedule")
        except ValueError as exc:
            logger.error("beat: skipping the schedule %s: %s", row["name"], exc)
            self._entries.pop(pk, None)
            return 1
        entry = self._entries[pk] = Entry(row, key)
        self._push(entry, self._next_due(entry, now))
        return 1

    def _load_schedules(self) -> set[tuple[str, int]]:
        """(Re)read the small schedule tables; return the keys whose definition changed."""
        changed = set()
        for kind, model in SCHEDULE_MODELS:
            for row in model.objects.all():
                definition = tuple(getattr(row, f.attname) for f in model._meta.concrete_fields)
                key = (kind, row.pk)
                if key not in self._schedules or self._schedules[key][0] != definition:
                    self._schedules[key] = (definition, row.schedule)
                    changed.add(key)
        return changed

    def _reschedule(self, keys: set[tuple[str, int]]) -> None:
        if not keys:
            return
        now = timezone.now()
        for entry in self._entries.values():
            if entry.schedule_key in keys:
                self._push(entry, self._next_due(entry, now))

    # --- the heap ---

    def _push(self, entry: Entry, due_at: float) -> None:
        entry.due_at = due_at
        heapq.heappush(self._heap, (due_at, next(self._sequence), entry))
        if len(self._heap) > 2 * len(self._entries) + 10_000:
            # Replaced and removed entries leave stale items behind; rebuild before they pile up.
            self._heap = [(e.due_at, next(self._sequence), e) for e in self._entries.values() if e.due_at is not None]
            heapq.heapify(self._heap)

    def _next_due(self, entry: Entry, now: datetime) -> float:
        """Unix time the entry is next due (now, if it is due already)."""
        schedule = self._schedules[entry.schedule_key][1]
        if entry.start_time is not None and now < entry.start_time:
            if not isinstance(schedule, celery_schedules.crontab):
                return entry.start_time.timestamp()
            # A crontab starts on its first time after start_time, off which it never fires (as
            # django-celery-beat's due_start_time).
            start, ends_in, _ = schedule.remaining_delta(entry.start_time.astimezone(self.app.timezone))
            return (start + ends_in).timestamp()
        if type(schedule) is celery_schedules.schedule and not schedule.relative:
            # What celery's interval schedule computes, without its per-call time zone work.
            return max(entry.last_run_at.timestamp() + schedule.seconds, now.timestamp())
        last_run = entry.last_run_at.astimezone(self.app.timezone)
        is_due, next_check_s = schedule.is_due(last_run)
        return now.timestamp() if is_due else now.timestamp() + next_check_s

    def _take_due(self) -> list[Entry]:
        now, taken = time.time(), []
        while self._heap and self._heap[0][0] <= now and len(taken) < MAX_BATCH:
            due_at, _, entry = heapq.heappop(self._heap)
            if entry.due_at != due_at or self._entries.get(entry.pk) is not entry:
                continue  # a stale item: the entry was replaced, removed, or pushed again
            entry.due_at = None
            taken.append(entry)
        return taken

    # --- dispatching ---

    def _dispatch_due(self) -> int:
        taken = self._take_due()
        if not taken:
            return 0
        now = timezone.now()
        ready, expired = [], []
        for entry in taken:
            if entry.expires is not None and now >= entry.expires:
                expired.append(entry)
                continue
            due_at = self._next_due(entry, now)
            if due_at <= now.timestamp():
                ready.append(entry)
            else:
                self._push(entry, due_at)
        if expired:
            self._disable(expired, now)
        if not ready or not self.lease.valid():
            for entry in ready:
                self._push(entry, time.time())
            return 0
        try:
            live = self._record_runs(ready, now)
        except (DatabaseError, InterfaceError):
            for entry in ready:
                self._push(entry, time.time() + self.max_interval)
            raise
        sending = [entry for entry in ready if entry.pk in live]
        for entry in ready:
            if entry.pk not in live:
                self._entries.pop(entry.pk, None)
        if sending:
            # Every due row may have been deleted or disabled behind beat's back: nothing to send.
            self._send(sending, now)
        return len(sending)

    def _record_runs(self, entries: list[Entry], now: datetime) -> set[int]:
        """Write the runs about to be sent; return the ids still enabled (the others are not sent)."""
        ids = [entry.pk for entry in entries]
        with transaction.atomic():
            live = set(PeriodicTask.objects.filter(pk__in=ids, enabled=True).values_list("pk", flat=True))
            repeating = [e.pk for e in entries if e.pk in live and not e.one_off]
            # One UPDATE for the tick: no date_changed (beat must not read its own write back), and
            # filtered on enabled, so a row disabled meanwhile keeps the cleared last run save() gave it.
            PeriodicTask.objects.filter(pk__in=repeating, enabled=True).update(
                last_run_at=now, total_run_count=F("total_run_count") + 1
            )
            one_offs = [e.pk for e in entries if e.pk in live and e.one_off]
            if one_offs:
                # As django-celery-beat does once a one-off task has run: disabled, count reset.
                PeriodicTask.objects.filter(pk__in=one_offs).update(
                    enabled=False, total_run_count=0, last_run_at=None, date_changed=now
                )
        return live

    def _disable(self, entries: list[Entry], now: datetime) -> None:
        """Expired tasks are disabled, as PeriodicTask.save() would leave them."""
        PeriodicTask.objects.filter(pk__in=[e.pk for e in entries]).update(
            enabled=False, last_run_at=None, date_changed=now
        )
        for entry in entries:
            self._entries.pop(entry.pk, None)

    def _send(self, entries: list[Entry], now: datetime) -> None:
        sent = 0
        try:
            with self.producer.batch():
                for entry in entries:
                    task = self.app.tasks.get(entry.task)
                    args, kwargs, options = json.loads(entry.args), json.loads(entry.kwargs), entry.message_options()
                    if task is not None:
                        task.apply_async(args, kwargs, producer=self.producer, **options)
                    else:
                        self.app.send_task(entry.task, args, kwargs, producer=self.producer, **options)
                    sent += 1
        except Exception:
            # The runs are written but the batch did not reach Redis: undo them and try again
            # next tick, so a Redis outage delays these syncs instead of skipping them.
            logger.exception("beat: could not send %d due tasks; retrying", len(entries))
            self._undo_runs(entries)
            for entry in entries:
                self._push(entry, time.time() + self.max_interval)
            return
        for entry in entries:
            if entry.one_off:
                self._entries.pop(entry.pk, None)
                continue
            entry.last_run_at = now
            self._push(entry, self._next_due(entry, now))
        if time.monotonic() - self._heartbeat_at >= HEARTBEAT_EVERY_S:
            self._heartbeat_at = time.monotonic()
            try:
                heartbeat.record_dispatch()
            except redis.RedisError:
                logger.warning("beat: could not write the heartbeat (%s)", heartbeat.LAST_DISPATCH_KEY)
        logger.info("beat: sent %d due tasks (%s%s)", sent, entries[0].name, ", ..." if sent > 1 else "")

    def _undo_runs(self, entries: list[Entry]) -> None:
        try:
            with transaction.atomic():
                for entry in entries:
                    if entry.one_off:
                        PeriodicTask.objects.filter(pk=entry.pk).update(enabled=True, date_changed=timezone.now())
                    else:
                        PeriodicTask.objects.filter(pk=entry.pk, enabled=True).update(
                            last_run_at=entry.last_run_at, total_run_count=F("total_run_count") - 1
                        )
        except (DatabaseError, InterfaceError):
            logger.exception("beat: could not undo the runs of unsent tasks; they wait one interval")
