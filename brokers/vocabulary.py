"""The words a trader reads about a connection: its status badge and the advice under its last error.

The one owner of both vocabularies: the brokers page, the status poll, the API, `sync_status`
and `/metrics` all read the badge from `display_status`; the page's advice comes from
`advice`. The error kinds themselves are the error tree's (brokers.providers.errors.ErrorKind).
"""

from __future__ import annotations

from django.db import models

from brokers.models import BrokerConnection
from brokers.providers.errors import ErrorKind


class DisplayStatus(models.TextChoices):
    """The badge: where the connection stands, at a glance."""

    NEW = "NEW", "never synced yet"
    SYNCING = "SYNCING", "a sync is running, or waits out a broker's limit (no failure)"
    RETRYING = "RETRYING", "an attempt failed; the next one is due at next_attempt_at"
    CONNECTED = "CONNECTED", "the last sync succeeded"
    PARTIAL = "PARTIAL", "the last sync succeeded, but an account failed"
    ERROR = "ERROR", "the last sync failed after its last attempt, or the credentials were refused"
    PAUSED = "PAUSED", "auto-sync is off and no sync is running"


def display_status(connection) -> DisplayStatus:
    """The badge of a connection (or of any object with its status fields, as /metrics groups them).

    A run in progress shows as SYNCING (or RETRYING) even with auto-sync off: a press of Sync
    now is running, and the trader, the API and /metrics all see that.
    """
    status = connection.status
    if status == BrokerConnection.Status.SYNCING:
        if connection.next_attempt_reason == BrokerConnection.NextAttempt.RETRY:
            return DisplayStatus.RETRYING
        return DisplayStatus.SYNCING
    if not connection.sync_enabled:
        return DisplayStatus.PAUSED
    if status == BrokerConnection.Status.ERROR:
        return DisplayStatus.ERROR
    if connection.last_sync_at is None:
        return DisplayStatus.NEW
    return DisplayStatus.PARTIAL if connection.last_sync_error else DisplayStatus.CONNECTED


# Failures on the broker's side that a later attempt usually gets past without the trader.
PASSING_KINDS = {ErrorKind.TIMEOUT, ErrorKind.UNAVAILABLE, ErrorKind.RATE_LIMIT, ErrorKind.DATABASE}


def advice(connection, last_error_kind: str) -> str:
    """What the trader should do about the connection's last error, from what kind of failure it was."""
    if connection.credentials_rejected and connection.signs_in_at_broker:
        return (
            f"The link to {connection.provider_name} has ended, so automatic sync is on hold. Press Reconnect "
            f"and sign in at {connection.provider_name} again: sync resumes at once, with the same history."
        )
    if connection.credentials_rejected:
        return (
            "The broker refused the saved credentials, so automatic sync is on hold. "
            "Edit the connection and save working credentials: sync resumes by itself."
        )
    if last_error_kind in PASSING_KINDS:
        return "This is usually temporary on the broker's side and the sync retries by itself."
    if last_error_kind == ErrorKind.SETUP:
        return "Sync tries again at each scheduled time, but it cannot work until the API key above is fixed."
    if last_error_kind == ErrorKind.ACCOUNT:
        return "Check this account's API permissions at the broker; the other accounts keep syncing."
    if last_error_kind in (ErrorKind.INTERNAL, ErrorKind.SUPERSEDED):
        return "Nothing to do on your side: the next sync runs at its usual time."
    return "Check the connection at the broker (API access, permissions), then press Sync now."


POSITION_ADVICE = (
    "Press Sync now: a fill the broker reports late clears this by itself. If it stays, compare this "
    "instrument's fills on the Trades page with the broker's statement: a position opened before the "
    "journal's history begins, a split or an assignment also shows here. The journal never adds or "
    "removes a fill to match the broker."
)


def holding(quantity: str, instrument: str) -> str:
    """A signed quantity as a trader says it: long 3 ESZ6, short 2 NQZ6, flat ESZ6."""
    if quantity.startswith("-"):
        return f"short {quantity[1:]} {instrument}"
    return f"long {quantity} {instrument}" if quantity != "0" else f"flat {instrument}"


def position_difference(record: dict, broker_name: str) -> str:
    """One instrument where the journal and the broker disagree, from the run's stored record."""
    journal = holding(record["journal"], record["instrument"])
    broker = holding(record["broker"], "").strip()
    return f"Journal: {journal} · {broker_name}: {broker} — a fill may be missing or doubled."


def session_not_synced(day, provider_name: str, still_readable: bool) -> str:
    """The card's warning for a trading day no sync read after its close (a broker with a short history)."""
    weekday = f"{day:%A}"
    if still_readable:
        return (
            f"{weekday}'s session has closed and no sync has read it since. {provider_name} returns only "
            f"the current trading day: press Sync now, or fills of {weekday} may be missing."
        )
    return (
        f"{weekday} was not synced after the close; fills of that day may be missing. Compare "
        f"{weekday}'s fills with {provider_name}'s statement and import the missing ones from it."
    )
