"""Tell traders when sync keeps failing, when their credentials need them, and when it recovers.

Each notice is sent once per episode: on the run that reaches the failure threshold, on the
run that finds the credentials refused, and on the first success after a notified failure.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from brokers.models import BrokerConnection
from brokers.providers.registry import get_provider_class
from sync.models import Notice

log = structlog.get_logger("sync.notifications")


def _notify(connection: BrokerConnection, kind: str, subject: str, message: str) -> None:
    Notice.objects.create(owner=connection.owner, connection=connection, kind=kind, message=message)
    email = connection.owner.email
    if not email:
        return

    def send():
        try:
            # One line: a label saved before line breaks were refused would make the header invalid.
            send_mail(" ".join(subject.split()), message, None, [email])
        except Exception:
            # A mail server outage must not turn a sync outcome into a crash; the notice is on the dashboard.
            log.exception("notice_email_failed", connection_id=connection.pk, kind=kind)

    transaction.on_commit(send)


def run_failed(connection: BrokerConnection, failures: int, message: str) -> None:
    """Called after a failed run with the new count of consecutive failed runs."""
    if failures != settings.SYNC_FAILURE_NOTIFY_AFTER:
        return
    _notify(
        connection,
        Notice.Kind.REPEATED_FAILURE,
        f"Sync of {connection.label} keeps failing",
        f"The last {failures} syncs of {connection.label} ({connection.provider_name}) failed, so your "
        f"journal may be missing recent trades.\n\nLast error: {message}\n\nWe keep trying at every "
        "interval and will tell you when it works again.",
    )


def credentials_refused(connection: BrokerConnection, message: str) -> None:
    name = connection.provider_name
    if connection.signs_in_at_broker:
        subject = f"{connection.label}: the link to {name} has ended"
        text = (
            f"The link of {connection.label} to {name} has ended.\n\n{message}\n\nAutomatic sync is paused "
            f"until you press Reconnect on the brokers page and sign in at {name} again; it resumes at once, "
            "with your trades and history kept."
        )
    else:
        subject = f"{connection.label}: the broker refused your credentials"
        text = (
            f"{name} refused the credentials of {connection.label}.\n\n{message}\n\n"
            "Automatic sync is paused until you save new credentials on the brokers page; it resumes by itself then."
        )
    _notify(connection, Notice.Kind.CREDENTIALS, subject, text)


# Notices whose cause a successful run removes: they leave the page by themselves then.
RESOLVED_BY_SUCCESS = (Notice.Kind.REPEATED_FAILURE, Notice.Kind.CREDENTIALS)


def run_succeeded(connection: BrokerConnection, failures_before: int) -> None:
    if not failures_before:
        # The notices a success resolves come only with a failed run, which counts a failure
        # (run_failed, credentials_refused): after a success none of them is open.
        return
    # A success proves the credentials work and the failures are over: those notices are resolved
    # (they leave the page as if dismissed); the recovery notice below says what happened.
    Notice.objects.filter(connection=connection, kind__in=RESOLVED_BY_SUCCESS, dismissed_at__isnull=True).update(
        dismissed_at=timezone.now()
    )
    if failures_before < settings.SYNC_FAILURE_NOTIFY_AFTER:
        return
    _notify(
        connection,
        Notice.Kind.RECOVERED,
        f"Sync of {connection.label} works again",
        f"{connection.label} ({connection.provider_name}) synced successfully after {failures_before} failed "
        "runs. Trades missed meanwhile were fetched as far as the broker's history allows.",
    )


def credentials_expiring(connection: BrokerConnection) -> None:
    """Warn once, a week or so ahead, when the trader's own credentials (e.g. a Flex token) lapse."""
    if not get_provider_class(connection.broker_type).credentials_expire:
        return
    auth = connection.auth
    if auth is None or auth.expires_at is None:
        return
    warn_from = auth.expires_at - timedelta(days=settings.SYNC_CREDENTIAL_EXPIRY_WARNING_DAYS)
    now = timezone.now()
    if not warn_from <= now < auth.expires_at:
        return
    if Notice.objects.filter(connection=connection, kind=Notice.Kind.CREDENTIALS_EXPIRING, created_at__gte=warn_from):
        return
    _notify(
        connection,
        Notice.Kind.CREDENTIALS_EXPIRING,
        f"{connection.label}: credentials expire on {auth.expires_at:%Y-%m-%d}",
        f"The credentials of {connection.label} ({connection.provider_name}) expire on "
        f"{auth.expires_at:%Y-%m-%d %H:%M} UTC. Create new ones at the broker and save them on the "
        "connection's page before then, or syncing stops.",
    )


def link_expiring(connection: BrokerConnection) -> None:
    """Warn OAUTH_LINK_EXPIRY_WARNING_DAYS before an OAuth link's hard end, and again on its last day.

    Each warning goes once: it is skipped when a notice was already sent since its moment came.
    """
    ends = connection.link_expires_at
    now = timezone.now()
    if ends is None or now >= ends:
        return
    moments = [ends - timedelta(days=settings.OAUTH_LINK_EXPIRY_WARNING_DAYS), ends - timedelta(days=1)]
    due = [m for m in moments if m <= now]
    if not due:
        return
    if Notice.objects.filter(connection=connection, kind=Notice.Kind.LINK_EXPIRING, created_at__gte=max(due)):
        return
    name = connection.provider_name
    _notify(
        connection,
        Notice.Kind.LINK_EXPIRING,
        f"{connection.label}: the link to {name} ends on {ends:%Y-%m-%d}",
        f"{name} ends the link of {connection.label} on {ends:%Y-%m-%d %H:%M} UTC and asks you to sign in again "
        "then. Press Reconnect on the brokers page before that and sign in at "
        f"{name}: the connection keeps its accounts, trades and history, and syncing goes on without a gap.",
    )
