"""The Celery application: workers and beat load the Django settings through it."""

import logging.config
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tradejournal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.celeryd_init.connect
@signals.setup_logging.connect
def use_django_logging(**kwargs):
    """Connected, this replaces Celery's own set-up: its lines render like everyone else's (config/logging.py).

    celeryd_init comes before the worker's first warnings (e.g. about running as root), so
    those are JSON lines too.
    """
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@signals.beat_init.connect
def mark_beat_process(sender=None, **kwargs):
    """Beat's start counts as its first sign of life: its first due message may be a minute away.

    After that sync.beat.scheduler refreshes the heartbeat once per batch it sends (a Redis write per
    message would cost more than the rest of a send).
    """
    from telemetry import heartbeat

    heartbeat.record_dispatch()


@signals.task_prerun.connect
def fresh_log_context(**kwargs):
    """A task's log lines carry its own context only: on the threads pool a thread runs task after
    task, and whatever an earlier task left bound in its context would follow into the next."""
    import structlog

    structlog.contextvars.clear_contextvars()
