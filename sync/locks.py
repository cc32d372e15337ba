"""The run lock: one per connection in Redis, owned by the run's task id, kept alive by the run.

A run holds its connection's lock from start to finish, every wait included: while a step
works, a keep-alive thread renews it; while a task waits for its retry or a rate-limit
pause, the task extends it for the wait plus one TTL before it goes (sync.tasks). A run that
dies therefore frees its connection within one SYNC_LOCK_TTL_S, and a live one never loses it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

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


def holders(connection_ids: list[int], chunk: int = 1000) -> dict[int, str | None]:
    """The run holding each connection's lock (None: free), a thousand keys per round trip:
    the sweep checks every SYNCING connection, thousands of them at 100,000 connections."""
    found: dict[int, str | None] = {}
    for start in range(0, len(connection_ids), chunk):
        ids = connection_ids[start : start + chunk]
        values = redis_client().mget([lock_key(pk) for pk in ids])
        found.update({pk: v.decode() if v is not None else None for pk, v in zip(ids, values, strict=True)})
    return found


class _Keeper:
    """One thread per process that renews every lock its runs are working under, in one round trip.

    A thread per run would cost hundreds of threads on a threads worker running hundreds of
    syncs; one keeper renews them all with one pipeline each period. Prefork children start
    their own keeper: a thread does not survive the fork.
    """

    def __init__(self):
        self._mutex = threading.Lock()
        self._held: dict[tuple[int, str], int] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, connection_id: int, run_id: str) -> None:
        with self._mutex:
            key = (connection_id, run_id)
            # Two steps of one run in one process (an account per thread) share one entry.
            self._held[key] = self._held.get(key, 0) + 1
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="sync-lock-keeper", daemon=True)
                self._thread.start()

    def remove(self, connection_id: int, run_id: str) -> None:
        with self._mutex:
            key = (connection_id, run_id)
            if self._held.get(key, 0) <= 1:
                self._held.pop(key, None)
            else:
                self._held[key] -= 1

    def _run(self) -> None:
        renewed = time.monotonic()
        while True:
            # The period is read each second, so a TTL changed while the keeper sleeps (tests shrink
            # it) is honoured at once; a lock is renewed within a quarter TTL of being taken.
            time.sleep(min(1.0, settings.SYNC_LOCK_TTL_S / 4))
            if time.monotonic() - renewed < settings.SYNC_LOCK_TTL_S / 4:
                continue
            renewed = time.monotonic()
            with self._mutex:
                held = list(self._held)
            if held:
                self.renew(held)

    @staticmethod
    def renew(held: list[tuple[int, str]]) -> None:
        ttl_ms = int(settings.SYNC_LOCK_TTL_S * 1000)
        try:
            pipe = redis_client().pipeline(transaction=False)
            for connection_id, run_id in held:
                pipe.eval(_HOLD, 1, lock_key(connection_id), run_id, ttl_ms)
            pipe.execute()
        except redis.RedisError:
            # Redis is away for a moment: try again next period; the TTL covers three misses.
            log.warning("sync_lock_renewal_failed", locks=len(held))


_keeper = _Keeper()


@contextlib.contextmanager
def kept_alive(connection_id: int, run_id: str):
    """Renew the run's lock every quarter TTL while the block runs (slow calls, polls, sleeps).

    A thread rather than renewals between trades: a provider may wait minutes before its
    first trade (a report being generated, a limiter pause), and the lock must outlive that.
    """
    _keeper.add(connection_id, run_id)
    try:
        yield
    finally:
        _keeper.remove(connection_id, run_id)
