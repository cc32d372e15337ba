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


_in_beat = False


@signals.beat_init.connect
def mark_beat_process(sender=None, **kwargs):
    """Beat's start counts as its first sign of life: its first due message may be a minute away."""
    global _in_beat
    _in_beat = True
    from config import beat

    beat.record_dispatch()


@signals.after_task_publish.connect
def beat_heartbeat(sender=None, **kwargs):
    """In the beat process, every message sent refreshes beat's heartbeat (config/beat.py)."""
    if _in_beat:
        from config import beat

        beat.record_dispatch()
