"""gunicorn's settings (`gunicorn -c config/gunicorn.py config.wsgi`): its log lines in our format too."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings  # noqa: E402  (needs the settings module above)

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
accesslog = "-"
# gunicorn's error and access lines go through Django's LOGGING (JSON in production, see config/logging.py).
logconfig_dict = settings.LOGGING

# The app is loaded once in the master and the workers fork from it, sharing what it built.
preload_app = True


def when_ready(server):
    """In the master, before any worker forks: the exchanges' calendars, so no first calendar page waits a second."""
    import time

    from brokers.sessions import warm

    started = time.monotonic()
    warm()
    server.log.info("exchange calendars built in %.1f s, before the workers fork", time.monotonic() - started)
