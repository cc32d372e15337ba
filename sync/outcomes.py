"""What a trader reads about a run: what happened (from the error) and what happens next.

Providers word what happened; this module adds what happens next, in one voice for every
path (task, inline command): retrying, pausing for a broker's limit, or giving up.
"""

from __future__ import annotations

from collections import Counter

from django.db import InterfaceError, OperationalError

from brokers.providers.errors import BrokerError, BrokerRateLimitError, ErrorKind

UNEXPECTED_ERROR = (
    "The sync stopped on an unexpected error on our side. It will run again at the next "
    "interval; if this keeps happening, please report it."
)
DATABASE_ERROR = "The journal's database did not answer."
# The journal's own database going away for a moment is as transient as a broker outage.
DATABASE_ERRORS = (OperationalError, InterfaceError)
INTERRUPTED = (
    "This sync was interrupted (its worker stopped) and did not resume. Nothing was lost: "
    "the next sync fetches everything since the last completed one."
)
SUPERSEDED = "A newer sync of this connection took over before this account was fetched; it fetches it instead."


class RunSuperseded(Exception):
    """An account task of a run whose connection another run now holds."""

    def __init__(self):
        super().__init__(SUPERSEDED)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_ERRORS) or (isinstance(exc, BrokerError) and exc.transient)


def what_happened(exc: BaseException) -> tuple[str, ErrorKind]:
    """The message and kind of a failure, as a trader reads it."""
    if isinstance(exc, BrokerError):
        return exc.message, exc.kind
    if isinstance(exc, RunSuperseded):
        return str(exc), ErrorKind.SUPERSEDED
    if isinstance(exc, DATABASE_ERRORS):
        return DATABASE_ERROR, ErrorKind.DATABASE
    return UNEXPECTED_ERROR, ErrorKind.INTERNAL


def about(seconds: float) -> str:
    """A wait as a trader says it: "about 40 s", "about 5 min", "about 2 h"."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {round(seconds / 3600)} h"


def retrying(exc: BaseException, failed_attempt: int, attempts: int, where: str = "") -> str:
    message, _ = what_happened(exc)
    return f"Attempt {failed_attempt} of {attempts} failed{where}: {message} Retrying automatically."


def pausing(exc: BrokerRateLimitError, wait_s: float, where: str = "") -> str:
    return f"{exc.message} The sync{where} pauses and continues automatically in {about(wait_s)}."


def given_up(exc: BaseException, attempts: int) -> str:
    """The final word on a failure, once no retry follows."""
    message, _ = what_happened(exc)
    if isinstance(exc, BrokerRateLimitError):
        return f"{message} It kept asking us to wait; the next scheduled sync will try again."
    if not is_transient(exc):
        return message
    if attempts > 1:
        return f"{message} All {attempts} attempts failed; the next scheduled sync will try again."
    return f"{message} The next scheduled sync will try again."


# A run's message names this many different reasons for unreadable rows; the detail keeps them all.
REASONS_SHOWN = 3


def unreadable(reasons: list[str]) -> str:
    """'skipped 3 rows we could not read: no symbol (2), dateTime '2024' is in no known format'."""
    counts = Counter(reasons)
    named = [f"{reason} ({n})" if n > 1 else reason for reason, n in counts.most_common(REASONS_SHOWN)]
    more = " …" if len(counts) > REASONS_SHOWN else ""
    rows = "row" if len(reasons) == 1 else "rows"
    return f"skipped {len(reasons)} {rows} we could not read: {'; '.join(named)}{more}"
