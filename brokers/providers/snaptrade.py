"""SnapTrade: one aggregator API in front of 20+ brokerages (Schwab, Fidelity, Robinhood, ...).

Written on our BrokerHTTP rather than SnapTrade's generated SDK, so its calls keep our rules:
the shared limiter, timeouts, request retries, log lines without the query, and our error tree.

Who is who: an API key (clientId + consumerKey) is the operator's Commercial key from the
environment or a trader's own Personal key; each trader is registered once as a SnapTrade user
(userId + userSecret, see brokers.models.SnapTradeUser); one journal connection is one brokerage
authorisation ("connection" in SnapTrade's words) made in SnapTrade's connection portal. The
session (AuthResult) carries the user secret as its token and the ids in `extra`; the pages
build it (session()) after the portal, as the OAuth callback does for other brokers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode, urlparse

import requests
import structlog
from django.conf import settings

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerRateLimitError,
    BrokerSetupError,
    UnreadableRow,
)
from brokers.providers.http import DEFAULT_RATE_LIMIT_WAIT_S
from brokers.providers.ratelimit import Scope, capped_wait, get_limiter, scope_for
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
    BrokerPosition,
    BrokerTrade,
)

log = structlog.get_logger("brokers.snaptrade")

# Executions only: dividends, transfers, fees, interest, splits and option expiries are not trades.
TRADE_TYPES = {"BUY": BUY, "SELL": SELL}
OPTION_SIDES = {"BUY_TO_OPEN": BUY, "BUY_TO_CLOSE": BUY, "SELL_TO_OPEN": SELL, "SELL_TO_CLOSE": SELL}
RIGHTS = {"CALL": "C", "PUT": "P"}
# SnapTrade's page size maximum (and default) for activities.
PAGE_SIZE = 1000
# Each window is one request (plus pages): wide windows keep a backfill inside the
# account-level budget of 10 requests a minute.
WINDOW = timedelta(days=365)
# US equity options deliver 100 shares; SnapTrade flags the 10-share mini options.
OPTION_MULTIPLIER = Decimal("100")
MINI_OPTION_MULTIPLIER = Decimal("10")
CLOSED_ACCOUNT_STATUSES = {"closed", "archived"}
CUSTOMER_BUCKETS = ("customer",)
ACCOUNT_BUCKETS = ("customer", "account")
# SnapTrade's launch guide: an account's activities at most once every 24 hours (it refreshes
# them once a day), sooner only when its sync status says it refreshed them since our last read.
ACTIVITIES_MIN_INTERVAL_S = 24 * 3600
# The launch guide: holdings at most 4 times a day in the background. We read an account's holdings
# only in a run that reads its activities (about once a day), and never twice within 6 hours.
HOLDINGS_MIN_INTERVAL_S = 6 * 3600
# How long the record of an account's last read is kept: far longer than any pause between syncs.
READ_RECORD_S = 400 * 86400
# The brokerages SnapTrade's documentation names (its integrations page, and the broker access
# guide's "available immediately" table), as (slug, name): the catalogue (its count and the picker)
# uses these, since the live list (GET /brokerages) needs a key and varies with its plan, while the
# count must be the same on every installation. The guide gives names, not slugs: the slugs of its
# entries are written as SnapTrade writes the others and are UNCONFIRMED, which costs nothing if
# wrong, since a brokerage is preselected in the portal only when the live list has its slug.
DOCUMENTED_BROKERAGES = (
    ("SCHWAB", "Charles Schwab"),
    ("FIDELITY", "Fidelity"),
    ("ROBINHOOD", "Robinhood"),
    ("ETRADE", "E*TRADE"),
    ("WEBULL", "Webull"),
    ("VANGUARD", "Vanguard"),
    ("IBKR", "Interactive Brokers"),
    ("QUESTRADE", "Questrade"),
    ("WEALTHSIMPLETRADE", "Wealthsimple"),
    ("TRADING212", "Trading 212"),
    ("TASTYTRADE", "Tastytrade"),
    ("PUBLIC", "Public"),
    ("TRADIER", "Tradier"),
    ("ALPACA", "Alpaca"),
    ("AJBELL", "AJ Bell"),
    ("BINANCE", "Binance"),
    ("BUX", "BUX"),
    ("COINBASE", "Coinbase"),
    ("COMMSEC", "CommSec"),
    ("DEGIRO", "Degiro"),
    ("ETORO", "eToro"),
    ("KRAKEN", "Kraken"),
    ("MOOMOO", "Moomoo"),
    ("STAKE", "Stake Australia"),
    ("TDDI", "TD Direct Investing"),
    ("UPSTOX", "Upstox"),
    ("ZERODHA", "Zerodha"),
)
# How long the list of brokerages (for the connect page) is kept before it is asked for again.
BROKERAGES_CACHE_S = 6 * 3600
_SECONDS_IN_DETAIL = re.compile(r"available in ([0-9]{1,6}) seconds")


@dataclass(frozen=True)
class SnapTradeKey:
    """An API key: the operator's Commercial key or a trader's Personal key."""

    client_id: str
    consumer_key: str = field(repr=False)
    personal: bool = False


def operator_key() -> SnapTradeKey | None:
    """The installation's Commercial key from the environment, or None when not set up."""
    if settings.SNAPTRADE_CLIENT_ID and settings.SNAPTRADE_CONSUMER_KEY:
        return SnapTradeKey(settings.SNAPTRADE_CLIENT_ID, settings.SNAPTRADE_CONSUMER_KEY)
    return None


