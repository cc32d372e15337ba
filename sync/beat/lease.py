"""The beat lease in Redis: of the beats running, only the holder dispatches; a standby takes over when it lapses.

The holder renews the lease on every tick (at most once a second) and dispatches only while its
last successful renewal is younger than the TTL minus a safety margin. A standby can take the
lease only once it has expired in Redis, at least one full TTL after the holder's last renewal,
so the two dispatch windows never overlap (a holder paused longer than the margin finds its
window closed and renews before it sends anything).
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import redis

LEASE_KEY = "beat:lease"
RENEW_EVERY_S = 1.0

# Renew the lease if it is ours (1), take it if it is free (2), or neither (0).
_ACQUIRE_OR_RENEW = """
local holder = redis.call('get', KEYS[1])
local outcome = 0
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  outcome = 1
elseif not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  outcome = 2
else
  return 0
end
return outcome
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class BeatLease:
    def __init__(self, client: redis.Redis, ttl_s: float):
        self.client = client
        self.ttl_s = ttl_s
        # A third of the TTL: how long a pause between a renewal and a send may last safely.
        self.margin_s = ttl_s / 3
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._acquire_or_renew = client.register_script(_ACQUIRE_OR_RENEW)
        self._release = client.register_script(_RELEASE)
        self._renewed_at: float | None = None  # monotonic time a successful renewal started
        # Set when the lease was taken afresh rather than renewed: another beat may have held it
        # in between and written runs this one has not seen.
        self.taken_afresh = False

    def hold(self) -> bool:
        """Acquire or renew (at most once a second); True while this beat may dispatch."""
        now = time.monotonic()
        if self._renewed_at is not None and now - self._renewed_at < RENEW_EVERY_S:
            return self.valid()
        try:
            held = self._acquire_or_renew(keys=[LEASE_KEY], args=[self.holder, int(self.ttl_s * 1000)])
        except redis.RedisError:
            held = 0
        self._renewed_at = now if held else None
        self.taken_afresh = self.taken_afresh or held == 2
        return bool(held)

    def valid(self) -> bool:
        """True while the last renewal is recent enough that no other beat can hold the lease."""
        return self._renewed_at is not None and time.monotonic() - self._renewed_at < self.ttl_s - self.margin_s

    def release(self) -> None:
        """Give the lease up at shutdown, so the standby need not wait for the TTL."""
        self._renewed_at = None
        try:
            self._release(keys=[LEASE_KEY], args=[self.holder])
        except redis.RedisError:
            pass
