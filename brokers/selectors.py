"""Reads about connections that several pages, the API and the commands share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from brokers import periodic_tasks, sessions
from brokers.models import READ_NO_BROKER, BrokerConnection, SyncLog
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class


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


@dataclass(frozen=True)
class UnsyncedSession:
    """The last trading day of a short-history broker that no successful sync read after its close."""

    day: date
    closed_at: datetime
    # True while the broker still returns that day's fills: a sync now saves them.
    still_readable: bool


def unsynced_session(connection: BrokerConnection, now: datetime | None = None) -> UnsyncedSession | None:
    """The broker's last closed session if no successful run started after its close within the broker's reach.

    Only for brokers that declare a short history_reach and the calendar they trade on
    (Tradovate); a session that closed before the connection existed is not judged.
    """
    try:
        provider = get_provider_class(connection.broker_type)
    except BrokerConfigurationError:
        return None
    if not (provider.history_reach and provider.session_calendar):
        return None
    now = now or timezone.now()
    latest = sessions.last_close(provider.session_calendar, now)
    if latest is None or latest[1] < connection.created_at:
        return None
    day, closed_at = latest
    reach_ends = closed_at + provider.reach()
    read = (
        SyncLog.objects.filter(
            connection=connection,
            status__in=(SyncLog.Status.SUCCESS, SyncLog.Status.PARTIAL),
            started_at__gte=closed_at,
            started_at__lt=reach_ends,
        )
        .exclude(trigger__in=READ_NO_BROKER)
        .exists()
    )
    return None if read else UnsyncedSession(day, closed_at, now < reach_ends)


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
