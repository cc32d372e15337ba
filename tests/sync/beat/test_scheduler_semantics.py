"""django-celery-beat's scheduling semantics, held by our scheduler.

Our scheduler replaces django-celery-beat's DatabaseScheduler but keeps its tables, so an admin
who edits a PeriodicTask must get what django-celery-beat documents and its own scheduler tests
check: start times, one-off and clocked tasks, expiry, a schedule's type or definition changed
in place, crontabs in their own time zone, disabling and enabling again, and the message options
(queue, priority, headers, expiry) a task is sent with. Each test below states one of those
behaviours in an admin's terms and runs our scheduler tick by tick on the test database and Redis.
"""

import json
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from brokers import periodic_tasks
from config.celery_app import app as celery_app
from tests.sync.beat.test_scheduler import LONG_AGO, every, new_scheduler, read_changes_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def messages():
    client = redis.Redis.from_url(settings.REDIS_URL)

    def sent(queue: str = celery_app.conf.task_default_queue) -> list[dict]:
        """The messages beat put on a queue since the last call, oldest first.

        Redis keeps a queue's prioritised messages under the queue's name plus kombu's priority suffix.
        """
        found = []
        for key in [queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))]:
            while raw := client.rpop(key):
                found.append(json.loads(raw))
        return found

    return sent


def names(messages: list[dict]) -> list[str]:
    return [message["headers"]["periodic_task_name"] for message in messages]


def task(name: str, *, last_run_at=LONG_AGO, **fields) -> PeriodicTask:
    fields.setdefault("interval", every(60))
    row = PeriodicTask.objects.create(name=name, task=periodic_tasks.SYNC_TASK, kwargs='{"connection_id": 1}', **fields)
    PeriodicTask.objects.filter(pk=row.pk).update(last_run_at=last_run_at)
    row.refresh_from_db()
    return row


def test_an_interval_task_waits_for_its_start_time_and_one_started_already_runs_at_once(messages):
    task("starts-in-an-hour", last_run_at=None, start_time=timezone.now() + timedelta(hours=1))
    task("started-yesterday", last_run_at=None, start_time=timezone.now() - timedelta(days=1))
    scheduler = new_scheduler()

    scheduler.tick()

    assert names(messages()) == ["started-yesterday"]
    waiting = PeriodicTask.objects.get(name="starts-in-an-hour")
    assert scheduler._entries[waiting.pk].due_at == pytest.approx(waiting.start_time.timestamp(), abs=1)


def test_a_clocked_task_runs_once_at_its_time_and_is_then_disabled(messages):
    passed = ClockedSchedule.objects.create(clocked_time=timezone.now() - timedelta(seconds=1))
    later = ClockedSchedule.objects.create(clocked_time=timezone.now() + timedelta(hours=1))
    task("at-a-time-passed", interval=None, clocked=passed, one_off=True, last_run_at=None)
    task("at-a-time-to-come", interval=None, clocked=later, one_off=True, last_run_at=None)
    scheduler = new_scheduler()

    scheduler.tick()
    time.sleep(0.3)
    read_changes_now(scheduler)
    scheduler.tick()

    assert names(messages()) == ["at-a-time-passed"]
    assert PeriodicTask.objects.get(name="at-a-time-passed").enabled is False
    assert PeriodicTask.objects.get(name="at-a-time-to-come").enabled is True


def test_a_task_switched_off_and_on_again_in_the_admin_runs_again(messages):
    row = task("toggled", interval=every(1))
    scheduler = new_scheduler()
    scheduler.tick()
    assert names(messages()) == ["toggled"]

    row.refresh_from_db()
    row.enabled = False
    row.save()
    read_changes_now(scheduler)
    time.sleep(1.1)
    scheduler.tick()
    assert messages() == []

    row.enabled = True
    row.save()
    read_changes_now(scheduler)
    scheduler.tick()
    # Switching off cleared its last run, so (as in django-celery-beat) it counts from being switched on.
    assert messages() == []
    time.sleep(1.1)
    scheduler.tick()
    assert names(messages()) == ["toggled"]


