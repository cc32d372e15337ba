"""A rate limiter shared by every worker and process, kept in Redis, configured per broker.

Each bucket allows at most `limit` calls in any `window_s` seconds (a sliding-window log,
so the limit holds for every window, not just aligned ones). The check and the booking run
in one Lua script on Redis' own clock, so concurrent workers on different machines can
neither overshoot together nor disagree about time. A broker's own "wait" (Retry-After, a
Tradovate penalty ticket, Flex code 1018) is recorded with `block()`, so that every other
worker backs off too.
"""

from __future__ import annotations

import hashlib
import math
import time
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import redis
import structlog
from django.conf import settings

from brokers.providers.errors import BrokerConfigurationError, BrokerRateLimitError
from brokers.providers.types import RateLimit
from telemetry import counters
from telemetry.redis_client import redis_client

LIMITS_FILE = Path(__file__).resolve().parent.parent / "rate_limits.toml"
log = structlog.get_logger("brokers.ratelimit")

# KEYS: block keys, then one sorted set per bucket, then the sequence key.
# ARGV: number of block keys, number of buckets, then (limit, window_us) per bucket, then the
# call's weight (slots it takes: 1, or a ccxt endpoint's cost; never more than a bucket holds).
# Returns the microseconds to wait, 0 when the slots were booked in every bucket.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nblock = tonumber(ARGV[1])
local nbucket = tonumber(ARGV[2])
local weight = tonumber(ARGV[3 + 2 * nbucket])
local wait = 0
for i = 1, nblock do
  local until_us = tonumber(redis.call('GET', KEYS[i]) or '0')
  if until_us > now then wait = math.max(wait, until_us - now) end
end
for j = 1, nbucket do
  local key = KEYS[nblock + j]
  local limit = tonumber(ARGV[1 + 2 * j])
  local window = tonumber(ARGV[2 + 2 * j])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local need = math.min(weight, limit)
  if count + need > limit then
    local oldest = redis.call('ZRANGE', key, count + need - limit - 1, count + need - limit - 1, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 then return wait end
local seq = redis.call('INCR', KEYS[nblock + nbucket + 1])
for j = 1, nbucket do
  local key = KEYS[nblock + j]
  local window = tonumber(ARGV[2 + 2 * j])
  for w = 1, math.min(weight, tonumber(ARGV[1 + 2 * j])) do
    redis.call('ZADD', key, now, now .. ':' .. seq .. ':' .. w)
  end
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1000)
end
return 0
"""

# KEYS[1]: the block key. ARGV[1]: seconds. Only ever pushes the deadline later.
_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + math.floor(tonumber(ARGV[1]) * 1000000)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_us > current then
  redis.call('SET', KEYS[1], until_us, 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return until_us
"""


def load_limits(path: Path = LIMITS_FILE, overrides: dict | None = None) -> dict[str, tuple[RateLimit, ...]]:
    """Read the limits file, apply settings overrides, and check every number."""
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    for broker, buckets in (overrides or {}).items():
        for name, values in _tables(path, broker, buckets).items():
            raw.setdefault(broker, {}).setdefault(name, {}).update(_table(f"{path.name} [{broker}.{name}]", values))
    limits = {}
    for broker, buckets in raw.items():
        parsed = []
        for name, values in _tables(path, broker, buckets).items():
            where = f"{path.name} [{broker}.{name}]"
            values = _table(where, values)
            limit, window_s = values.get("limit"), values.get("window_s")
            per_credential = values.get("per_credential", False)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise BrokerConfigurationError(f"{where}: limit must be a whole number >= 1, got {limit!r}.")
            if (
                not isinstance(window_s, (int, float))
                or isinstance(window_s, bool)
                or not math.isfinite(window_s)
                or window_s <= 0
            ):
                raise BrokerConfigurationError(f"{where}: window_s must be a number of seconds > 0, got {window_s!r}.")
            if not isinstance(per_credential, bool):
                raise BrokerConfigurationError(
                    f"{where}: per_credential must be true or false, got {per_credential!r}."
                )
            parsed.append(RateLimit(name, limit, float(window_s), per_credential))
        limits[broker] = tuple(parsed)
    return limits


def _tables(path: Path, broker: str, buckets) -> dict:
    if not isinstance(buckets, dict):
        raise BrokerConfigurationError(
            f"{path.name} [{broker}]: expected bucket tables such as [{broker}.requests], got {buckets!r}."
        )
    return buckets


def _table(where: str, values) -> dict:
    if not isinstance(values, dict):
        raise BrokerConfigurationError(f"{where}: expected a table with limit and window_s, got {values!r}.")
    return values


def capped_wait(seconds: float) -> float:
    """A wait a broker asked for, between 0 and BROKER_RETRY_AFTER_MAX_S seconds."""
    return min(max(0.0, float(seconds)), settings.BROKER_RETRY_AFTER_MAX_S)


def scope_for(secret_or_id: str) -> str:
    """A stable, non-reversible name for a credential, fit for a Redis key."""
    return hashlib.sha256(secret_or_id.encode()).hexdigest()[:16]


# Whose budget a call spends: one credential's name for every per-credential bucket, or a
# name per bucket when a broker counts two ways at once (SnapTrade: per API key and per account).
Scope = str | Mapping[str, str]


