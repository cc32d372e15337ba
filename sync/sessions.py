"""Broker sessions a run reuses: the stored token, renewed only when needed, or a fresh login.

Logging in only when needed matters: Tradovate allows two sessions per user, and a login on
every sync would close the trader's own platform. Renewing only when needed matters too:
renewals spend the broker's auth budget. An OAuth session is renewed with its refresh token
even after its access token expired; when that is refused the trader must reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

from django.utils import timezone

from brokers.models import BrokerConnection
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError
from brokers.providers.oauth import expired_now
from brokers.providers.types import AuthResult

T = TypeVar("T")


def session(connection: BrokerConnection, provider: BrokerProvider) -> tuple[AuthResult, bool]:
    """A valid session and whether it was stored before (so a refusal may just mean it died early)."""
    now = timezone.now()
    auth = connection.auth
    reused = auth is not None
    if auth is not None and auth.expires_within(timedelta(0), now) and not auth.refresh_token:
        auth = None
    elif auth is not None and auth.expires_within(auth.renew_margin(provider.token_renew_margin), now):
        try:
            auth = _stamped(provider.refresh_token(auth), auth)
        except BrokerAuthError:
            if not auth.refresh_token:
                auth = None
            elif store(connection, None):
                # An OAuth link no login of ours can mend: its own reason reaches the trader.
                raise
            else:
                return session(connection, provider)
        if auth is not None and not store(connection, auth):
            return session(connection, provider)
    if auth is None:
        reused = False
        auth = _stamped(provider.authenticate(connection.broker_credentials()), None)
        if not store(connection, auth):
            return session(connection, provider)
    return auth, reused


def _stamped(new: AuthResult, old: AuthResult | None) -> AuthResult:
    """Mark when a session was obtained; a provider that returns the same session keeps its stamp."""
    if new.issued_at is not None:
        return new
    if old is not None and new.token == old.token and new.expires_at == old.expires_at:
        return replace(new, issued_at=old.issued_at)
    return replace(new, issued_at=timezone.now())


def store(connection: BrokerConnection, auth: AuthResult | None) -> bool:
    """Write the session, only if the stored one is still the one this run read; False if a Reconnect
    or new credentials replaced it meanwhile: then `connection` holds what is stored now, to be used
    instead (a run must not undo the trader's sign-in with the link it started with)."""
    read = connection.session_ciphertext
    connection.auth = auth
    if BrokerConnection.objects.filter(pk=connection.pk, session_ciphertext=read).update(
        session_ciphertext=connection.session_ciphertext
    ):
        return True
    connection.refresh_from_db(fields=["session_ciphertext", "credentials_ciphertext"])
    return False


def with_session(connection: BrokerConnection, provider: BrokerProvider, call: Callable[[AuthResult], T]) -> T:
    """call(session); if a stored session is refused, log in once more and call again."""
    auth, reused = session(connection, provider)
    try:
        return call(auth)
    except BrokerAuthError:
        if not reused:
            raise
        # The stored session died early (revoked, or the broker restarted): log in once more,
        # or with OAuth renew it, since the refresh token is all that can (oauth.OAuthProvider).
        # A session replaced meanwhile is not touched: session() takes it up.
        store(connection, expired_now(auth) if auth.refresh_token else None)
        auth, _ = session(connection, provider)
        return call(auth)
