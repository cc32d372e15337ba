"""The run lock: one per connection in Redis, owned by the run's task id, kept alive by the run.

A run holds its connection's lock from start to finish, every wait included: while a step
works, a keep-alive thread renews it; while a task waits for its retry or a rate-limit
pause, the task extends it for the wait plus one TTL before it goes (sync.tasks). A run that
dies therefore frees its connection within one SYNC_LOCK_TTL_S, and a live one never loses it.
"""

from __future__ import annotations

import contextlib
import threading

import redis
import structlog
from django.conf import settings

from telemetry.redis_client import redis_client

log = structlog.get_logger("sync.locks")

# Release only our own lock: a run that outlived its lock must not free someone else's.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

# Extend only our own lock, and never shorten it.
_HOLD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def lock_key(connection_id: int) -> str:
    return f"sync-lock:{connection_id}"


def acquire(connection_id: int, run_id: str) -> bool:
    """Take the connection's lock, or re-enter it when this same run holds it.

    Re-entry lets a message redelivered after its worker was killed finish the run it started.
    """
    if redis_client().set(lock_key(connection_id), run_id, nx=True, ex=settings.SYNC_LOCK_TTL_S):
        return True
    return hold(connection_id, run_id, settings.SYNC_LOCK_TTL_S)


def hold(connection_id: int, run_id: str, seconds: float) -> bool:
    """Keep the run's lock for at least `seconds` more; False when the lock is not this run's."""
    return bool(redis_client().eval(_HOLD, 1, lock_key(connection_id), run_id, int(seconds * 1000)))


def release(connection_id: int, run_id: str) -> None:
    if not redis_client().eval(_RELEASE, 1, lock_key(connection_id), run_id):
        log.warning("sync_lock_lost_before_release", connection_id=connection_id)


def holder(connection_id: int) -> str | None:
    value = redis_client().get(lock_key(connection_id))
    return value.decode() if value is not None else None


@contextlib.contextmanager
def kept_alive(connection_id: int, run_id: str):
    """Renew the run's lock every quarter TTL while the block runs (slow calls, polls, sleeps).

    A thread rather than renewals between trades: a provider may wait minutes before its
    first trade (a report being generated, a limiter pause), and the lock must outlive that.
    """
    stop = threading.Event()
    period = settings.SYNC_LOCK_TTL_S / 4

    def renew():
        while not stop.wait(period):
            try:
                hold(connection_id, run_id, settings.SYNC_LOCK_TTL_S)
            except redis.RedisError:
                # Redis is away for a moment: try again next period; the TTL covers three misses.
                log.warning("sync_lock_renewal_failed", connection_id=connection_id)

    thread = threading.Thread(target=renew, name=f"sync-lock-{connection_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
