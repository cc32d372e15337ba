"""The one retry policy of a run's steps (the connection step and each account): retry, pause or give up.

Celery tasks (sync.tasks) carry the decision out by re-queueing themselves; the inline runner
(manage.py sync_connection) by sleeping. Either way every wait holds the run's lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from django.conf import settings

from brokers.providers.errors import BrokerAuthError, BrokerRateLimitError
from sync.outcomes import is_transient

RETRY_JITTER = 0.10
# Rate-limit pauses are not failures, but a broker that never lets us in must end somewhere.
MAX_RATE_LIMIT_PAUSES = 20


def attempts_allowed() -> int:
    """Attempts per step: the first plus one per retry delay (4 with 1, 5, 15 minutes)."""
    return len(settings.SYNC_RETRY_DELAYS_S) + 1


def retry_delay(failures: int, retry_after: float | None = None) -> float:
    """The pause before the next attempt: the policy's step ±10%, or the broker's Retry-After if longer."""
    delays = settings.SYNC_RETRY_DELAYS_S
    base = delays[min(failures, len(delays)) - 1]
    delay = base * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    return max(delay, retry_after or 0)


@dataclass(frozen=True)
class Retry:
    """A failure a later attempt may not meet: try again after `countdown` seconds."""

    countdown: float


@dataclass(frozen=True)
class Pause:
    """The broker (or our limiter) says wait: continue after `countdown` s, no failure counted."""

    countdown: float


def next_step(exc: BaseException, *, failures: int, pauses: int, retries: bool = True) -> Retry | Pause | None:
    """What a step does after `exc`, given the failures and pauses of this step so far; None gives up.

    retries=False is a run with no scheduler to come back later (inline): it still waits out
    pauses, which are not failures, but a failure is final.
    """
    if isinstance(exc, BrokerAuthError):
        return None  # the trader must act: retrying the same credentials cannot help
    if isinstance(exc, BrokerRateLimitError):
        return Pause(exc.retry_after or 0.0) if pauses < MAX_RATE_LIMIT_PAUSES else None
    if retries and is_transient(exc) and failures + 1 < attempts_allowed():
        return Retry(retry_delay(failures + 1, getattr(exc, "retry_after", None)))
    return None
