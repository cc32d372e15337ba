"""What the steps of one run share across workers: e.g. a report that every account reads.

A run's connection step and its account tasks run in different processes, possibly on
different machines; a report-style broker (IBKR Flex) must still be asked once per run.
Values live in Redis under the run's id for SYNC_RUN_CACHE_TTL_S, and one step at a time
produces a value while the others wait for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings

from telemetry.redis_client import redis_client

# How often a step waiting for another step's value looks again.
WAIT_POLL_S = 0.1


class RunCache:
    def __init__(self, run_id: str):
        self.key = f"run-cache:{run_id}"
        self.client = redis_client()

    def get(self, field: str) -> bytes | None:
        return self.client.hget(self.key, field)

    def fields(self) -> list[str]:
        return [f.decode() for f in self.client.hkeys(self.key)]

    def put(self, field: str, value: bytes | str) -> None:
        pipe = self.client.pipeline()
        pipe.hset(self.key, field, value)
        pipe.expire(self.key, settings.SYNC_RUN_CACHE_TTL_S)
        pipe.execute()

    def forget(self, field: str) -> None:
        self.client.hdel(self.key, field)

    def once(self, field: str, produce: Callable[[], bytes], *, max_s: float) -> bytes:
        """The field's value; produced by exactly one step at a time, the others wait for it.

        A producer that fails lets go of its claim, so a waiting step takes over; max_s bounds
        how long a claim lasts should its producer die without letting go.
        """
        claim = f"{self.key}:claim:{field}"
        while True:
            value = self.get(field)
            if value is not None:
                return value
            if self.client.set(claim, "1", nx=True, ex=max(1, int(max_s))):
                try:
                    value = produce()
                    self.put(field, value)
                    return value
                finally:
                    self.client.delete(claim)
            time.sleep(WAIT_POLL_S)