def canonical_content(content: Any, path: str, query: str) -> str:
    """The string SnapTrade signs: sorted keys, no whitespace, null for an empty body."""
    payload = {"content": content or None, "path": path, "query": query}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def signature(consumer_key: str, content: Any, path: str, query: str) -> str:
    digest = hmac.new(consumer_key.encode(), canonical_content(content, path, query).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def session(key: SnapTradeKey, user_id: str, user_secret: str, authorization: Mapping[str, Any]) -> AuthResult:
    """The session of one journal connection: a SnapTrade user and one brokerage authorisation."""
    extra = {"client_id": key.client_id, "user_id": user_id, "authorization_id": str(authorization["id"])}
    if key.personal:
        extra["consumer_key"] = key.consumer_key
    return AuthResult(token=user_secret, extra=extra)


def brokerage_name(authorization: Mapping[str, Any]) -> str:
    brokerage = authorization.get("brokerage") or {}
    return str(brokerage.get("display_name") or brokerage.get("name") or "the brokerage")


def reconnect_message(brokerage: str, what: str) -> str:
    return f"{what} Press Reconnect and sign in to {brokerage} through SnapTrade again; your trades and history stay."


def _time(value: str) -> datetime:
    if len(value) == 10:  # some brokerages give only the trade's date
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


def content_key(row: Mapping[str, Any]) -> str:
    """A fill's id from what it is, not from SnapTrade's activity id, which can change when
    SnapTrade re-processes a brokerage's data: trade date, type, option type, symbol or option
    ticker, units, price and the brokerage's order reference. (docs/brokers/snaptrade.md)"""
    option = row.get("option_symbol") or {}
    symbol = option.get("ticker") or (row.get("symbol") or {}).get("symbol")
    facts = [row.get("trade_date"), row.get("type"), row.get("option_type"), symbol]
    facts += [format(_decimal(row[name]).normalize(), "f") for name in ("units", "price")]
    facts.append(row.get("external_reference_id"))
    digest = hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()
    return f"st-{digest[:32]}"


class SnapTradeProvider(BrokerProvider):
    key = "snaptrade"
    display_name = "SnapTrade"
    base_urls = {"": "https://api.snaptrade.com/api/v1"}
    portal = True
    link_fields = ("authorization_id", "brokerage")
    # SnapTrade refreshes most brokerages' activities once a day, and some give only dates:
    # three days again catch trades that appear a day or two late.
    sync_overlap = timedelta(days=3)
    max_history = timedelta(days=3 * 365)
    trades_ascending = True

    # --- the contract ------------------------------------------------------------------------
    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        # The session comes from the portal (SnapTradeUser + the authorisation); nothing we
        # hold can log in again for the trader.
        brokerage = credentials.get("brokerage", "the brokerage")
        raise BrokerAuthError(
            reconnect_message(brokerage, f"The link to {brokerage} through SnapTrade is broken or was removed."),
            provider=self.key,
        )

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        return auth  # a user secret does not expire

    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        authorization_id = auth.extra["authorization_id"]
        authorization = self._user_call(auth, "GET", f"/authorizations/{authorization_id}")
        if not isinstance(authorization, dict):
            raise self.unreadable()
        brokerage = brokerage_name(authorization)
        if authorization.get("disabled"):
            raise BrokerAuthError(
                reconnect_message(brokerage, f"SnapTrade's link to {brokerage} is broken (the brokerage ended it)."),
                provider=self.key,
            )
        self._refresh_if_allowed(auth, authorization)
        rows = self._user_call(auth, "GET", f"/authorizations/{authorization_id}/accounts")
        if not isinstance(rows, list):
            raise self.unreadable()
        accounts, statuses, holdings = [], {}, {}
        for row in rows:
            if str(row.get("status") or "").lower() in CLOSED_ACCOUNT_STATUSES:
                continue
            number = str(row.get("number") or "")
            total = (row.get("balance") or {}).get("total") or {}
            name = str(row.get("name") or brokerage)
            transactions = (row.get("sync_status") or {}).get("transactions") or {}
            accounts.append(
                BrokerAccountInfo(
                    external_id=str(row["id"]),
                    # Only the last four digits: SnapTrade may show the whole account number.
                    name=f"{name} ····{number[-4:]}" if number else name,
                    currency=str(total.get("currency") or "USD")[:3],
                    extra={"refreshed_on": str(transactions.get("last_successful_sync") or "")},
                )
            )
            statuses[str(row["id"])] = transactions
            holdings[str(row["id"])] = (row.get("sync_status") or {}).get("holdings") or {}
        if self.run_cache is not None:
            # The account steps of this run decide from it whether SnapTrade has anything new.
            self.run_cache.put("snaptrade-sync-status", json.dumps(statuses))
            self.run_cache.put("snaptrade-holdings-status", json.dumps(holdings))
            self.run_cache.put("snaptrade-freshness", str(authorization.get("data_freshness_mode") or ""))
        return accounts

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        status = self._sync_status(account)
        record = self._last_read(account)
        if self.run_id and not self._activities_due(status, record):
            # Not read now; whatever this run would have asked for is asked for by the next read,
            # since the cursor moves on meanwhile.
            owed = min(since.isoformat(), (record or {}).get("owed") or since.isoformat())
            self._remember_read(account, {**(record or {}), "owed": owed})
            log.info("snaptrade_activities_not_due", account=scope_for(account.external_id))
            return
        if record and record.get("owed"):
            since = min(since, datetime.fromisoformat(record["owed"]))
        # Oldest first, window by window (days inclusive, windows not overlapping), so the
        # journal saves progress as it goes: a run paused by the account budget resumes at its
        # cursor instead of asking for the same windows again (and pausing again, for ever).
        first, last = since.date(), until.date()
        while first <= last:
            end = min(first + WINDOW - timedelta(days=1), last)
            yield from sorted(self._window(auth, account, first, end), key=lambda t: t.executed_at)
            first = end + timedelta(days=1)
        if self.run_id:
            self._remember_read(account, {"read_at": time.time(), "synced": status.get("last_successful_sync")})

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition] | None:
        """GET /accounts/{id}/holdings: stock, ETF, crypto and option positions, named as the activities name them.

        In a run, only when the run reads the account's activities (else the journal holds none
        newer than the last read, and comparing would flag what SnapTrade reported since), at most
        once in HOLDINGS_MIN_INTERVAL_S, and only when SnapTrade's holdings are no newer than its
        transactions (a trade in the holdings whose activity SnapTrade has not posted yet would be
        a false alarm; a real-time connection's holdings always are). The figure holds at the
        holdings' last sync (as_of). None when skipped.
        """
        as_of = None
        kept = f"snaptrade-holdings:{account.external_id}"
        if self.run_id:
            as_of = _moment(self._holdings_status(account).get("last_successful_sync"))
            if (saved := self.run_cache.get(kept)) is not None:
                # Read earlier in this run, which the account budget then paused: reading again would
                # spend the budget each time the run resumes, and this run holds the six-hour claim.
                return self._positions_held(json.loads(saved), as_of)
            if not self._holdings_due(account):
                return None
        body = self._user_call(auth, "GET", f"/accounts/{account.external_id}/holdings", account=account.external_id)
        if self.run_id:
            self.run_cache.put(kept, json.dumps(body))
        return self._positions_held(body, as_of)

    def _holdings_due(self, account: BrokerAccountInfo) -> bool:
        """Whether this run reads the account's holdings (the rules are get_positions')."""
        if self.run_cache.get("snaptrade-freshness") == b"realtime":
            # Real-time holdings hold today's trades, whose activities come a day later: every
            # trading day would show a false difference.
            return False
        if not self._activities_due(self._sync_status(account), self._last_read(account)):
            return False
        if not _holdings_no_newer(self._holdings_status(account), self._sync_status(account)):
            log.info("snaptrade_holdings_ahead_of_activities", account=scope_for(account.external_id))
            return False
        marker = f"snaptrade:holdings-read:{scope_for(account.external_id)}"
        return bool(get_limiter().client.set(marker, "1", nx=True, ex=HOLDINGS_MIN_INTERVAL_S))

    def _positions_held(self, body: Any, as_of: datetime | None) -> list[BrokerPosition]:
        if not isinstance(body, dict):
            raise self.unreadable("the holdings")
        try:
            positions = [self._held(row, as_of) for row in body.get("positions") or []]
            positions += [self._held_option(row, as_of) for row in body.get("option_positions") or []]
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
            raise self.unreadable("a position") from None
        return [p for p in positions if p.quantity]

    def _held(self, row: Mapping[str, Any], as_of: datetime | None) -> BrokerPosition:
        # A position's symbol wraps the universal symbol an activity carries directly.
        symbol = row["symbol"]["symbol"]["symbol"]
        average, price = row.get("average_purchase_price"), row.get("price")
        if not symbol:
            raise ValueError("no symbol")
        return BrokerPosition(
            symbol=str(symbol),
            quantity=_decimal(row.get("units") or 0),
            average_price=_decimal(average) if average is not None else None,
            as_of=as_of,
            mark_price=_decimal(price) if price is not None else None,
        )

    def _held_option(self, row: Mapping[str, Any], as_of: datetime | None) -> BrokerPosition:
        option = row["symbol"]["option_symbol"]
        underlying = (option.get("underlying_symbol") or {}).get("symbol")
        # No average price: whether SnapTrade's is per share or per contract is not documented.
        return BrokerPosition(
            symbol=str(underlying or str(option["ticker"]).split()[0]),
            quantity=_decimal(row.get("units") or 0),
            expiry=date.fromisoformat(str(option["expiration_date"])[:10]),
            strike=_decimal(option["strike_price"]),
            option_right=RIGHTS[option["option_type"]],
            as_of=as_of,
        )

    def _holdings_status(self, account: BrokerAccountInfo) -> dict[str, Any]:
        saved = self.run_cache.get("snaptrade-holdings-status") if self.run_cache is not None else None
        return (json.loads(saved) if saved else {}).get(account.external_id) or {}

    # --- how often activities are read ------------------------------------------------------------
    def _activities_due(self, status: Mapping[str, Any], record: Mapping[str, Any] | None) -> bool:
        """Whether a run reads the account's activities now (SnapTrade's launch guide; docs page).

        Never before SnapTrade's first load of the account's history is complete (a read then would
        miss what arrives later); otherwise when the trader pressed Sync now, on the first read,
        when SnapTrade's sync status moved since our last read, or 24 hours after it.
        """
        if status.get("initial_sync_completed") is False:
            return False
        if self.trader_asked or not record or "read_at" not in record:
            return True
        synced = status.get("last_successful_sync")
        if synced and synced != record.get("synced"):
            return True
        return time.time() - record["read_at"] >= ACTIVITIES_MIN_INTERVAL_S

    def _sync_status(self, account: BrokerAccountInfo) -> dict[str, Any]:
        """The account's transactions sync status the run's account listing saw ({} when unknown)."""
        saved = self.run_cache.get("snaptrade-sync-status") if self.run_cache is not None else None
        return (json.loads(saved) if saved else {}).get(account.external_id) or {}

    def _read_key(self, account: BrokerAccountInfo) -> str:
        return f"snaptrade:activities-read:{scope_for(account.external_id)}"

    def _last_read(self, account: BrokerAccountInfo) -> dict[str, Any] | None:
        saved = get_limiter().client.get(self._read_key(account))
        return json.loads(saved) if saved else None

    def _remember_read(self, account: BrokerAccountInfo, record: Mapping[str, Any]) -> None:
        get_limiter().client.set(self._read_key(account), json.dumps(record), ex=READ_RECORD_S)

    # --- what the connect pages call -------------------------------------------------------------
    def register_user(self, key: SnapTradeKey, user_id: str) -> str:
        """Register a trader as a SnapTrade user; returns the user secret to store."""
        answer = self._call(key, "POST", "/snapTrade/registerUser", body={"userId": user_id})
        secret = answer.get("userSecret") if isinstance(answer, dict) else None
        if not secret:
            raise BrokerAPIError("SnapTrade sent a registration answer we could not read.", provider=self.key)
        return str(secret)

    def portal_url(
        self,
        key: SnapTradeKey,
        user_id: str,
        user_secret: str,
        *,
        redirect: str,
        brokerage: str = "",
        reconnect: str = "",
    ) -> str:
        """The connection portal's address (valid 5 minutes), coming back to `redirect`."""
        body = {
            "userId": user_id,
            "userSecret": user_secret,
            "customRedirect": redirect,
            "immediateRedirect": True,
            "connectionType": "read",
        }
        if brokerage:
            body["broker"] = brokerage
        if reconnect:
            body["reconnect"] = reconnect
        answer = self._call(key, "POST", "/snapTrade/login", body=body)
        url = answer.get("redirectURI") if isinstance(answer, dict) else None
        if not isinstance(url, str) or urlparse(url).scheme not in ("https", "http"):
            raise BrokerAPIError("SnapTrade sent no connection portal address.", provider=self.key, transient=True)
        return url

    def authorizations(self, key: SnapTradeKey, user_id: str, user_secret: str) -> list[dict]:
        rows = self._call(key, "GET", "/authorizations", user=(user_id, user_secret))
        if not isinstance(rows, list):
            raise self.unreadable()
        return rows

    def brokerages(self, key: SnapTradeKey) -> list[tuple[str, str]]:
        """(slug, name) of the brokerages new connections can be made to, kept for a few hours."""
        client = get_limiter().client
        cached = client.get("snaptrade:brokerages")
        if cached:
            return [tuple(pair) for pair in json.loads(cached)]
        rows = self._call(key, "GET", "/brokerages")
        pairs = sorted(
            (str(r["slug"]), str(r.get("display_name") or r.get("name") or r["slug"]))
            for r in (rows if isinstance(rows, list) else [])
            if r.get("slug") and r.get("enabled", True) and not r.get("maintenance_mode")
        )
        client.set("snaptrade:brokerages", json.dumps(pairs), ex=BROKERAGES_CACHE_S)
        return pairs

    # --- requests ----------------------------------------------------------------------------
    def _key_of(self, auth: AuthResult) -> SnapTradeKey:
        if auth.extra.get("consumer_key"):
            return SnapTradeKey(auth.extra["client_id"], auth.extra["consumer_key"], personal=True)
        key = operator_key()
        if key is None or key.client_id != auth.extra.get("client_id"):
            raise BrokerSetupError(
                "This installation's SnapTrade key is not set up any more (SNAPTRADE_CLIENT_ID and "
                "SNAPTRADE_CONSUMER_KEY); the operator must set it back.",
                provider=self.key,
            )
        return key

    def _user_call(self, auth: AuthResult, method: str, path: str, **kwargs):
        return self._call(self._key_of(auth), method, path, user=(auth.extra["user_id"], auth.token), **kwargs)

    def _window(self, auth: AuthResult, account: BrokerAccountInfo, start: date, end: date):
        offset = 0
        # Two fills alike in every fact of the content key (same order, day, size and price)
        # are numbered in the order SnapTrade lists them; they share a day, so a window holds both.
        alike: Counter[str] = Counter()

        def parse(row: Mapping[str, Any]) -> BrokerTrade:
            try:
                key = content_key(row)
            except (KeyError, TypeError, ValueError, InvalidOperation):
                raise UnreadableRow(
                    f"activity {row.get('id') or 'without id'}: no symbol, units, price or date we can read"
                ) from None
            alike[key] += 1
            return self._trade(row, account, key if alike[key] == 1 else f"{key}-{alike[key]}")

        while True:
            params = {
                "startDate": start.isoformat(),
                "endDate": end.isoformat(),
                "offset": offset,
                "limit": PAGE_SIZE,
                "type": ",".join(TRADE_TYPES),
            }
            page = self._user_call(
                auth, "GET", f"/accounts/{account.external_id}/activities", params=params, account=account.external_id
            )
            rows = page.get("data") if isinstance(page, dict) else None
            if not isinstance(rows, list):
                raise self.unreadable()
            trades = (r for r in rows if r.get("type") in TRADE_TYPES)
            yield from self.readable(trades, parse)
            total = (page.get("pagination") or {}).get("total")
            offset += len(rows)
            if not rows or len(rows) < PAGE_SIZE or (isinstance(total, int) and offset >= total):
                return

    def _call(
        self,
        key: SnapTradeKey,
        method: str,
        path: str,
        *,
        user: tuple[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        account: str = "",
        tolerate: tuple[int, ...] = (),
    ):
        """One signed request; the answer's JSON, or None for a tolerated status."""
        query_items = [("clientId", key.client_id), ("timestamp", str(int(time.time())))]
        if user is not None:
            query_items += [("userId", user[0]), ("userSecret", user[1])]
        query = urlencode(query_items + list((params or {}).items()))
        url = f"{self.http.base_url}{path}?{query}"
        text = json.dumps(body, separators=(",", ":"), sort_keys=True) if body else None
        headers = {"Signature": signature(key.consumer_key, body, urlparse(url).path, query)}
        if text is not None:
            headers["Content-Type"] = "application/json"
        scope: Scope = {"customer": scope_for(key.client_id)}
        if account:
            scope["account"] = scope_for(f"{key.client_id}:{account}")
        response = self.http.request(
            method,
            url,
            scope=scope,
            buckets=ACCOUNT_BUCKETS if account else CUSTOMER_BUCKETS,
            allow_statuses=(400, 401, 402, 403, 404, 429),
            # Reading SnapTrade is safe to repeat; registering and the portal address are not sent twice.
            idempotent=method == "GET",
            data=text.encode() if text is not None else None,
            headers=headers,
        )
        if response.status_code < 300:
            return self.http.json(response)
        if response.status_code in tolerate:
            log.info("snaptrade_answer_tolerated", path=urlparse(url).path, status=response.status_code)
            return None
        raise self._error(response, key, scope)

    def _error(self, response: requests.Response, key: SnapTradeKey, scope: dict[str, str]) -> Exception:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = str((body if isinstance(body, dict) else {}).get("code") or "")
        if status == 429:
            return self._rate_limited(response, body, scope)
        if status == 401 and code == "1076":
            whose = (
                "Your SnapTrade Personal key was refused; enter it again on the SnapTrade page."
                if key.personal
                else "This installation's SnapTrade key was refused; the operator must check "
                "SNAPTRADE_CLIENT_ID and SNAPTRADE_CONSUMER_KEY (and the server's clock)."
            )
            return BrokerSetupError(
                f"SnapTrade refused the request signature (code {code}). {whose}", provider=self.key
            )
        if status in (401, 402, 403, 404):
            return BrokerAuthError(
                reconnect_message(
                    "the brokerage", f"SnapTrade refused to read this link (HTTP {status}, code {code or 'none'})."
                ),
                provider=self.key,
                status_code=status,
            )
        return BrokerAPIError(
            f"SnapTrade rejected a request (HTTP {status}, code {code or 'none'}). Retrying will not help — "
            "please report it.",
            provider=self.key,
            status_code=status,
        )

    def _rate_limited(self, response: requests.Response, body: Any, scope: dict[str, str]) -> BrokerRateLimitError:
        """Wait for the budget that ran out: the account's, the API key's, or (unsaid) both."""
        headers = response.headers
        if headers.get("X-RateLimit-Account-Remaining") == "0" and "account" in scope:
            which, blocked, reset = "this account's", {"account": scope["account"]}, "X-RateLimit-Account-Reset"
        elif headers.get("X-RateLimit-Remaining") == "0":
            which, blocked, reset = "the API key's", {"customer": scope["customer"]}, "X-RateLimit-Reset"
        else:
            which, blocked, reset = "a", scope, ""
        wait = _seconds(headers.get(reset, "")) if reset else None
        if wait is None:
            detail = str(body.get("detail") if isinstance(body, dict) else "")
            found = _SECONDS_IN_DETAIL.search(detail)
            wait = float(found.group(1)) if found else DEFAULT_RATE_LIMIT_WAIT_S
        # A reset of 0 still means "not now": at least a second.
        wait = max(1.0, capped_wait(wait))
        reason = f"SnapTrade asked us to slow down ({which} request budget is used up; HTTP 429)."
        return self.blocked(reason, wait, scope=blocked, status_code=429)

    def _refresh_if_allowed(self, auth: AuthResult, authorization: Mapping[str, Any]) -> None:
        """Ask SnapTrade to fetch fresh data from the brokerage, where the operator allows it.

        Each manual refresh is billed and is refused for real-time connections, so it is off
        unless SNAPTRADE_MANUAL_REFRESH_HOURS is set, and then made at most once that often.
        The refresh is asynchronous: the data it fetches reaches a later sync.
        """
        hours = settings.SNAPTRADE_MANUAL_REFRESH_HOURS
        if hours <= 0 or authorization.get("data_freshness_mode") == "realtime":
            return
        marker = f"snaptrade:refreshed:{scope_for(auth.extra['authorization_id'])}"
        if not get_limiter().client.set(marker, "1", nx=True, ex=int(hours * 3600)):
            return
        # Refused refreshes (too recent, not in the plan, link disabled) change nothing for this sync.
        self._user_call(
            auth, "POST", f"/authorizations/{auth.extra['authorization_id']}/refresh", tolerate=(402, 403, 429)
        )

    def _trade(self, row: Mapping[str, Any], account: BrokerAccountInfo, trade_id: str) -> BrokerTrade:
        try:
            option = row.get("option_symbol") or None
            side = OPTION_SIDES.get(row.get("option_type") or "") or TRADE_TYPES[row["type"]]
            quantity = abs(_decimal(row["units"]))
            price = abs(_decimal(row["price"]))
            if option:
                underlying = (option.get("underlying_symbol") or {}).get("symbol")
                symbol = underlying or str(option["ticker"]).split()[0]
            else:
                symbol = (row.get("symbol") or {}).get("symbol")
            if not symbol or quantity == 0:
                raise ValueError("no symbol or no quantity")
            security_type = (((row.get("symbol") or {}).get("type") or {}).get("code") or "").lower()
            return BrokerTrade(
                broker_trade_id=trade_id,
                account_external_id=account.external_id,
                symbol=str(symbol),
                side=side,
                quantity=quantity,
                price=price,
                executed_at=_time(str(row["trade_date"])),
                fees=abs(_decimal(row.get("fee") or 0)),
                currency=str((row.get("currency") or {}).get("code") or account.currency),
                asset_class="OPT" if option else ("CRYPTO" if security_type == "crypto" else "STK"),
                multiplier=(MINI_OPTION_MULTIPLIER if option.get("is_mini_option") else OPTION_MULTIPLIER)
                if option
                else Decimal("1"),
                order_id=str(row.get("external_reference_id") or ""),
                expiry=date.fromisoformat(str(option["expiration_date"])[:10]) if option else None,
                strike=_decimal(option["strike_price"]) if option else None,
                option_right=RIGHTS[option["option_type"]] if option else "",
                raw=dict(row),
            )
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
            raise UnreadableRow(
                f"activity {row.get('id') or 'without id'}: no symbol, units, price or date we can read"
            ) from None


def _moment(value: Any) -> datetime | None:
    """A sync status's moment in UTC, no later than now (None when absent or unreadable)."""
    try:
        moment = _time(str(value)) if value else None
    except ValueError:
        return None
    return min(moment, datetime.now(UTC)) if moment else None


def _holdings_no_newer(holdings: Mapping[str, Any], transactions: Mapping[str, Any]) -> bool:
    """SnapTrade's holdings were last synced on a day no later than its transactions (unknown counts as not)."""
    held, traded = _moment(holdings.get("last_successful_sync")), transactions.get("last_successful_sync")
    try:
        return held is not None and bool(traded) and held.date() <= date.fromisoformat(str(traded)[:10])
    except ValueError:
        return False


def _seconds(value: str) -> float | None:
    value = (value or "").strip()
    return float(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


PROVIDERS = (SnapTradeProvider,)
