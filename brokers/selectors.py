"""Reads about connections that several pages, the API and the commands share."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from brokers import schedules
from brokers.models import BrokerConnection


def connection_display_status(connection: BrokerConnection) -> str:
    """The badge a trader sees: PAUSED when auto-sync is off, else the stored status."""
    if not connection.sync_enabled and connection.status != BrokerConnection.Status.SYNCING:
        return "PAUSED"
    return connection.status


def next_sync_at(connection: BrokerConnection, task: PeriodicTask | None = None) -> datetime | None:
    """When beat will next send this connection's sync (None when it will not)."""
    if not connection.schedule_active:
        return None
    task = task or PeriodicTask.objects.filter(name=schedules.task_name(connection.pk)).first()
    if task is None or not task.enabled:
        return None
    last = task.last_run_at or task.date_changed or timezone.now()
    return max(last + timedelta(seconds=schedules.interval_seconds(connection)), timezone.now())
