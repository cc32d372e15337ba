"""Beat's heartbeat: the time of its last dispatch, kept in Redis for /readyz, /metrics and check_beat.

Beat sends at least the minute's housekeeping task, so a live beat refreshes the key at least
once a minute; its start writes the key too, since the first due message may be a minute
away. The key is written from the beat process only (celery_app connects the signals).
"""

from __future__ import annotations

import time

import redis
from django.conf import settings

# A float: Unix seconds of the last message beat sent.
LAST_DISPATCH_KEY = "tj:beat:last_dispatch_at"


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def record_dispatch(at: float | None = None) -> None:
    _client().set(LAST_DISPATCH_KEY, repr(time.time() if at is None else at))


def last_dispatch_at() -> float | None:
    value = _client().get(LAST_DISPATCH_KEY)
    return float(value) if value is not None else None


def seconds_since_dispatch() -> float | None:
    """None when beat has never dispatched (against this Redis)."""
    at = last_dispatch_at()
    return None if at is None else max(0.0, time.time() - at)
