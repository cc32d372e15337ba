"""Real beat processes (our scheduler, a 3 s lease) on the test database and Redis; no worker: the test
reads what beat sends off the queue. Intervals are in seconds (SYNC_INTERVAL_UNIT=seconds)."""

import random
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from brokers import periodic_tasks, services
from brokers.models import BrokerConnection
from config.celery_app import app as celery_app
from tests import factories
from tests.e2e.realprocess import BeatDispatches, celery_processes, kill9, start_process, stop, wait_for

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def real_queue(monkeypatch):
    """The syncs a new or resumed connection queues at once go to Redis too (and are not beat's)."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


# How late a dispatch may arrive after it is due: a beat loop (1 s here), a change read (1 s), a
# queue pop (0.2 s). A dispatch sent late does not delay the next one, so two may also come this
# much closer than an interval; a repeat (two sends for one due) would come within a second.
SLACK_S = 2.5


def connection(trader, label: str, interval: int, enabled: bool = True) -> BrokerConnection:
    return factories.connection(trader, label=label, sync_interval_min=interval, sync_enabled=enabled)


def name(c: BrokerConnection) -> str:
    return periodic_tasks.task_name(c.pk)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def assert_spaced(times: list[float], interval: float, what: str) -> None:
    """No repeat, and no gap longer than one interval plus slack (a lost dispatch)."""
    for gap in gaps(times):
        assert interval - SLACK_S <= gap <= interval + SLACK_S, f"{what}: gaps {gaps(times)}, interval {interval}"


@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_every_kind_of_change_reaches_a_running_beat_and_takes_effect_once(trader, tmp_path):
    paused = connection(trader, "paused later", 5)
    retimed = connection(trader, "retimed later", 5)
    deleted = connection(trader, "deleted later", 5)
    with BeatDispatches() as sent, celery_processes(tmp_path, worker=False):
        created = connection(trader, "created while running", 5)
        created_at = time.time()
        wait_for(lambda: sent.times(name(created)), 5 + SLACK_S, message="the new schedule's first dispatch")
        # One interval after it was created, as django-celery-beat does.
        assert sent.times(name(created))[0] - created_at >= 5 - SLACK_S

        changed_at = time.time()
        services.update_sync_enabled(paused.pk, False)
        services.update_sync_interval(retimed.pk, 8)
        services.connection_delete(deleted.pk)
        crontab = CrontabSchedule.objects.create(minute="*", hour="*")
        PeriodicTask.objects.create(name="each-minute", task="sync.tasks.close_interrupted_runs", crontab=crontab)
        # Last run two minutes ago, so it is due at once: that it is sent shows beat read it.
        PeriodicTask.objects.filter(name="each-minute").update(last_run_at=timezone.now() - timedelta(minutes=2))
        # Long enough for the retimed schedule's next run (one 8 s interval after its last one, at
        # most 8 s from now) to arrive, however late in its old interval the change came.
        time.sleep(8 + SLACK_S + 1)

        settled = changed_at + SLACK_S
        assert sent.times(name(paused), after=settled) == []
        assert sent.times(name(deleted), after=settled) == []
        retimed_times = sent.times(name(retimed), after=settled)
        assert 1 <= len(retimed_times) <= 2
        assert_spaced(retimed_times, 8, "retimed")
        each_minute = sent.times("each-minute", after=changed_at)
        assert each_minute, "the crontab entry was never sent"
        assert len({int(t // 60) for t in each_minute}) == len(each_minute), f"sent twice in a minute: {each_minute}"

        resumed_at = time.time()
        services.update_sync_enabled(paused.pk, True)
        wait_for(lambda: sent.times(name(paused), after=resumed_at), 5 + 2 * SLACK_S, message="the resumed schedule")
        # save() cleared its last run when it was paused: the next run is one interval after resuming.
        assert sent.times(name(paused), after=resumed_at)[0] - resumed_at >= 5 - 0.6
        assert_spaced(sent.times(name(created)), 5, "created, throughout")


@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_the_standby_takes_over_after_kill_9_and_a_restarted_beat_neither_loses_nor_repeats(trader, tmp_path):
    connections = [connection(trader, f"Demo {n}", 5) for n in range(6)]
    with BeatDispatches() as sent, celery_processes(tmp_path, worker=False, standby_beat=True) as processes:
        wait_for(lambda: all(sent.times(name(c)) for c in connections), 15, message="a first round")
        active = (
            processes["beat"]
            if "holding the lease" in (tmp_path / "beat.log").read_text()
            else (processes["beat-standby"])
        )
        kill9(active)
        killed_at = time.time()
        # The lease lapses 3 s after its last renewal; the standby polls every second.
        wait_for(
            lambda: all(sent.times(name(c), after=killed_at + 0.5) for c in connections),
            3 + 1 + 5 + SLACK_S,
            message="the standby sending every schedule",
        )
        time.sleep(3)
        takeover_s = min(sent.times(name(c), after=killed_at + 0.5)[0] for c in connections) - killed_at
        assert takeover_s <= 3 + 1 + 5 + SLACK_S
        # One interval plus the lease's TTL at most between two sends across the takeover, never a repeat.
        for c in connections:
            times = sent.times(name(c))
            assert all(5 - SLACK_S <= gap <= 5 + 3 + 1 + SLACK_S for gap in gaps(times)), f"{c.label}: {gaps(times)}"

        # A beat started again (on the killed one's log) stands by: still one dispatch per interval.
        restarted = start_process(tmp_path, "beat" if active is processes["beat"] else "beat-standby")
        try:
            restarted_at = time.time()
            time.sleep(6)
            for c in connections:
                assert_spaced(sent.times(name(c), after=restarted_at - 5), 5, c.label)
        finally:
            stop(restarted)


@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_after_a_churn_of_random_changes_beat_sends_exactly_what_reconcile_says(trader, tmp_path):
    rng = random.Random(11)
    connections = [connection(trader, f"Demo {n}", rng.choice((5, 6))) for n in range(12)]
    with BeatDispatches() as sent, celery_processes(tmp_path, worker=False):
        for _ in range(30):
            c = rng.choice(connections)
            if rng.random() < 0.5:
                services.update_sync_enabled(c.pk, rng.random() < 0.6)
            else:
                services.update_sync_interval(c.pk, rng.choice((5, 6)))
            time.sleep(0.1)
        # The database is the truth beat must follow: reconcile finds nothing to repair in it...
        assert periodic_tasks.reconcile() == {"created": [], "updated": [], "deleted": []}
        settled = time.time() + SLACK_S
        time.sleep(SLACK_S + 6 + SLACK_S)
        # ...and beat sends every enabled schedule on its interval, and nothing else.
        for c in BrokerConnection.objects.filter(pk__in=[c.pk for c in connections]):
            times = sent.times(name(c), after=settled)
            if c.schedule_active:
                assert times, f"{c.label} (every {c.sync_interval_min} s) was not sent"
                assert_spaced(times, c.sync_interval_min, c.label)
            else:
                assert times == [], f"{c.label} is switched off but was sent"
