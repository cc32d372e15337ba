"""Beat hardening (issue 25): a real beat survives a tick whose every due task vanished behind its back,
and django-celery-beat's own admin actions reach it at once; a crontab with a future start time keeps
its crontab (tick by tick, as tests/test_scheduler.py)."""

import time
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from brokers import periodic_tasks, services
from config.celery_app import app as celery_app
from sync.beat.scheduler import IncrementalScheduler
from tests.e2e.realprocess import BeatDispatches, celery_processes, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SLACK_S = 2.5


def long_untouched_connection(trader, label: str, interval: int, enabled: bool = True):
    """A connection whose schedule row was last saved long ago, behind 1,500 other rows: beat's change read
    does not see it, and its slow sweep takes over a minute to reach it."""
    every_hour = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)[0]
    first = PeriodicTask.objects.count()
    PeriodicTask.objects.bulk_create(
        PeriodicTask(
            name=f"filler-{first + n}", task="sync.tasks.close_interrupted_runs", interval=every_hour, enabled=False
        )
        for n in range(1500)
    )
    connection = services.connection_create(
        owner=trader,
        broker_type="demo",
        label=label,
        credentials={"api_key": "k"},
        sync_interval_min=interval,
        sync_enabled=enabled,
    )
    PeriodicTask.objects.filter(name=periodic_tasks.task_name(connection.pk)).update(
        date_changed=timezone.now() - timedelta(days=1)
    )
    return connection


@pytest.mark.realprocess
@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_beat_survives_a_tick_whose_every_due_task_was_disabled_behind_its_back(trader, tmp_path):
    c = long_untouched_connection(trader, "switched off by a bulk update", 5)
    name = periodic_tasks.task_name(c.pk)
    with BeatDispatches() as sent, celery_processes(tmp_path, worker=False) as processes:
        wait_for(lambda: sent.times(name), 5 + 2 * SLACK_S, message="the first dispatch")
        # No save(), no signal: beat learns of it only when the row falls due and is checked.
        PeriodicTask.objects.filter(name=name).update(enabled=False)
        switched_off = time.time()
        time.sleep(5 + 2 * SLACK_S)
        log = (tmp_path / "beat.log").read_text()
        assert processes["beat"].poll() is None, log[-3000:]
        assert "Traceback" not in log
        assert sent.times(name, after=switched_off + SLACK_S) == []


@pytest.mark.realprocess
@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_the_admins_enable_and_toggle_actions_reach_a_running_beat_at_once(trader, tmp_path, django_user_model, client):
    enabled_by_action = long_untouched_connection(trader, "enabled in the admin", 5, enabled=False)
    toggled_by_action = long_untouched_connection(trader, "toggled in the admin", 5, enabled=False)
    rows = {
        action: PeriodicTask.objects.get(name=periodic_tasks.task_name(c.pk)).pk
        for action, c in (("enable_tasks", enabled_by_action), ("toggle_tasks", toggled_by_action))
    }
    client.force_login(django_user_model.objects.create_superuser("operator", password="operator-password-1"))
    with BeatDispatches() as sent, celery_processes(tmp_path, worker=False):
        wait_for(lambda: "holding the lease" in (tmp_path / "beat.log").read_text(), 20, message="beat's lease")
        acted_at = time.time()
        for action, pk in rows.items():
            response = client.post(
                "/admin/django_celery_beat/periodictask/", {"action": action, ACTION_CHECKBOX_NAME: [pk]}
            )
            assert response.status_code == 302
        for c in (enabled_by_action, toggled_by_action):
            name = periodic_tasks.task_name(c.pk)
            wait_for(lambda name=name: sent.times(name, after=acted_at), 5 + 2 * SLACK_S, message=f"{name} sent")


def test_a_crontab_with_a_future_start_time_first_runs_on_its_crontab_not_at_the_start_time():
    on_the_hour = CrontabSchedule.objects.create(minute="0", hour="*", timezone="UTC")
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=2)
    if start.minute == 0:
        start += timedelta(minutes=1)
    row = PeriodicTask.objects.create(
        name="hourly-from-soon", task="sync.tasks.close_interrupted_runs", crontab=on_the_hour, start_time=start
    )
    scheduler = IncrementalScheduler(app=celery_app, max_interval=0.2)
    scheduler.tick()

    first_hour_after_start = start.replace(minute=0) + timedelta(hours=1)
    assert scheduler._entries[row.pk].due_at == pytest.approx(first_hour_after_start.timestamp(), abs=1)