def test_a_task_moved_from_an_interval_to_a_crontab_follows_the_crontab(messages):
    row = task("moved", interval=every(3600), last_run_at=timezone.now())
    scheduler = new_scheduler()
    scheduler.tick()
    assert messages() == []

    row.refresh_from_db()
    row.interval = None
    row.crontab = CrontabSchedule.objects.create(minute="*", hour="*", timezone="UTC")
    row.save()
    PeriodicTask.objects.filter(pk=row.pk).update(last_run_at=timezone.now() - timedelta(minutes=2))
    read_changes_now(scheduler)
    scheduler._next_sweep = 0.0  # the last run was written by a bulk update: the sweep reads it
    scheduler.tick()

    assert names(messages()) == ["moved"]
    next_minute = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert scheduler._entries[row.pk].due_at == pytest.approx(next_minute.timestamp(), abs=1)


def test_an_interval_edited_in_place_reschedules_every_task_that_uses_it(messages):
    hourly = IntervalSchedule.objects.create(every=3600, period=IntervalSchedule.SECONDS)
    task("a", interval=hourly, last_run_at=timezone.now() - timedelta(seconds=10))
    task("b", interval=hourly, last_run_at=timezone.now() - timedelta(seconds=10))
    scheduler = new_scheduler()
    scheduler.tick()
    assert messages() == []

    hourly.every = 5
    hourly.save()  # moves PeriodicTasks.last_update, as the admin's schedule form does
    read_changes_now(scheduler)
    scheduler.tick()

    assert sorted(names(messages())) == ["a", "b"]


def test_a_crontab_in_new_york_time_is_due_at_that_hour_in_new_york(messages):
    new_york = ZoneInfo("America/New_York")
    local_now = datetime.now(new_york)
    # Two hours ahead in New York, whatever the offset to UTC is that day (daylight saving or not).
    at = (local_now + timedelta(hours=2)).replace(minute=30, second=0, microsecond=0)
    crontab = CrontabSchedule.objects.create(minute="30", hour=str(at.hour), timezone="America/New_York")
    row = task("new-york-morning", interval=None, crontab=crontab, last_run_at=timezone.now())
    scheduler = new_scheduler()

    scheduler.tick()

    assert messages() == []
    assert scheduler._entries[row.pk].due_at == pytest.approx(at.timestamp(), abs=1)


def test_a_crontab_whose_start_time_is_past_its_time_today_first_runs_the_next_day(messages):
    at_noon = CrontabSchedule.objects.create(minute="0", hour="12", timezone="UTC")
    today_noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    start = today_noon + timedelta(days=1, hours=1)  # tomorrow 13:00, after tomorrow's noon
    row = task("noon", interval=None, crontab=at_noon, last_run_at=None, start_time=start)
    scheduler = new_scheduler()

    scheduler.tick()

    assert messages() == []
    assert scheduler._entries[row.pk].due_at == pytest.approx((today_noon + timedelta(days=2)).timestamp(), abs=1)


def test_a_task_is_sent_with_the_queue_priority_headers_and_expiry_set_in_the_admin(messages):
    task(
        "routed",
        queue="imports",
        priority=7,
        headers=json.dumps({"requested_by": "operator"}),
        expire_seconds=120,
    )
    scheduler = new_scheduler()

    scheduler.tick()

    assert messages() == []
    [message] = messages("imports")
    headers = message["headers"]
    assert headers["periodic_task_name"] == "routed"
    assert headers["requested_by"] == "operator"
    assert message["properties"]["priority"] == 7
    assert headers["expires"] is not None
    expires = datetime.fromisoformat(headers["expires"])
    assert timedelta(seconds=110) < expires - timezone.now() <= timedelta(seconds=120)


def test_a_task_with_unreadable_arguments_is_skipped_and_the_others_still_run(messages):
    PeriodicTask.objects.create(name="broken", task=periodic_tasks.SYNC_TASK, interval=every(60), kwargs="{not json")
    task("fine")
    scheduler = new_scheduler()

    scheduler.tick()

    assert names(messages()) == ["fine"]


def test_schedules_celery_cannot_compute_are_skipped_and_beat_sends_the_rest(messages):
    # A solar schedule needs the optional ephem package; a crontab minute of 75 got round the admin's checks.
    sunrise = SolarSchedule.objects.create(event="sunrise", latitude=51.5, longitude=-0.1)
    impossible = CrontabSchedule.objects.create(minute="75", hour="*", timezone="UTC")
    task("at-sunrise", interval=None, solar=sunrise)
    task("at-minute-75", interval=None, crontab=impossible)
    task("fine")
    scheduler = new_scheduler()

    scheduler.tick()

    assert names(messages()) == ["fine"]
    assert {entry.name for entry in scheduler._entries.values()} >= {"fine"}
    assert not {"at-sunrise", "at-minute-75"} & {entry.name for entry in scheduler._entries.values()}
