"""Reads about connections that several pages, the API and the commands share."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from brokers import periodic_tasks
from brokers.models import BrokerConnection


def periodic_tasks_for(connections) -> dict[str, PeriodicTask]:
    """The connections' PeriodicTasks by task name, in one query (pages, API and sync_status list many)."""
    return PeriodicTask.objects.in_bulk([periodic_tasks.task_name(c.pk) for c in connections], field_name="name")


def periodic_task_of(connection: BrokerConnection, tasks: dict[str, PeriodicTask]) -> PeriodicTask | None:
    return tasks.get(periodic_tasks.task_name(connection.pk))


def next_sync_at(connection: BrokerConnection, task: PeriodicTask | None = None) -> datetime | None:
    """When beat will next send this connection's sync (None when it will not)."""
    if not connection.schedule_active:
        return None
    task = task or PeriodicTask.objects.filter(name=periodic_tasks.task_name(connection.pk)).first()
    if task is None or not task.enabled:
        return None
    last = task.last_run_at or task.date_changed or timezone.now()
    return max(last + timedelta(seconds=periodic_tasks.interval_seconds(connection)), timezone.now())


def link_days_left(connection: BrokerConnection) -> int | None:
    """Whole days until an OAuth link's hard end (0 on its last day); None when it has none."""
    ends = connection.link_expires_at
    if ends is None or connection.credentials_rejected:
        return None
    return max(0, (ends - timezone.now()).days)


def connection_of_login(*, owner, broker_type: str, environment: str, account_ids) -> BrokerConnection | None:
    """The trader's connection that already holds one of these broker accounts: a sign-in listing them is
    the same broker login again (e.g. Schwab's account hash values), so it re-authorises that one."""
    return (
        BrokerConnection.objects.filter(
            owner=owner,
            broker_type=broker_type,
            environment=environment,
            accounts__external_id__in=list(account_ids),
        )
        .order_by("pk")
        .first()
    )
