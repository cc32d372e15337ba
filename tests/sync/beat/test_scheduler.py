"""Our beat scheduler in the test process, tick by tick, on the test database and the test Redis."""

import json
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from brokers import periodic_tasks
from config.celery_app import app as celery_app
from sync.beat.lease import LEASE_KEY
from sync.beat.scheduler import IncrementalScheduler
from telemetry import heartbeat

pytestmark = pytest.mark.django_db(transaction=True)

LONG_AGO = timezone.now() - timedelta(days=1)


@pytest.fixture
def queue():
    client = redis.Redis.from_url(settings.REDIS_URL)

    def sent() -> list[str]:
        """Names of the periodic tasks beat sent since the last call."""
        names = []
        while raw := client.rpop(celery_app.conf.task_default_queue):
            names.append(json.loads(raw)["headers"]["periodic_task_name"])
        return names

    return sent


def new_scheduler() -> IncrementalScheduler:
    return IncrementalScheduler(app=celery_app, max_interval=0.2)


def every(seconds: int) -> IntervalSchedule:
    return IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)[0]


def task(name: str, *, seconds: int = 60, last_run_at=LONG_AGO, **fields) -> PeriodicTask:
    row = PeriodicTask.objects.create(
        name=name,
        task=periodic_tasks.SYNC_TASK,
        interval=every(seconds),
        kwargs=json.dumps({"connection_id": 1}),
        **fields,
    )
    # create() cannot set last_run_at on a disabled row (save() clears it); an update can.
    PeriodicTask.objects.filter(pk=row.pk).update(last_run_at=last_run_at)
    row.refresh_from_db()
    return row


def read_changes_now(scheduler: IncrementalScheduler) -> None:
    scheduler._next_read = 0.0


def test_due_entries_are_sent_once_and_their_last_run_written_without_touching_date_changed(queue):
    due = [task(f"due-{n}") for n in range(3)]
    task("not-due", last_run_at=timezone.now())
    task("off", enabled=False)
    scheduler = new_scheduler()

    scheduler.tick()

    assert sorted(queue()) == ["due-0", "due-1", "due-2"]
    for row in due:
        fresh = PeriodicTask.objects.get(pk=row.pk)
        assert timezone.now() - fresh.last_run_at < timedelta(seconds=5)
        assert fresh.total_run_count == 1
        assert fresh.date_changed == row.date_changed  # so beat does not read its own write back
    read_changes_now(scheduler)
    scheduler.tick()
    assert queue() == []
    assert heartbeat.seconds_since_dispatch() < 5


def test_a_row_changed_while_beat_runs_is_read_once_even_when_the_overlap_reads_it_again(queue):
    scheduler = new_scheduler()
    scheduler.tick()
    queue()
    task("created-later")
    read_changes_now(scheduler)
    scheduler.tick()
    assert queue() == ["created-later"]
    heap_size = len(scheduler._heap)

    for _ in range(3):  # still inside the overlap: the same row, the same version
        read_changes_now(scheduler)
        scheduler.tick()
    assert queue() == []
    assert len(scheduler._heap) == heap_size


def test_rows_disabled_or_deleted_behind_beats_back_are_not_sent_and_the_cleared_last_run_stays_cleared(queue):
    rows = [task(name, last_run_at=timezone.now()) for name in ("disabled", "deleted", "kept")]
    disabled, deleted, _ = rows
    scheduler = new_scheduler()
    scheduler.tick()  # loads them, not due yet
    # Fallen due, then switched off by save() and deleted by a bulk delete, with beat not
    # reading changes: the check at dispatch is what stops them.
    scheduler._next_read = float("inf")
    for row in rows:
        entry = scheduler._entries[row.pk]
        entry.last_run_at = LONG_AGO
        scheduler._push(entry, time.time())
    disabled.enabled = False
    disabled.save()
    PeriodicTask.objects.filter(pk=deleted.pk).delete()

    scheduler.tick()

    assert queue() == ["kept"]
    assert PeriodicTask.objects.get(pk=disabled.pk).last_run_at is None
    assert disabled.pk not in scheduler._entries and deleted.pk not in scheduler._entries


def test_an_interval_change_reschedules_the_entry(queue):
    row = task("hourly", seconds=3600, last_run_at=timezone.now() - timedelta(seconds=10))
    scheduler = new_scheduler()
    scheduler.tick()
    assert queue() == []

    row.interval = every(5)
    row.save()
    read_changes_now(scheduler)
    scheduler.tick()
    assert queue() == ["hourly"]


def test_a_one_off_task_runs_once_and_an_expired_task_not_at_all(queue):
    one_off = task("once", one_off=True)
    expired = task("expired", expires=timezone.now() - timedelta(minutes=1))
    scheduler = new_scheduler()
    scheduler.tick()
    time.sleep(0.3)
    read_changes_now(scheduler)
    scheduler.tick()

    assert queue() == ["once"]
    one_off.refresh_from_db()
    expired.refresh_from_db()
    assert (one_off.enabled, one_off.total_run_count) == (False, 0)
    assert expired.enabled is False


