"""A loopback SnapTrade: signed API calls, users, the connection portal, authorisations, activities, limits.

It checks every request's signature independently of our code (HMAC-SHA256 of the canonical
JSON of body, path and the raw query, with the key's consumerKey), keeps users per clientId,
serves a portal page whose Connect creates (or, in reconnect mode, mends) an authorisation,
and enforces both documented budgets on a trailing window with SnapTrade's 429 body and
X-RateLimit-* headers. A disabled authorisation keeps answering with its last cached state:
activities added while it is disabled appear only after a reconnect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from tests.fakes.loopback import LoopbackServer, Reply

CLIENT_ID = "SIMCLIENT"
CONSUMER_KEY = "sim-consumer-key"
BROKERAGES = {
    "ROBINHOOD": "Robinhood",
    "SCHWAB": "Charles Schwab",
    "FIDELITY": "Fidelity",
    "ETRADE": "E*TRADE",
    "WEBULL": "Webull",
    "VANGUARD": "Vanguard",
    "QUESTRADE": "Questrade",
    "WEALTHSIMPLETRADE": "Wealthsimple",
    "TASTYTRADE": "Tastytrade",
    "PUBLIC": "Public",
    "TRADIER": "Tradier",
}
SIGNATURE_REFUSED = {"detail": "Unable to verify signature sent", "status_code": 401, "code": "1076"}
USER_REFUSED = {"detail": "Invalid userID or userSecret provided", "status_code": 401, "code": "1083"}
NOT_FOUND = {"detail": "The requested resource does not exist.", "status_code": 404, "code": "1011"}


def configure(settings, sim: SnapTradeSim) -> None:
    """Point this process's SnapTrade provider at the simulator with the operator's key."""
    settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "snaptrade": sim.api_url}
    settings.SNAPTRADE_CLIENT_ID = CLIENT_ID
    settings.SNAPTRADE_CONSUMER_KEY = CONSUMER_KEY


def _stamp(moment: datetime | date) -> str:
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, datetime.min.time(), UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SnapTradeSim(LoopbackServer):
    def __init__(
        self,
        *,
        customer_limit: int = 250,
        account_limit: int = 10,
        limit_window_s: float = 60.0,
        accounts_per_connection: int = 2,
        portal_lifetime_s: float = 300.0,
        refresh_min_interval_s: float = 60.0,
    ):
        super().__init__()
        self.customer_limit = customer_limit
        self.account_limit = account_limit
        self.limit_window_s = limit_window_s
        self.accounts_per_connection = accounts_per_connection
        self.portal_lifetime_s = portal_lifetime_s
        self.refresh_min_interval_s = refresh_min_interval_s
        self.keys = {CLIENT_ID: CONSUMER_KEY}
        self.users: dict[tuple[str, str], str] = {}  # (clientId, userId) -> userSecret
        self.registrations: list[tuple[str, str]] = []
        self.logins: list[dict] = []
        self.portals: dict[str, dict] = {}  # token -> login body + who + issued
        self.authorizations: dict[str, dict] = {}  # id -> row (+ "_owner")
        self.accounts: dict[str, dict] = {}  # id -> row
        self.activities: dict[str, list[dict]] = defaultdict(list)  # account id -> rows (+ "_hidden")
        self.refreshes = 0
        self._last_refresh: dict[str, float] = {}
        self.throttled: Counter[str] = Counter()
        self.customer_request_times: dict[str, list[float]] = defaultdict(list)
        self.account_request_times: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.route("POST", "/api/v1/snapTrade/registerUser", self._signed(self._register))
        self.route("POST", "/api/v1/snapTrade/login", self._signed(self._login))
        self.route("GET", "/api/v1/brokerages", self._signed(self._brokerages))
        self.route("GET", "/api/v1/authorizations", self._signed(self._list_authorizations, user=True))
        self.route("GET", "/portal", self._portal)
        self.route("GET", "/portal/done", self._portal_done)
        self.route("GET", "/portal/cancel", self._portal_cancel)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v1"

    def add_key(self, client_id: str, consumer_key: str) -> None:
        """Another API key SnapTrade accepts (a trader's Personal key)."""
        with self.lock:
            self.keys[client_id] = consumer_key

    def disable(self, authorization_id: str) -> None:
        """The brokerage ended the link: SnapTrade keeps serving the last cached state."""
        with self.lock:
            row = self.authorizations[authorization_id]
            row["disabled"], row["disabled_date"] = True, _stamp(datetime.now(UTC))

    def refresh_transactions(self, account_id: str, day: date) -> None:
        """SnapTrade's daily refresh of one account's transactions has run: its sync status says `day`."""
        with self.lock:
            self.accounts[account_id]["sync_status"]["transactions"]["last_successful_sync"] = day.isoformat()

    def accounts_of(self, authorization_id: str) -> list[dict]:
        with self.lock:
            return [a for a in self.accounts.values() if a["brokerage_authorization"] == authorization_id]

    def add_activity(
        self,
        account_id: str,
        *,
        type: str = "BUY",
        symbol: str = "AAPL",
        units: float = 10,
        price: float = 150.25,
        fee: float = 0.5,
        currency: str = "USD",
        trade_date: datetime | date | None = None,
        option: dict | None = None,
        option_type: str = "",
        amount: float | None = None,
    ) -> dict:
        """One activity in SnapTrade's AccountUniversalActivity shape; returns it."""
        money = {"id": f"cur-{currency}", "code": currency, "name": currency}
        row = {
            "id": str(uuid.uuid4()),
            "symbol": None
            if option
            else {
                "id": f"sym-{symbol}",
                "symbol": symbol,
                "raw_symbol": symbol,
                "description": symbol,
                "currency": money,
                "type": {"id": "cs", "code": "cs", "description": "Common Stock"},
            },
            "option_symbol": option,
            "price": price,
            "units": units,
            "amount": -units * price if amount is None else amount,
            "currency": money,
            "type": type,
            "option_type": option_type,
            "description": f"{type} {symbol}",
            "trade_date": _stamp(trade_date or datetime.now(UTC)),
            "settlement_date": None,
            "fee": fee,
            "fx_rate": None,
            "institution": "Simulated brokerage",
            "external_reference_id": str(uuid.uuid4()),
        }
        with self.lock:
            authorization = self.authorizations[self.accounts[account_id]["brokerage_authorization"]]
            # Behind a broken link SnapTrade has no new data until the trader reconnects.
            self.activities[account_id].append(row | {"_hidden": authorization["disabled"]})
        return row

    # --- signing, users and limits ------------------------------------------------------------
    def _signed(self, handler, *, user: bool = False, account: bool = False):
        def serve(request):
            with self.lock:
                client_id = request.query.get("clientId", "")
                consumer_key = self.keys.get(client_id)
                try:
                    fresh = abs(time.time() - int(request.query.get("timestamp", ""))) <= 300
                except ValueError:
                    fresh = False
                if consumer_key is None or not fresh or not self._signature_ok(request, consumer_key):
                    return Reply(401, SIGNATURE_REFUSED)
                account_id = request.path.split("/")[4] if account else ""
                throttled = self._throttle(client_id, account_id)
                if throttled is not None:
                    return throttled
                headers = self._limit_headers(client_id, account_id)
                if user and self.users.get((client_id, request.query.get("userId", ""))) != request.query.get(
                    "userSecret"
                ):
                    return Reply(401, USER_REFUSED, headers)
                status, body = handler(request, client_id)
                return Reply(status, body, headers)

        return serve

    @staticmethod
    def _signature_ok(request, consumer_key: str) -> bool:
        body = json.loads(request.body) if request.body else None
        content = json.dumps(
            {"content": body or None, "path": request.path, "query": request.raw_query},
            separators=(",", ":"),
            sort_keys=True,
        )
        expected = base64.b64encode(hmac.new(consumer_key.encode(), content.encode(), hashlib.sha256).digest())
        return hmac.compare_digest(expected.decode(), request.headers.get("Signature", ""))

    def _recent(self, times: list[float]) -> list[float]:
        horizon = time.monotonic() - self.limit_window_s
        times[:] = [t for t in times if t > horizon]
        return times

    def _throttle(self, client_id: str, account_id: str) -> Reply | None:
        customer = self._recent(self.customer_request_times[client_id])
        per_account = self._recent(self.account_request_times[(client_id, account_id)]) if account_id else []
        kind = ""
        if len(customer) >= self.customer_limit:
            kind = "customer"
        elif account_id and len(per_account) >= self.account_limit:
            kind = "account"
        if kind:
            self.throttled[kind] += 1
            headers = self._limit_headers(client_id, account_id)
            wait = headers["X-RateLimit-Reset" if kind == "customer" else "X-RateLimit-Account-Reset"]
            body = {"detail": f"Request was throttled. Expected available in {wait} seconds.", "status_code": 429}
            return Reply(429, body | {"code": "0000"}, headers)
        now = time.monotonic()
        customer.append(now)
        if account_id:
            per_account.append(now)
        return None

    def _limit_headers(self, client_id: str, account_id: str) -> dict[str, str]:
        def reset(times):
            return str(max(0, round(times[0] + self.limit_window_s - time.monotonic())) if times else 0)

        customer = self._recent(self.customer_request_times[client_id])
        headers = {
            "X-RateLimit-Limit": str(self.customer_limit),
            "X-RateLimit-Remaining": str(max(0, self.customer_limit - len(customer))),
            "X-RateLimit-Reset": reset(customer),
        }
        if account_id:
            per_account = self._recent(self.account_request_times[(client_id, account_id)])
            headers |= {
                "X-RateLimit-Account-Limit": str(self.account_limit),
                "X-RateLimit-Account-Remaining": str(max(0, self.account_limit - len(per_account))),
                "X-RateLimit-Account-Reset": reset(per_account),
            }
        return headers

    # --- users and the portal -----------------------------------------------------------------
    def _register(self, request, client_id):
        user_id = request.json().get("userId", "")
        if not user_id:
            return 400, {"detail": "userId is required", "code": "1076"}
        if (client_id, user_id) in self.users:
            return 400, {"detail": "User already exist", "code": "1010"}
        secret = secrets.token_urlsafe(24)
        self.users[(client_id, user_id)] = secret
        self.registrations.append((client_id, user_id))
        return 200, {"userId": user_id, "userSecret": secret}

    def _login(self, request, client_id):
        body = request.json()
        if self.users.get((client_id, body.get("userId", ""))) != body.get("userSecret"):
            return 401, USER_REFUSED
        reconnect = body.get("reconnect")
        if reconnect and self.authorizations.get(reconnect, {}).get("_owner") != (client_id, body["userId"]):
            return 404, NOT_FOUND
        self.logins.append(body)
        token = secrets.token_urlsafe(16)
        self.portals[token] = body | {"_client": client_id, "_issued": time.monotonic()}
        return 200, {"redirectURI": f"{self.url}/portal?token={token}", "sessionId": str(uuid.uuid4())}

    def _live_portal(self, request) -> dict | None:
        with self.lock:
            portal = self.portals.get(request.query.get("token", ""))
        if portal is None or time.monotonic() - portal["_issued"] > self.portal_lifetime_s:
            return None
        return portal

    def _portal(self, request):
        portal = self._live_portal(request)
        if portal is None:
            return Reply(410, b"<!doctype html><title>Expired</title><p>This link has expired.", _HTML)
        slug = portal.get("broker") or ""
        heading = BROKERAGES.get(slug, "Choose your brokerage")
        token = request.query["token"]
        page = (
            "<!doctype html><title>SnapTrade Connection Portal (simulator)</title>"
            f"<h1>{heading}</h1><p>Sign in to your brokerage (simulated).</p>"
            f'<a id="portal-connect" href="/portal/done?token={token}">Connect</a> '
            f'<a id="portal-cancel" href="/portal/cancel?token={token}">Cancel</a>'
        )
        return Reply(200, page.encode(), _HTML)

    def _portal_done(self, request):
        portal = self._live_portal(request)
        if portal is None:
            return Reply(410, b"<!doctype html><title>Expired</title><p>This link has expired.", _HTML)
        with self.lock:
            if portal.get("reconnect"):
                authorization = self.authorizations[portal["reconnect"]]
                authorization["disabled"], authorization["disabled_date"] = False, None
                for account in self.accounts_of(authorization["id"]):
                    for row in self.activities[account["id"]]:
                        row["_hidden"] = False
            else:
                authorization = self._new_authorization(portal)
        return self._back(portal, status="SUCCESS", connection_id=authorization["id"])

    def _portal_cancel(self, request):
        portal = self._live_portal(request)
        if portal is None:
            return Reply(410, b"<!doctype html><title>Expired</title><p>This link has expired.", _HTML)
        return self._back(portal, status="ABANDONED")

    def _back(self, portal: dict, **extra: str) -> Reply:
        target = portal.get("customRedirect")
        if not target:
            return Reply(200, b"<!doctype html><title>Done</title><p>You can close this window.", _HTML)
        parts = urlparse(target)
        query = urlencode([*parse_qsl(parts.query), *extra.items()])
        return Reply(302, b"", {"Location": urlunparse(parts._replace(query=query))})

    def _new_authorization(self, portal: dict) -> dict:
        slug = portal.get("broker") or "ROBINHOOD"
        name = BROKERAGES[slug]
        authorization_id = str(uuid.uuid4())
        now = _stamp(datetime.now(UTC))
        row = {
            "id": authorization_id,
            "created_date": now,
            "updated_date": now,
            "brokerage": {"id": f"brk-{slug}", "slug": slug, "name": name, "display_name": name},
            "name": f"Connection-{len(self.authorizations) + 1}",
            "type": portal.get("connectionType") or "read",
            "disabled": False,
            "disabled_date": None,
            "data_freshness_mode": "delayed",
            "meta": {},
            "_owner": (portal["_client"], portal["userId"]),
        }
        self.authorizations[authorization_id] = row
        base = f"/api/v1/authorizations/{authorization_id}"
        self.route("GET", base, self._signed(self._one_authorization(authorization_id), user=True))
        self.route("GET", f"{base}/accounts", self._signed(self._authorization_accounts(authorization_id), user=True))
        self.route("POST", f"{base}/refresh", self._signed(self._refresh(authorization_id), user=True))
        for n in range(self.accounts_per_connection):
            account_id = str(uuid.uuid4())
            self.accounts[account_id] = {
                "id": account_id,
                "brokerage_authorization": authorization_id,
                "name": f"{BROKERAGES[slug]} Individual {n + 1}",
                "number": f"Q65421{n}{len(self.accounts):04d}",
                "institution_name": BROKERAGES[slug],
                "status": "open",
                "balance": {"total": {"amount": 1000.0, "currency": "USD"}},
                "meta": {},
                "is_paper": False,
                # SnapTrade's daily copy: transactions as of a day, holdings as of a moment.
                "sync_status": {
                    "transactions": {
                        "initial_sync_completed": True,
                        "last_successful_sync": datetime.now(UTC).date().isoformat(),
                        "first_transaction_date": None,
                    },
                    "holdings": {"initial_sync_completed": True, "last_successful_sync": now},
                },
            }
            self.route(
                "GET",
                f"/api/v1/accounts/{account_id}/activities",
                self._signed(self._account_activities(account_id), user=True, account=True),
            )
            self.route(
                "GET",
                f"/api/v1/accounts/{account_id}/holdings",
                self._signed(self._account_holdings(account_id), user=True, account=True),
            )
        return row

    # --- data ---------------------------------------------------------------------------------
    def _owned(self, request, client_id: str, authorization_id: str) -> dict | None:
        row = self.authorizations.get(authorization_id)
        return row if row and row["_owner"] == (client_id, request.query.get("userId")) else None

    @staticmethod
    def _public(row: dict) -> dict:
        return {k: v for k, v in row.items() if not k.startswith("_")}

    def _brokerages(self, request, client_id):
        return 200, [
            {"id": f"brk-{slug}", "slug": slug, "name": name, "display_name": name, "enabled": True}
            | {"maintenance_mode": False, "allows_trading": False, "url": f"https://{slug.lower()}.example"}
            for slug, name in BROKERAGES.items()
        ]

    def _list_authorizations(self, request, client_id):
        owner = (client_id, request.query.get("userId"))
        return 200, [self._public(a) for a in self.authorizations.values() if a["_owner"] == owner]

    def _one_authorization(self, authorization_id):
        def serve(request, client_id):
            row = self._owned(request, client_id, authorization_id)
            return (200, self._public(row)) if row else (404, NOT_FOUND)

        return serve

    def _authorization_accounts(self, authorization_id):
        def serve(request, client_id):
            if self._owned(request, client_id, authorization_id) is None:
                return 404, NOT_FOUND
            return 200, self.accounts_of(authorization_id)

        return serve

    def _refresh(self, authorization_id):
        def serve(request, client_id):
            row = self._owned(request, client_id, authorization_id)
            if row is None:
                return 404, NOT_FOUND
            if row["disabled"]:
                detail = "Unable to sync with brokerage account because the connection is disabled."
                return 402, {"detail": detail, "code": "3003"}
            last = self._last_refresh.get(authorization_id)
            if last is not None and time.monotonic() - last < self.refresh_min_interval_s:
                detail = "Connection refreshed too recently. Please try again later."
                return 429, {"detail": detail, "status_code": 429, "code": "throttled"}
            self._last_refresh[authorization_id] = time.monotonic()
            self.refreshes += 1
            return 200, {"detail": f"Connection {authorization_id} scheduled for refresh"}

        return serve

    def _account_activities(self, account_id):
        def serve(request, client_id):
            account = self.accounts[account_id]
            if self._owned(request, client_id, account["brokerage_authorization"]) is None:
                return 404, NOT_FOUND
            q = request.query
            types = set(filter(None, q.get("type", "").split(",")))
            rows = [
                self._public(r)
                for r in self.activities[account_id]
                if not r["_hidden"]
                and (not types or r["type"] in types)
                and q.get("startDate", "0000") <= r["trade_date"][:10] <= q.get("endDate", "9999")
            ]
            rows.sort(key=lambda r: r["trade_date"], reverse=True)
            offset = int(q.get("offset") or 0)
            limit = min(int(q.get("limit") or 1000), 1000)
            return 200, {
                "data": rows[offset : offset + limit],
                "pagination": {"offset": offset, "limit": limit, "total": len(rows)},
            }

        return serve

    def _account_holdings(self, account_id):
        """The account's holdings, summed from its activities (as SnapTrade's daily copy would hold them)."""

        def serve(request, client_id):
            account = self.accounts[account_id]
            if self._owned(request, client_id, account["brokerage_authorization"]) is None:
                return 404, NOT_FOUND
            stocks: dict[str, list] = {}
            options: dict[str, list] = {}
            for r in self.activities[account_id]:
                if r["_hidden"] or r["type"] not in ("BUY", "SELL"):
                    continue
                bought = r["option_type"].startswith("BUY") if r["option_type"] else r["type"] == "BUY"
                units = abs(r["units"]) if bought else -abs(r["units"])
                if r["option_symbol"]:
                    held = options.setdefault(r["option_symbol"]["ticker"], [r["option_symbol"], 0.0])
                else:
                    held = stocks.setdefault(r["symbol"]["symbol"], [r["symbol"], 0.0])
                held[1] += units
            positions = [
                {"symbol": {"id": f"pos-{s['symbol']}", "symbol": s}, "units": units, "price": 1.0}
                | {"open_pnl": 0.0, "average_purchase_price": 1.0, "currency": s["currency"]}
                for s, units in stocks.values()
                if units
            ]
            option_positions = [
                {"symbol": {"id": f"pos-{o['ticker']}", "option_symbol": o}, "units": units, "price": 1.0}
                | {"average_purchase_price": 100.0, "currency": {"code": "USD"}}
                for o, units in options.values()
                if units
            ]
            return 200, {
                "account": self._public(account),
                "balances": [{"currency": {"code": "USD"}, "cash": 1000.0, "buying_power": 1000.0}],
                "positions": positions,
                "option_positions": option_positions,
                "orders": [],
                "total_value": {"value": 1000.0, "currency": "USD"},
            }

        return serve


_HTML = {"Content-Type": "text/html; charset=utf-8"}
