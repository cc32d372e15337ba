"""Tradovate through its OAuth sign-in: the trader signs in at Tradovate instead of typing API keys.

The same account, fill and order calls as TradovateProvider, with the sign-in's access token, on
the organisation hosts the code exchange (or a renewal) names in apiHosts.
Tradovate issues no refresh token here (UNCONFIRMED), so the token is renewed through
/auth/renewaccesstoken like a password session, and a token that lapsed unrenewed (auto-sync
off for longer than its life) needs a new sign-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from brokers.providers.errors import BrokerAuthError
from brokers.providers.oauth import OAuthProvider, reconnect_message
from brokers.providers.tradovate import TradovateProvider, api_hosts
from brokers.providers.types import AuthResult, OAuthSpec


class TradovateSigninProvider(OAuthProvider, TradovateProvider):
    key = "tradovate_signin"
    display_name = "Tradovate (sign in at Tradovate)"
    # Tradovate's limits count per caller IP, whichever way a trader connected.
    limits_key = "tradovate"
    credential_fields = ()
    oauth = OAuthSpec(
        # Both endpoints UNCONFIRMED (docs/brokers/tradovate.md); the operator can point
        # TRADOVATE_SIGNIN_OAUTH_AUTHORIZE_URL / _TOKEN_URL elsewhere.
        authorize_url="https://trader.tradovate.com/oauth",
        token_url="https://live.tradovateapi.com/auth/oauthtoken",
        # Tradovate documents no PKCE; a server without it ignores the parameters (RFC 7636 section 5).
        pkce=True,
        # The token's life when the answer does not say, as for password sessions (80-90 minutes).
        access_lifetime=timedelta(minutes=80),
        refresh_lifetime=None,
        client_auth="post",
    )

    def token_extra(self, token: Mapping[str, Any]) -> dict[str, Any]:
        # The code exchange is where a signed-in connection learns its organisation's hosts.
        hosts = api_hosts(token)
        return {"api_hosts": hosts} if hosts else {}

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        if auth.refresh_token:
            return super().refresh_token(auth)
        try:
            return TradovateProvider.refresh_token(self, auth)
        except BrokerAuthError:
            raise BrokerAuthError(
                reconnect_message(self.display_name, "Tradovate would not renew the sign-in."), provider=self.key
            ) from None


PROVIDERS = (TradovateSigninProvider,)