def test_a_crontab_entry_is_sent_when_due_and_once_per_minute(queue):
    crontab = CrontabSchedule.objects.create(minute="*", hour="*")
    PeriodicTask.objects.create(name="each-minute", task="sync.tasks.close_interrupted_runs", crontab=crontab)
    PeriodicTask.objects.filter(name="each-minute").update(last_run_at=timezone.now() - timedelta(minutes=2))
    scheduler = new_scheduler()
    scheduler.tick()
    assert queue() == ["each-minute"]
    read_changes_now(scheduler)
    scheduler.tick()
    # The next one is at the next minute boundary, not now.
    assert queue() == []
    assert scheduler._entries[PeriodicTask.objects.get(name="each-minute").pk].due_at > time.time()


def test_a_database_error_sends_nothing_and_the_entry_is_sent_once_afterwards(queue, monkeypatch):
    task("due")
    scheduler = new_scheduler()
    scheduler.tick()
    queue()
    row = task("due-later")
    read_changes_now(scheduler)
    record_runs = scheduler._record_runs

    def database_gone(*args):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(scheduler, "_record_runs", database_gone)
    scheduler.tick()
    assert queue() == []
    assert PeriodicTask.objects.get(pk=row.pk).total_run_count == 0

    monkeypatch.setattr(scheduler, "_record_runs", record_runs)
    time.sleep(0.3)
    scheduler.tick()
    scheduler.tick()
    assert queue() == ["due-later"]
    assert PeriodicTask.objects.get(pk=row.pk).total_run_count == 1


def test_a_send_that_fails_undoes_the_written_run_and_is_retried(queue, monkeypatch):
    row = task("due")
    scheduler = new_scheduler()
    sync_task = celery_app.tasks[periodic_tasks.SYNC_TASK]

    def redis_gone(*args, **kwargs):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(sync_task, "apply_async", redis_gone)
    scheduler.tick()
    assert queue() == []
    fresh = PeriodicTask.objects.get(pk=row.pk)
    assert (fresh.last_run_at, fresh.total_run_count) == (row.last_run_at, 0)

    monkeypatch.undo()
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    time.sleep(0.3)
    scheduler.tick()
    assert queue() == ["due"]


def test_only_the_lease_holder_sends_and_the_standby_carries_on_from_the_written_runs(queue):
    task("due", seconds=3600)
    active, standby = new_scheduler(), new_scheduler()
    active.tick()
    standby.tick()
    assert queue() == ["due"]
    assert standby._entries == {}

    redis.Redis.from_url(settings.REDIS_URL).delete(LEASE_KEY)  # as if the active beat's lease lapsed
    standby.tick()
    assert len(standby._entries) >= 1
    assert queue() == []  # the run the active beat wrote counts: nothing is sent twice
    active.lease._renewed_at = None
    active.tick()
    assert active._entries == {}  # it lost the lease and stands by


def test_the_sweep_finds_rows_a_bulk_update_changed_without_date_changed(queue):
    row = task("bulk-enabled", enabled=False)
    scheduler = new_scheduler()
    scheduler.tick()
    # A row last saved long ago, switched on by a bulk update.
    PeriodicTask.objects.filter(pk=row.pk).update(enabled=True, last_run_at=LONG_AGO, date_changed=LONG_AGO)
    read_changes_now(scheduler)
    scheduler.tick()
    assert queue() == []  # invisible to the change read

    scheduler._next_sweep = 0.0
    read_changes_now(scheduler)
    scheduler.tick()
    assert queue() == ["bulk-enabled"]


def test_mark_schedules_changed_makes_a_bulk_update_visible_at_the_next_read(queue):
    row = task("bulk-enabled", enabled=False)
    scheduler = new_scheduler()
    scheduler.tick()
    changed = PeriodicTask.objects.filter(pk=row.pk)
    changed.update(enabled=True, last_run_at=LONG_AGO, date_changed=LONG_AGO)
    periodic_tasks.mark_schedules_changed(changed)
    read_changes_now(scheduler)
    scheduler.tick()
    assert queue() == ["bulk-enabled"]


def test_a_paused_beat_that_finds_the_lease_free_again_rereads_what_the_other_beat_wrote(queue):
    row = task("due", seconds=3600)
    paused, other = new_scheduler(), new_scheduler()
    paused.tick()
    assert queue() == ["due"]
    # The paused beat's lease lapses; the other beat holds it for a while, sends the task (an
    # interval later, as the backdated row says) and dies, its lease lapsing too.
    lease = redis.Redis.from_url(settings.REDIS_URL)
    lease.delete(LEASE_KEY)
    PeriodicTask.objects.filter(pk=row.pk).update(last_run_at=LONG_AGO)
    other.tick()
    assert queue() == ["due"]
    lease.delete(LEASE_KEY)
    # The paused beat wakes an interval later by its own reckoning and takes the free lease.
    entry = paused._entries[row.pk]
    entry.last_run_at = LONG_AGO
    paused._push(entry, time.time())
    paused.lease._renewed_at = None
    paused.tick()
    assert queue() == []  # it read the run the other beat wrote instead of sending it again
