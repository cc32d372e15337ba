"""gunicorn's settings (`gunicorn -c config/gunicorn.py config.wsgi`): its log lines in our format too."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings  # noqa: E402  (needs the settings module above)

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
accesslog = "-"
# gunicorn's error and access lines go through Django's LOGGING (JSON in production, see config/logging.py).
logconfig_dict = settings.LOGGING