def _scopes(scope: Scope) -> list[str]:
    """The distinct credential names in a scope, each of which a broker's block can hold back."""
    values = scope.values() if isinstance(scope, Mapping) else [scope]
    return sorted({v for v in values if v})


class RateLimiter:
    def __init__(self, client: redis.Redis, limits: dict[str, tuple[RateLimit, ...]], max_sleep_s: float):
        self.client = client
        self.limits = limits
        self.max_sleep_s = max_sleep_s
        self._acquire = client.register_script(_ACQUIRE)
        self._block = client.register_script(_BLOCK)

    def buckets_for(self, broker: str, names: tuple[str, ...] | None = None) -> tuple[RateLimit, ...]:
        if broker not in self.limits:
            raise BrokerConfigurationError(
                f"No rate limits for broker {broker!r}: add a [{broker}.<bucket>] table to {LIMITS_FILE.name}."
            )
        buckets = self.limits[broker]
        if names is None:
            return buckets
        unknown = set(names) - {b.name for b in buckets}
        if unknown:
            raise BrokerConfigurationError(f"{LIMITS_FILE.name} has no bucket {sorted(unknown)} for broker {broker!r}.")
        return tuple(b for b in buckets if b.name in names)

    def _keys(self, broker, buckets, scope: Scope):
        def scope_of(bucket: RateLimit) -> str:
            return (
                (scope.get(bucket.name, "") if isinstance(scope, Mapping) else scope) if bucket.per_credential else ""
            )

        bucket_keys = [f"rl:{broker}:{b.name}" + (f":{scope_of(b)}" if scope_of(b) else "") for b in buckets]
        block_keys = [f"rl:block:{broker}"] + [f"rl:block:{broker}:{s}" for s in _scopes(scope)]
        return block_keys, bucket_keys

    def try_acquire(
        self, broker: str, *, scope: Scope = "", buckets: tuple[str, ...] | None = None, weight: int = 1
    ) -> float:
        """Book `weight` slots if every bucket has room; otherwise return the seconds to wait."""
        chosen = self.buckets_for(broker, buckets)
        block_keys, bucket_keys = self._keys(broker, chosen, scope)
        args = [len(block_keys), len(chosen)]
        for bucket in chosen:
            args += [bucket.limit, int(bucket.window_s * 1_000_000)]
        args.append(max(1, int(weight)))
        wait_us = self._acquire(keys=[*block_keys, *bucket_keys, f"rl:seq:{broker}"], args=args)
        return int(wait_us) / 1_000_000

    def acquire(
        self,
        broker: str,
        *,
        scope: Scope = "",
        buckets: tuple[str, ...] | None = None,
        display_name: str = "",
        weight: int = 1,
    ) -> None:
        """Wait a moment for a slot, or raise BrokerRateLimitError so the run pauses.

        The error keeps the broker's own reason when a block() is what holds us back (a
        captcha, a 429), so every run that meets the block says why, not just the first.
        """
        waited = 0.0
        while True:
            wait = self.try_acquire(broker, scope=scope, buckets=buckets, weight=weight)
            if wait == 0:
                return
            counters.rate_limit_waited(bucket=broker, seconds=wait)
            if waited + wait > self.max_sleep_s:
                log.info("rate_limit_wait_requeue", broker=broker, retry_after_s=round(wait, 3))
                reason = self._block_reason(broker, scope) or (
                    f"We are pacing requests to {display_name or broker} to stay within its limits."
                )
                raise BrokerRateLimitError(reason, provider=broker, retry_after=wait)
            time.sleep(wait)
            waited += wait

    def _block_reason(self, broker: str, scope: Scope) -> str:
        keys = [f"rl:reason:{broker}"] + [f"rl:reason:{broker}:{s}" for s in _scopes(scope)]
        reasons = [r.decode() for r in self.client.mget(keys) if r]
        return reasons[-1] if reasons else ""

    def block(self, broker: str, seconds: float, *, scope: Scope = "", reason: str = "") -> None:
        """Make every worker wait `seconds` before the next call to this broker (or credential).

        A scope naming several credentials blocks each of them. reason is what the broker
        said, in a trader's words; runs that meet the block repeat it.
        """
        seconds = capped_wait(seconds)
        for suffix in [f":{s}" for s in _scopes(scope)] or [""]:
            self._block(keys=[f"rl:block:{broker}{suffix}"], args=[seconds])
            if reason:
                self.client.set(f"rl:reason:{broker}{suffix}", reason, px=math.ceil(seconds * 1000) + 1000)
        log.warning("rate_limit_block", broker=broker, seconds=round(seconds, 3), per_credential=bool(_scopes(scope)))


def blocked(
    limits_key: str, reason: str, wait: float, *, provider: str, scope: Scope = "", status_code: int | None = None
) -> BrokerRateLimitError:
    """The broker said wait: every worker backs off for `wait` (with its reason), and the step pauses on the error."""
    get_limiter().block(limits_key, wait, scope=scope, reason=reason)
    return BrokerRateLimitError(reason, provider=provider, status_code=status_code, retry_after=wait)


@cache
def get_limiter() -> RateLimiter:
    return RateLimiter(
        redis_client(),
        load_limits(overrides=settings.BROKER_RATE_LIMITS),
        settings.BROKER_RATE_LIMIT_MAX_SLEEP_S,
    )
