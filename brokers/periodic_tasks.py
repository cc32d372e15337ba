"""One django-celery-beat PeriodicTask per connection, kept in step with the connection.

Called from the services inside their transaction, so a connection and its schedule
change together or not at all. The task carries only the connection id, never a secret.
"""

from __future__ import annotations

import json
import uuid

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from brokers.models import BrokerConnection, SyncLog

SYNC_TASK = "sync.tasks.sync_connection"
TASK_NAME_PREFIX = "broker-sync:"


def task_name(connection_id: int) -> str:
    return f"{TASK_NAME_PREFIX}{connection_id}"


def _period() -> str:
    return IntervalSchedule.SECONDS if settings.SYNC_INTERVAL_UNIT == "seconds" else IntervalSchedule.MINUTES


def interval_seconds(connection) -> int:
    """The connection's interval in seconds (the unit is shortened to seconds in real-process tests)."""
    return connection.sync_interval_min * (1 if settings.SYNC_INTERVAL_UNIT == "seconds" else 60)


def ensure_interval_schedules() -> None:
    """Create the shared schedules for every allowed interval once.

    IntervalSchedule has no unique constraint, so concurrent get_or_create calls could
    make duplicates; creating them all up front (migration, start-up command) avoids it.
    """
    period = _period()
    existing = set(IntervalSchedule.objects.filter(period=period).values_list("every", flat=True))
    IntervalSchedule.objects.bulk_create(
        IntervalSchedule(every=n, period=period)
        for n in range(settings.SYNC_INTERVAL_SHORTEST_MIN, settings.SYNC_INTERVAL_LONGEST_MIN + 1)
        if n not in existing
    )


def interval_schedule(minutes: int) -> IntervalSchedule:
    period = _period()
    schedule = IntervalSchedule.objects.filter(every=minutes, period=period).order_by("id").first()
    if schedule is None:
        ensure_interval_schedules()
        schedule = IntervalSchedule.objects.filter(every=minutes, period=period).order_by("id").first()
    return schedule


def sync_schedule(connection) -> PeriodicTask:
    """Create or update the connection's PeriodicTask to match it."""
    task, _ = PeriodicTask.objects.update_or_create(
        name=task_name(connection.pk),
        defaults={
            "task": SYNC_TASK,
            "interval": interval_schedule(connection.sync_interval_min),
            "crontab": None,
            "kwargs": json.dumps({"connection_id": connection.pk}),
            "enabled": connection.schedule_active,
            # A message beat sent but no worker took within one interval is stale: the next is due.
            "expire_seconds": interval_seconds(connection),
            "description": f"Automatic sync of {connection.label} ({connection.broker_type})",
        },
    )
    return task


def delete_schedule(connection_id: int) -> None:
    PeriodicTask.objects.filter(name=task_name(connection_id)).delete()


def mark_schedules_changed(tasks=None) -> None:
    """Tell beat about bulk writes that bypass PeriodicTask.save(): pass the rows they touched.

    Beat (sync.beat.scheduler) reads rows by date_changed, which only save() moves; stamping it here
    makes a bulk write visible within a second instead of at the next sweep.
    """
    if tasks is not None:
        tasks.update(date_changed=timezone.now())
    PeriodicTasks.update_changed()


def request_sync_now(connection_id: int, trigger: str = SyncLog.Trigger.MANUAL, task_id: str | None = None) -> str:
    """Queue a sync once the current transaction commits; returns the run's task id.

    By task name: brokers does not import sync.
    """
    task_id = task_id or str(uuid.uuid4())
    task = current_app.tasks[SYNC_TASK]
    transaction.on_commit(
        lambda: task.apply_async(kwargs={"connection_id": connection_id, "trigger": trigger}, task_id=task_id)
    )
    return task_id


def reconcile() -> dict[str, list[str]]:
    """Find and repair drift between connections and their PeriodicTasks; say what changed.

    Drift comes from hand edits in the admin's PeriodicTask pages, restored backups, or a
    crash between two writes outside the services. Missing tasks are created, wrong ones
    re-pointed, orphans (no connection) deleted.
    """
    changes: dict[str, list[str]] = {"created": [], "updated": [], "deleted": []}
    tasks = {
        t.name: t for t in PeriodicTask.objects.filter(name__startswith=TASK_NAME_PREFIX).select_related("interval")
    }
    for connection in BrokerConnection.objects.all():
        name = task_name(connection.pk)
        task = tasks.pop(name, None)
        if task is None:
            sync_schedule(connection)
            changes["created"].append(name)
        elif not _matches(task, connection):
            sync_schedule(connection)
            changes["updated"].append(name)
    for name, task in tasks.items():
        task.delete()
        changes["deleted"].append(name)
    if any(changes.values()):
        mark_schedules_changed()
    return changes


def _matches(task: PeriodicTask, connection) -> bool:
    return (
        task.task == SYNC_TASK
        and task.crontab_id is None
        and task.interval is not None
        and task.interval.every == connection.sync_interval_min
        and task.interval.period == _period()
        and task.enabled == connection.schedule_active
        and json.loads(task.kwargs or "{}") == {"connection_id": connection.pk}
        and task.args in ("[]", "")
        and task.expire_seconds == interval_seconds(connection)
    )
