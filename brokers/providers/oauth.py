"""OAuth2 authorization-code sign-in for providers whose traders connect at the broker's own page.

Authlib builds the authorization URL, the PKCE challenge and reads the token answer; the token
requests themselves go through the provider's BrokerHTTP, so the rate limiter, the timeouts, the
log lines without secrets and the error mapping apply to them like to every other call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749 import OAuth2Token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from django.conf import settings

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError
from brokers.providers.types import AuthResult, BrokerCredentials

# The limiter bucket token requests book (each OAuth provider has it in rate_limits.toml).
AUTH_BUCKETS = ("auth",)


@dataclass(frozen=True)
class OAuthApp:
    """The operator's registered app at one broker, from the environment."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    authorize_url: str
    token_url: str


def app_for(provider_class: type[BrokerProvider]) -> OAuthApp | None:
    """The configured app, or None when this installation has not set one up."""
    spec = provider_class.oauth
    configured = settings.BROKER_OAUTH_APPS.get(provider_class.key)
    if spec is None or not configured or not configured.get("client_id") or not settings.OAUTH_CALLBACK_URL:
        return None
    return OAuthApp(
        client_id=configured["client_id"],
        client_secret=configured.get("client_secret", ""),
        redirect_uri=settings.OAUTH_CALLBACK_URL,
        authorize_url=configured.get("authorize_url") or spec.authorize_url,
        token_url=configured.get("token_url") or spec.token_url,
    )


def setup_variables(provider_class: type[BrokerProvider]) -> list[str]:
    """The environment variables an operator sets to offer this broker's sign-in."""
    prefix = provider_class.key.upper()
    return [f"{prefix}_CLIENT_ID", f"{prefix}_CLIENT_SECRET", "OAUTH_CALLBACK_URL"]


def new_state() -> str:
    return generate_token(43)


def new_code_verifier() -> str:
    # RFC 7636: 43 to 128 characters of the unreserved set; generate_token uses letters and digits.
    return generate_token(64)


def authorization_url(provider_class: type[BrokerProvider], app: OAuthApp, state: str, code_verifier: str) -> str:
    spec = provider_class.oauth
    extra = {}
    if spec.pkce:
        extra = {"code_challenge": create_s256_code_challenge(code_verifier), "code_challenge_method": "S256"}
    return prepare_grant_uri(
        app.authorize_url,
        app.client_id,
        "code",
        redirect_uri=app.redirect_uri,
        scope=" ".join(spec.scopes) or None,
        state=state,
        **extra,
    )


def exchange_code(provider: BrokerProvider, app: OAuthApp, code: str, code_verifier: str) -> AuthResult:
    """Trade the code from the callback for tokens; BrokerAuthError when the broker refuses it."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri}
    if provider.oauth.pkce:
        data["code_verifier"] = code_verifier
    token = _token_request(provider, app, data, refused="The sign-in code was refused (it expired or was used).")
    now = datetime.now(UTC)
    lifetime = provider.oauth.refresh_lifetime
    return _session(provider, token, refresh_expires_at=now + lifetime if lifetime else None, old_refresh="", extra={})


def refresh(provider: BrokerProvider, app: OAuthApp | None, auth: AuthResult) -> AuthResult:
    """A new access token from the refresh token; BrokerAuthError when only a new sign-in helps."""
    name = provider.display_name
    if not auth.refresh_token and auth.expires_at is None:
        return auth  # a token that lasts until revoked (Alpaca Connect) needs no renewal
    if app is None:
        raise BrokerAuthError(
            f"Signing in with {name} is not set up on this installation any more; ask the operator.",
            provider=provider.key,
        )
    if not auth.refresh_token:
        raise BrokerAuthError(reconnect_message(name, "The link has no refresh token."), provider=provider.key)
    ends = auth.refresh_expires_at
    if ends is not None and ends <= datetime.now(UTC):
        raise BrokerAuthError(
            reconnect_message(name, f"The link ended on {ends:%Y-%m-%d %H:%M} UTC ({name} ends it after a set time)."),
            provider=provider.key,
        )
    token = _token_request(
        provider,
        app,
        {"grant_type": "refresh_token", "refresh_token": auth.refresh_token},
        refused=f"{name} refused to renew the link.",
    )
    # The hard end counts from the trader's consent, not from each renewal.
    return _session(provider, token, refresh_expires_at=ends, old_refresh=auth.refresh_token, extra=auth.extra)


def reconnect_message(display_name: str, what: str) -> str:
    return f"{what} Press Reconnect and sign in at {display_name} again; your trades and history stay."


def _token_request(provider: BrokerProvider, app: OAuthApp, data: dict, *, refused: str) -> OAuth2Token:
    kwargs = {"data": data, "headers": {"Accept": "application/json"}}
    if provider.oauth.client_auth == "basic":
        kwargs["auth"] = (app.client_id, app.client_secret)
    else:
        data.update(client_id=app.client_id, client_secret=app.client_secret)
    response = provider.http.request("POST", app.token_url, buckets=AUTH_BUCKETS, allow_statuses=(400, 401), **kwargs)
    body = provider.http.json(response)
    if response.status_code == 401 or (isinstance(body, dict) and body.get("error") == "invalid_client"):
        raise BrokerAuthError(
            f"{provider.display_name} did not accept this installation's app (invalid client); "
            "the operator must check its client ID and secret.",
            provider=provider.key,
            status_code=response.status_code,
        )
    if response.status_code == 400:
        raise BrokerAuthError(reconnect_message(provider.display_name, refused), provider=provider.key, status_code=400)
    if not isinstance(body, dict) or not body.get("access_token"):
        raise provider.unreadable("a token answer")
    return OAuth2Token.from_dict(body)


def _session(
    provider: OAuthProvider, token: OAuth2Token, *, refresh_expires_at, old_refresh: str, extra: Mapping[str, Any]
) -> AuthResult:
    now = datetime.now(UTC)
    lifetime = provider.oauth.access_lifetime
    if token.get("expires_at"):
        expires_at = datetime.fromtimestamp(token["expires_at"], UTC)
    else:
        expires_at = now + lifetime if lifetime else None
    return AuthResult(
        token=token["access_token"],
        expires_at=expires_at,
        issued_at=now,
        refresh_token=token.get("refresh_token") or old_refresh,
        refresh_expires_at=refresh_expires_at,
        extra={**extra, **provider.token_extra(token)},
    )


class OAuthProvider(BrokerProvider):
    """A provider whose traders connect by signing in at the broker: no typed credentials.

    The first session comes from the callback (exchange_code); after it the engine renews the
    access token with refresh_token(). A lost link cannot be mended by a login of ours.
    """

    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        raise BrokerAuthError(
            reconnect_message(self.display_name, f"The link to {self.display_name} is no longer valid."),
            provider=self.key,
        )

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        return refresh(self, app_for(type(self)), auth)

    def token_extra(self, token: Mapping[str, Any]) -> dict[str, Any]:
        """What the session keeps from a token answer beyond the OAuth fields (e.g. Tradovate's hosts)."""
        return {}

    def bearer(self, auth: AuthResult) -> dict[str, str]:
        return {"Authorization": f"Bearer {auth.token}"}


def expired_now(auth: AuthResult) -> AuthResult:
    """The same link with its access token marked spent, so the next session renews it."""
    return replace(auth, expires_at=datetime.now(UTC) - timedelta(seconds=1))
