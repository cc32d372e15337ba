"""Settings for the test suite: the real settings plus a private Redis and fixed test keys."""

import os
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# tests/conftest.py starts a real redis-server on this port for the session.
TEST_REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT") or _free_port())
os.environ["TEST_REDIS_PORT"] = str(TEST_REDIS_PORT)
os.environ.setdefault("REDIS_URL", f"redis://127.0.0.1:{TEST_REDIS_PORT}/0")
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "r4lAxdYTrVqD0mFkUJ9wXgKLu1F_LQpmTj4cM7CtW6E=")
os.environ.setdefault("LOG_FORMAT", "console")

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
# Eager retries only re-run when errors are not propagated; .get() still re-raises a failure.
CELERY_TASK_EAGER_PROPAGATES = False
BROKER_RATE_LIMIT_MAX_SLEEP_S = 0.5
# A file, not memory, so that real worker and beat processes can open the test database.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), f"tj-test-{os.getpid()}.sqlite3")}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Unit tests answer from `responses` at once; a request's resend need not wait a second.
BROKER_HTTP_RETRY_BACKOFF_S = 0.01
# Each test reads /readyz afresh (tests/test_hardening_probes.py turns the cache on to test it).
READINESS_CACHE_S = 0
