"""A loopback Charles Schwab: its OAuth2 authorization server and the Trader API calls we use.

The consent page has Allow and Deny links back to the redirect_uri; the token endpoint checks
the app's HTTP Basic credentials, the redirect_uri, single use and lifetime of codes and PKCE
(S256); refresh tokens end hard `refresh_lifetime_s` after consent, as Schwab's 7 days do.
Payloads follow Schwab's documented shapes (accountNumbers, transactions with transferItems, an
account with fields=positions: long and short quantities summed from its TRADE transactions).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode

from tests.fakes.loopback import LoopbackServer, Reply

CLIENT_ID = "sim-schwab-app"
CLIENT_SECRET = "sim-schwab-secret"
ACCOUNTS = [("12345678", "HASH-A1B2C3D4E5F6"), ("87654321", "HASH-F6E5D4C3B2A1")]


@dataclass
class _Code:
    redirect_uri: str
    challenge: str
    issued: float
    used: bool = False


@dataclass
class _Grant:
    ends: float  # the refresh token's hard end
    access: set[str] = field(default_factory=set)


class SchwabSim(LoopbackServer):
    def __init__(self, *, access_lifetime_s: int = 1800, refresh_lifetime_s: int = 7 * 86400, code_lifetime_s=30):
        super().__init__()
        self.access_lifetime_s = access_lifetime_s
        self.refresh_lifetime_s = refresh_lifetime_s
        self.code_lifetime_s = code_lifetime_s
        self.codes: dict[str, _Code] = {}
        self.grants: dict[str, _Grant] = {}  # refresh token -> grant
        self.access: dict[str, float] = {}  # access token -> expiry
        self.transactions: dict[str, list[dict]] = {h: [] for _, h in ACCOUNTS}
        self.refreshes = 0
        self.route("GET", "/v1/oauth/authorize", self._authorize)
        self.route("GET", "/v1/oauth/decide", self._decide)
        self.route("POST", "/v1/oauth/token", self._token)
        self.route("GET", "/trader/v1/accounts/accountNumbers", self._account_numbers)
        for _, hash_value in ACCOUNTS:
            self.route("GET", f"/trader/v1/accounts/{hash_value}/transactions", self._transactions(hash_value))
            self.route("GET", f"/trader/v1/accounts/{hash_value}", self._positions(hash_value))

    @property
    def authorize_url(self) -> str:
        return f"{self.url}/v1/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/v1/oauth/token"

    @property
    def api_url(self) -> str:
        return f"{self.url}/trader/v1"

    def end_every_link(self) -> None:
        """Schwab's hard end reached: every refresh token is refused from now on."""
        with self.lock:
            for grant in self.grants.values():
                grant.ends = 0

    # --- the consent page -------------------------------------------------------------------
    def _authorize(self, request):
        q = request.query
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return Reply(400, b"unknown app", {"Content-Type": "text/plain"})
        decide = f"{self.url}/v1/oauth/decide?" + urlencode(
            {k: q.get(k, "") for k in ("redirect_uri", "state", "code_challenge")}
        )
        page = (
            "<!doctype html><title>Schwab sign-in</title><h1>Allow Trade Journal to read your accounts?</h1>"
            f'<a id="allow" href="{decide}&amp;answer=allow">Allow</a> '
            f'<a id="deny" href="{decide}&amp;answer=deny">Deny</a>'
        )
        return Reply(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def _decide(self, request):
        q = request.query
        back = q["redirect_uri"]
        if q.get("answer") != "allow":
            denied = urlencode({"error": "access_denied", "state": q["state"]})
            return Reply(302, b"", {"Location": f"{back}?{denied}"})
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = _Code(back, q.get("code_challenge", ""), time.time())
        return Reply(302, b"", {"Location": f"{back}?" + urlencode({"code": code, "state": q["state"]})})

    # --- the token endpoint -----------------------------------------------------------------
    def _token(self, request):
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return Reply(401, {"error": "invalid_client"})
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        with self.lock:
            if form.get("grant_type") == "authorization_code":
                return self._code_grant(form)
            if form.get("grant_type") == "refresh_token":
                return self._refresh_grant(form)
        return Reply(400, {"error": "unsupported_grant_type"})

    def _code_grant(self, form):
        code = self.codes.get(form.get("code", ""))
        if code is None or code.used or time.time() - code.issued > self.code_lifetime_s:
            return Reply(400, {"error": "invalid_grant", "error_description": "code expired or used"})
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            return Reply(400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"})
        if code.challenge:
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.challenge:
                return Reply(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
        refresh = secrets.token_urlsafe(24)
        self.grants[refresh] = _Grant(ends=time.time() + self.refresh_lifetime_s)
        return Reply(200, self._tokens(refresh))

    def _refresh_grant(self, form):
        grant = self.grants.get(form.get("refresh_token", ""))
        if grant is None or time.time() >= grant.ends:
            return Reply(400, {"error": "invalid_grant", "error_description": "refresh token expired"})
        self.refreshes += 1
        return Reply(200, self._tokens(form["refresh_token"]))

    def _tokens(self, refresh: str) -> dict:
        access = secrets.token_urlsafe(24)
        self.access[access] = time.time() + self.access_lifetime_s
        return {
            "expires_in": self.access_lifetime_s,
            "token_type": "Bearer",
            "scope": "api",
            "refresh_token": refresh,
            "access_token": access,
            "id_token": "unused",
        }

    # --- the Trader API ---------------------------------------------------------------------
    def _authorised(self, request) -> bool:
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.lock:
            return self.access.get(token, 0) > time.time()

    def _account_numbers(self, request):
        if not self._authorised(request):
            return Reply(401, {"message": "Unauthorized"})
        return Reply(200, [{"accountNumber": n, "hashValue": h} for n, h in ACCOUNTS])

    def _transactions(self, hash_value):
        def handler(request):
            if not self._authorised(request):
                return Reply(401, {"message": "Unauthorized"})
            if request.query.get("types") != "TRADE":
                return Reply(400, {"message": "types required"})
            start, end = request.query["startDate"], request.query["endDate"]
            with self.lock:
                rows = [t for t in self.transactions[hash_value] if start <= t["time"][:19] + ".000Z" <= end]
            return Reply(200, rows)

        return handler

    def _positions(self, hash_value):
        def handler(request):
            if not self._authorised(request):
                return Reply(401, {"message": "Unauthorized"})
            net: dict[str, tuple[dict, float]] = {}
            with self.lock:
                for t in self.transactions[hash_value]:
                    for item in t["transferItems"]:
                        if item.get("feeType"):
                            continue
                        instrument = item["instrument"]
                        held = net.get(instrument["symbol"], (instrument, 0.0))[1]
                        net[instrument["symbol"]] = (instrument, held + item["amount"])
            positions = [
                {
                    # Schwab's positions name an option by its OCC symbol and underlying only.
                    "instrument": {k: v for k, v in i.items() if k not in ("expirationDate", "strikePrice")},
                    "longQuantity": max(q, 0.0),
                    "shortQuantity": max(-q, 0.0),
                    "averagePrice": 1.0,
                }
                for i, q in net.values()
                if q
            ]
            account = {"type": "MARGIN", "accountNumber": "12345678"}
            if request.query.get("fields") == "positions":
                account["positions"] = positions
            return Reply(200, {"securitiesAccount": account})

        return handler


def configure_app(settings, sim: SchwabSim, callback_url: str) -> None:
    """Point this installation's Schwab OAuth app and API at the simulator (pytest's settings fixture)."""
    settings.BROKER_OAUTH_APPS = {
        "schwab": {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "authorize_url": sim.authorize_url,
            "token_url": sim.token_url,
        }
    }
    settings.BROKER_BASE_URLS = {"schwab": sim.api_url}
    settings.OAUTH_CALLBACK_URL = callback_url


def equity_trade(activity_id: int, *, symbol="AAPL", amount=10, price=231.45, at="2026-11-03T14:30:00+0000"):
    """A TRADE as Schwab reports it: the security line, then a commission and a fee line."""
    return {
        "activityId": activity_id,
        "time": at,
        "accountNumber": "12345678",
        "type": "TRADE",
        "status": "VALID",
        "subAccount": "CASH",
        "tradeDate": at,
        "positionId": 1,
        "orderId": 900000 + activity_id,
        "netAmount": -amount * price,
        "transferItems": [
            {
                "instrument": {"assetType": "CURRENCY", "symbol": "CURRENCY_USD", "description": "USD currency"},
                "amount": 0.0,
                "cost": -0.65,
                "feeType": "COMMISSION",
            },
            {
                "instrument": {"assetType": "CURRENCY", "symbol": "CURRENCY_USD", "description": "USD currency"},
                "amount": 0.0,
                "cost": -0.02,
                "feeType": "SEC_FEE",
            },
            {
                "instrument": {"assetType": "EQUITY", "symbol": symbol, "cusip": "037833100"},
                "amount": amount,
                "cost": -amount * price,
                "price": price,
                "positionEffect": "OPENING" if amount > 0 else "CLOSING",
            },
        ],
    }


def option_trade(activity_id: int, *, at="2026-11-04T15:00:00+0000"):
    return {
        "activityId": activity_id,
        "time": at,
        "type": "TRADE",
        "status": "VALID",
        "orderId": 910000 + activity_id,
        "netAmount": -251.3,
        "transferItems": [
            {
                "instrument": {"assetType": "CURRENCY", "symbol": "CURRENCY_USD"},
                "amount": 0.0,
                "cost": -0.65,
                "feeType": "COMMISSION",
            },
            {
                "instrument": {"assetType": "CURRENCY", "symbol": "CURRENCY_USD"},
                "amount": 0.0,
                "cost": -0.03,
                "feeType": "OPT_REG_FEE",
            },
            {
                "instrument": {
                    "assetType": "OPTION",
                    "symbol": "AAPL  261120C00230000",
                    "underlyingSymbol": "AAPL",
                    "expirationDate": "2026-11-20T21:00:00+0000",
                    "strikePrice": 230.0,
                    "putCall": "CALL",
                },
                "amount": -1,
                "cost": 250.0,
                "price": 2.5,
                "positionEffect": "OPENING",
            },
        ],
    }
