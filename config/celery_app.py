"""The Celery application: workers and beat load the Django settings through it."""

import logging.config
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tradejournal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def use_django_logging(**kwargs):
    """Connected, this replaces Celery's own set-up: its lines render like everyone else's (config/logging.py)."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


_in_beat = False


@signals.beat_init.connect
def mark_beat_process(sender=None, **kwargs):
    global _in_beat
    _in_beat = True


@signals.after_task_publish.connect
def beat_heartbeat(sender=None, **kwargs):
    """In the beat process, every message sent refreshes beat's heartbeat (config/beat.py)."""
    if _in_beat:
        from config import beat

        beat.record_dispatch()
