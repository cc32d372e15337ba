"""Beat's heartbeat: the time of its last dispatch, kept in Redis for /readyz, /metrics and check_beat.

Beat sends at least the minute's housekeeping task, so a live beat refreshes the key at least
once a minute; its start writes the key too, since the first due message may be a minute
away. The key is written from the beat process only: at its start (celery_app's beat_init) and
by the scheduler (sync/beat/) after every batch it sends.
"""

from __future__ import annotations

import time

from telemetry.redis_client import redis_client

# A float: Unix seconds of the last message beat sent.
LAST_DISPATCH_KEY = "tj:beat:last_dispatch_at"


def record_dispatch(at: float | None = None) -> None:
    redis_client().set(LAST_DISPATCH_KEY, repr(time.time() if at is None else at))


def last_dispatch_at() -> float | None:
    value = redis_client().get(LAST_DISPATCH_KEY)
    return float(value) if value is not None else None


def seconds_since_dispatch() -> float | None:
    """None when beat has never dispatched (against this Redis)."""
    at = last_dispatch_at()
    return None if at is None else max(0.0, time.time() - at)
