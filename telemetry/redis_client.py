"""The one way every layer reaches Redis: one client per address and process, one timeout policy."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings
from redis.asyncio import Redis as AsyncRedis

# Every Redis call is a key read, a hash increment or a short Lua script: a server that has not
# answered within this is down or stuck, and the caller's own failure path is better than a hang.
TIMEOUT_S = 5


@cache
def _client_for(url: str) -> redis.Redis:
    # redis-py's pool notices a fork and opens new connections in the child, so one cached
    # client per process is safe under Celery's prefork pool and thread-safe under threads.
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


def redis_client() -> redis.Redis:
    """The shared client for settings.REDIS_URL (read each call, so a test's own server is honoured)."""
    return _client_for(settings.REDIS_URL)


def async_redis_client() -> AsyncRedis:
    """A new asyncio client with the same timeouts (an event loop owns its connections)."""
    return AsyncRedis.from_url(settings.REDIS_URL, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
