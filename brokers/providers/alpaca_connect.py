"""Alpaca through Alpaca Connect (OAuth2): the trader signs in at Alpaca instead of typing API keys."""

from __future__ import annotations

from brokers.providers.alpaca import AlpacaProvider
from brokers.providers.oauth import OAuthProvider, reconnect_message
from brokers.providers.ratelimit import scope_for
from brokers.providers.types import AuthResult, OAuthSpec


class AlpacaConnectProvider(OAuthProvider, AlpacaProvider):
    """The same account and fill calls as AlpacaProvider, with the Connect token as a Bearer header."""

    key = "alpaca_connect"
    display_name = "Alpaca (Alpaca Connect)"
    credential_fields = ()
    oauth = OAuthSpec(
        authorize_url="https://app.alpaca.markets/oauth/authorize",
        token_url="https://api.alpaca.markets/oauth/token",
        # No scope: read-only access is what Alpaca grants by default, and all we need.
        scopes=(),
        # Alpaca documents no PKCE; a server without it ignores the parameters (RFC 7636 section 5).
        pkce=True,
        # Alpaca's token answer has no expiry and no refresh token: the token lasts until revoked.
        access_lifetime=None,
        refresh_lifetime=None,
        # Alpaca takes client_id and client_secret in the form body.
        client_auth="post",
    )

    def _session_headers(self, auth: AuthResult) -> tuple[dict[str, str], str]:
        # One token authorises one account (paper, live, or one of each): it names the limit's scope.
        return self.bearer(auth), scope_for(auth.token)

    def _refused(self, status: int) -> str:
        return reconnect_message(self.display_name, f"Alpaca refused the link (HTTP {status}).")


PROVIDERS = (AlpacaConnectProvider,)
