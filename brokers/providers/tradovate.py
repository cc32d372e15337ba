"""Tradovate (futures, and NinjaTrader brokerage accounts and prop firms' accounts, which Tradovate serves): one
stored session per user, today's fills resolved in batches to accounts and contracts, on the organisation's own
API host."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import structlog
from django.conf import settings

from brokers.providers import firms
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, BrokerRateLimitError, UnreadableRow
from brokers.providers.http import parse_retry_after
from brokers.providers.ratelimit import capped_wait, get_limiter, scope_for
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
    BrokerPosition,
    BrokerTrade,
    CredentialField,
)

log = structlog.get_logger("brokers.tradovate")

AUTH_BUCKETS = ("auth", "requests", "hourly")
DATA_BUCKETS = ("requests", "hourly")
# Ids per /items call: keeps URLs short and the number of calls independent of the fill count.
BATCH_SIZE = 100
SIDES = {"Buy": BUY, "Sell": SELL}
FEE_FIELDS = ("commission", "clearingFee", "exchangeFee", "nfaFee", "brokerageFee", "ipFee", "orderRoutingFee")
# 429 is a lockout of the user for about an hour and 423 its last warning; both come without Retry-After.
LOCKOUT_STATUSES = (423, 429)
LOCKOUT_WAIT_S = 3600.0
# A captcha ticket cannot be solved by a server: everyone on this IP range waits it out.
CAPTCHA_WAIT_S = 3600.0
# The API key id as Tradovate shows it: a number, sent to the login as a JSON integer.
CID = re.compile(r"[0-9]{1,10}")
# A server answering ticket after ticket is not going to let us through by insisting.
MAX_PENALTY_RESENDS = 3

# Answers that send a request to another host. Never followed (the token would go along): since
# NinjaTrader's organisation hosts (3 October 2026) they mean "this login lives elsewhere now".
REDIRECT_STATUSES = (307, 308)
# The REST API's path on every host, the shared ones and the organisations' own.
API_PATH = "/v1"
# A host name as DNS spells it: nothing else may reach a URL the token is sent to.
HOST_NAME = re.compile(r"[a-z0-9.-]{1,253}")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
# Futures prop firms whose trader accounts are Tradovate accounts (tradovate_firms.toml, extended by
# the operator's TRADOVATE_FIRMS_FILE). Their traders connect here like any Tradovate user, on the
# organisation hosts Tradovate names; the table only lets the catalogue name the firms.
FIRMS_FILE = Path(__file__).with_name("tradovate_firms.toml")
FIRMS = firms.load_firms(FIRMS_FILE, settings.TRADOVATE_FIRMS_FILE, "TRADOVATE_FIRMS_FILE")

# --- UNCONFIRMED points (docs/brokers/tradovate.md lists them) ------------------------------
# Token lifetime is 80 or 90 minutes depending on the source; only used when a login or
# renewal answer lacks expirationTime, so take the shorter.
TOKEN_LIFETIME_IF_UNSTATED = timedelta(minutes=80)
# FillFee ids are said to equal the ids of their fills; fees are looked up that way.
FILL_FEES_PATH = "/fillFee/items"
# The key names inside a token answer's apiHosts (Deltalytix also saw api_hosts); the REST host of
# each environment is read under its name, other purposes (market data, replay) are not used.
API_HOSTS_FIELDS = ("apiHosts", "api_hosts")


class TradovateHostMoved(BrokerAuthError):
    """Tradovate answers this login from another host now (HTTP 307): the session must be renewed
    or the login made again so that Tradovate names the host; the redirect itself is never followed."""


def api_base_url(value: Any) -> str | None:
    """The REST base URL of a host Tradovate named, or None when it is not one of Tradovate's own.

    A token answer is the only place the hosts come from, and the token is sent to them, so a
    garbled or hostile answer must not point it elsewhere: https to a domain listed in
    TRADOVATE_API_HOST_DOMAINS (Tradovate's and NinjaTrader's), no user, query or other path. A
    loopback address listed there (a local simulator) may use http.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip() if "://" in value else f"https://{value.strip()}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if (
        not HOST_NAME.fullmatch(host)
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or parts.path.rstrip("/") not in ("", API_PATH)
        or not any(host == domain or host.endswith(f".{domain}") for domain in settings.TRADOVATE_API_HOST_DOMAINS)
        or not (parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS))
    ):
        return None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{API_PATH}"


def api_hosts(data: Mapping[str, Any]) -> dict[str, str]:
    """{purpose: REST base URL} from a token answer's apiHosts; empty when it names none we accept."""
    named = next((data[f] for f in API_HOSTS_FIELDS if isinstance(data.get(f), Mapping)), {})
    hosts = {}
    for purpose, value in named.items():
        url = api_base_url(value)
        if url is None:
            # The value is not logged: it may be anything, and only its refusal matters.
            log.warning("tradovate_api_host_refused", purpose=str(purpose)[:40])
        else:
            hosts[str(purpose)] = url
    return hosts


def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _decimal(value: Any) -> Decimal:
    # JSON numbers arrive as floats; their shortest repr is the decimal Tradovate sent.
    return Decimal(str(value))


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class TradovateProvider(BrokerProvider):
    key = "tradovate"
    display_name = "Tradovate"
    environments = (("demo", "Demo (simulated money)"), ("live", "Live"))
    credential_fields = (
        CredentialField(
            "username",
            "Username",
            help_text="The name you log in to Tradovate with (trader.tradovate.com). A NinjaTrader brokerage "
            "account is reached through Tradovate too: use its NinjaTrader login.",
            ascii_only=False,
        ),
        CredentialField(
            "password",
            "Password",
            secret=True,
            help_text="Your Tradovate password, or the dedicated password you set when creating the API key. "
            "Stored encrypted; used only when the saved session has expired.",
            ascii_only=False,
        ),
        CredentialField(
            "app_id",
            "App ID",
            help_text="The application name sent with each login, e.g. TradeJournal. "
            "Use the one Tradovate gave you with the API key, if it gave one.",
        ),
        CredentialField(
            "app_version",
            "App version",
            help_text="The application version sent with each login; 1.0 unless Tradovate told you otherwise.",
        ),
        CredentialField(
            "cid",
            "API key ID (cid)",
            help_text="In Tradovate, open Application Settings → API Access and generate an API key "
            "(API access must be enabled on your account). The number shown as CID goes here. "
            "Read-only permissions are enough for the journal.",
            # Sent as a number; validate_credentials says what it may hold (ASCII digits) in its words.
            ascii_only=False,
        ),
        CredentialField(
            "sec",
            "API secret (sec)",
            secret=True,
            help_text="Shown once next to the CID when you generate the API key (Application Settings → API "
            "Access). If you lost it, generate a new key.",
        ),
        CredentialField(
            "api_host",
            "API host",
            required=False,
            help_text="Leave empty: Tradovate tells us your organisation's API host when you sign in. Only if a "
            "sync says Tradovate moved your login without naming its host, enter the host your firm or "
            "NinjaTrader gave you, e.g. demo-yourfirm.tradovateapi.com.",
        ),
        CredentialField(
            "device_id",
            "Device ID",
            required=False,
            help_text="Optional. Tradovate ties an API key to the device that first uses it; leave empty and "
            "we send a stable id derived from your username.",
        ),
    )
    base_urls = {
        "demo": "https://demo.tradovateapi.com/v1",
        "live": "https://live.tradovateapi.com/v1",
    }
    # /fill/list returns the whole trading day on every call, so a wide overlap costs no extra
    # listing; it only re-resolves fills the journal dedups on their id.
    sync_overlap = timedelta(hours=1)
    # UNCONFIRMED: /fill/list reportedly returns the current trading day only. Reach further
    # anyway, so that if it returns more, a first sync keeps it.
    max_history = timedelta(days=30)
    # What the calendar's coverage counts on until the longer reach is confirmed: a day not
    # synced within a day of its close may have lost its fills.
    history_reach = timedelta(days=1)
    session_calendar = "CMES"
    token_renew_margin = timedelta(minutes=15)

    @classmethod
    def validate_credentials(cls, values: Mapping[str, str], environment: str = "") -> dict[str, str]:
        problems = super().validate_credentials(values, environment)
        cid = values.get("cid")
        # ASCII digits only: str.isdigit() also passes "²", which int() then refuses.
        if isinstance(cid, str) and cid.strip() and "cid" not in problems and not CID.fullmatch(cid.strip()):
            problems["cid"] = (
                "The API key ID (cid) is a whole number of at most 10 digits, as shown under API Access in Tradovate."
            )
        host = values.get("api_host")
        if isinstance(host, str) and host.strip() and "api_host" not in problems and api_base_url(host) is None:
            problems["api_host"] = (
                "The API host must be one of Tradovate's or NinjaTrader's own (e.g. demo-yourfirm.tradovateapi.com); "
                "we send your session to it, so no other address is accepted."
            )
        return problems

    # --- session --------------------------------------------------------------------------
    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        username = credentials["username"].strip()
        scope = scope_for(username.lower())
        body = {
            "name": username,
            "password": credentials["password"],
            "appId": credentials["app_id"].strip(),
            "appVersion": credentials["app_version"].strip(),
            "cid": int(credentials["cid"].strip()),
            "sec": credentials["sec"].strip(),
            # Tradovate binds an API key to a device: the same id on every login avoids a new-device refusal.
            "deviceId": credentials.get("device_id").strip()
            or hashlib.sha256(f"trade-journal:{username.lower()}".encode()).hexdigest()[:32],
        }
        # The hosts are unknown until this answer: a login always goes to the shared host.
        data = self._call("POST", "/auth/accesstokenrequest", scope=scope, buckets=AUTH_BUCKETS, body=body)
        if data.get("errorText") or not data.get("accessToken"):
            reason = _scrub(str(data.get("errorText") or "no session was returned"), (body["password"], body["sec"]))
            raise BrokerAuthError(
                f"Tradovate refused the login: {reason}. Check the username, password, API key ID (cid) and "
                "secret (sec) for the chosen environment, then save the connection again.",
                provider=self.key,
            )
        # The trader's own host stands in only until Tradovate names one (UNCONFIRMED whether a
        # password login ever does; renewals should).
        chosen = api_base_url(credentials.get("api_host"))
        extra = {"limit_scope": scope, **({"api_hosts": {self.environment: chosen}} if chosen else {})}
        return self._session(data, extra)

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        # Renewing extends the same session: a new login would take one of the user's two session slots.
        data = self._call("GET", "/auth/renewaccesstoken", auth=auth, buckets=AUTH_BUCKETS)
        if data.get("errorText") or not data.get("accessToken"):
            raise BrokerAuthError(
                "Tradovate would not renew the session; we log in again with the saved credentials.",
                provider=self.key,
            )
        return self._session(data, auth.extra)

    def _session(self, data: Mapping[str, Any], extra: Mapping[str, Any]) -> AuthResult:
        expires_at = (
            _utc(data["expirationTime"])
            if data.get("expirationTime")
            else datetime.now(UTC) + TOKEN_LIFETIME_IF_UNSTATED
        )
        kept = {k: data[k] for k in ("userId", "name", "userStatus", "hasLive") if k in data}
        # Hosts in the answer replace the stored ones; an answer without them keeps what we had.
        hosts = api_hosts(data)
        if hosts:
            kept["api_hosts"] = hosts
        return AuthResult(token=data["accessToken"], expires_at=expires_at, extra={**extra, **kept})

    def api_url(self, auth: AuthResult | None) -> str:
        """Where this session's calls go: the host Tradovate named for its environment, else the shared one."""
        stored = (auth.extra.get("api_hosts") or {}).get(self.environment) if auth else None
        # Checked again on every use: the rule (TRADOVATE_API_HOST_DOMAINS) may have narrowed since.
        return api_base_url(stored) or self.base_url()

    # --- data -----------------------------------------------------------------------------
    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        accounts = self._list(auth, "/account/list")
        return [
            BrokerAccountInfo(
                external_id=str(a["id"]),
                name=a.get("name") or str(a["id"]),
                currency="USD",
                extra={"account_type": a.get("accountType", "")},
            )
            for a in accounts
            if not a.get("closed") and a.get("active", True)
        ]

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        # The listing takes no dates and comes whole: keep every fill within max_history, not
        # just those since the cursor, so a fill reported late (a correction, a delayed
        # report) still lands. The journal's unique constraint drops the ones it has.
        oldest = until - self.max_history
        listed, accounts = self._listing(auth)
        fills = [
            f for f in listed if str(accounts[str(f["id"])]) == account.external_id and oldest <= _utc(f["timestamp"])
        ]
        fills.sort(key=lambda f: (_utc(f["timestamp"]), f["id"]))
        instruments: dict[int, tuple[str, Decimal]] = {}
        for mine in _batches(fills, BATCH_SIZE):
            # A busted fill (active false) counts only by its id: no fee or contract is looked up for it.
            live = [f for f in mine if f.get("active", True)]
            fees = self._fill_fees(auth, [f["id"] for f in live]) if live else {}
            self._resolve_instruments(auth, {f["contractId"] for f in live}, instruments)
            yield from self.readable(mine, lambda fill, fees=fees: self._trade(fill, account, instruments, fees))

    def _trade(self, fill: dict, account: BrokerAccountInfo, instruments: dict, fees: dict) -> BrokerTrade:
        try:
            if not fill.get("active", True):
                # Busted: it never happened. Yielded so the import tombstones the fill if it was stored before.
                return BrokerTrade(
                    broker_trade_id=str(fill["id"]),
                    account_external_id=account.external_id,
                    symbol=str(fill.get("contractId") or ""),
                    side=SIDES.get(fill.get("action"), BUY),
                    quantity=_decimal(fill.get("qty") or 1),
                    price=_decimal(fill.get("price") or 0),
                    executed_at=_utc(fill["timestamp"]),
                    busted=True,
                    raw=fill,
                )
            symbol, multiplier = instruments[fill["contractId"]]
            return BrokerTrade(
                broker_trade_id=str(fill["id"]),
                account_external_id=account.external_id,
                symbol=symbol,
                side=SIDES[fill["action"]],
                quantity=_decimal(fill["qty"]),
                price=_decimal(fill["price"]),
                executed_at=_utc(fill["timestamp"]),
                fees=fees.get(fill["id"], Decimal(0)),
                currency="USD",
                asset_class="FUT",
                multiplier=multiplier,
                order_id=str(fill["orderId"]),
                raw=fill,
            )
        except (KeyError, TypeError, ValueError, InvalidOperation):
            raise UnreadableRow(
                f"fill {fill.get('id', 'without id')}: no action, qty, price or time we can read"
            ) from None

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition]:
        """GET /position/list: the account's open positions, each contract named as its fills are.

        Tradovate keeps a row for every contract traded that day, flat ones with netPos 0:
        only the others are positions. netPrice is the position's average price.
        """
        rows = [
            p
            for p in self._list(auth, "/position/list")
            if str(p.get("accountId")) == account.external_id and _decimal(p.get("netPos") or 0)
        ]
        instruments: dict[int, tuple[str, Decimal]] = {}
        self._resolve_instruments(auth, {p["contractId"] for p in rows}, instruments)
        return [
            BrokerPosition(
                symbol=instruments[p["contractId"]][0],
                quantity=_decimal(p["netPos"]),
                average_price=_decimal(p["netPrice"]) if p.get("netPrice") is not None else None,
            )
            for p in rows
        ]

    def _listing(self, auth: AuthResult) -> tuple[list[dict], dict[str, int]]:
        """The listed fills and each one's account (its order's): read once per run for every account.

        The account tasks of one run share it through the run cache, so a connection with N
        accounts costs one listing and one round of order lookups, not N.
        """

        def fetch() -> bytes:
            # Busted fills (active false) too: get_trades passes them on as busts.
            fills = self._list(auth, "/fill/list")
            accounts = {}
            for batch in _batches(fills, BATCH_SIZE):
                # A fill names no account: its order does.
                orders = self._items(auth, "order", {f["orderId"] for f in batch})
                accounts.update((str(f["id"]), orders[f["orderId"]].get("accountId")) for f in batch)
            return json.dumps({"fills": fills, "accounts": accounts}).encode()

        cache = self.run_cache
        raw = cache.once("tradovate-fills", fetch, max_s=settings.BROKER_HTTP_READ_TIMEOUT_S * 10) if cache else fetch()
        listing = json.loads(raw)
        return listing["fills"], listing["accounts"]

    def _resolve_instruments(self, auth: AuthResult, contract_ids: set[int], known: dict) -> None:
        """Fill `known` with contract id -> (contract name, value per point), three batched hops deep."""
        contracts = self._items(auth, "contract", contract_ids - known.keys())
        maturities = self._items(auth, "contractMaturity", {c["contractMaturityId"] for c in contracts.values()})
        products = self._items(auth, "product", {m["productId"] for m in maturities.values()})
        for contract_id, contract in contracts.items():
            product = products[maturities[contract["contractMaturityId"]]["productId"]]
            known[contract_id] = (contract["name"], _decimal(product["valuePerPoint"]))

    def _fill_fees(self, auth: AuthResult, fill_ids: list[int]) -> dict[int, Decimal]:
        """Total fee per fill id. UNCONFIRMED: FillFee ids equal fill ids (see FILL_FEES_PATH)."""
        records = self._list(auth, FILL_FEES_PATH, {"ids": ",".join(map(str, fill_ids))})
        fees = {r["id"]: sum((_decimal(r[k]) for k in FEE_FIELDS if r.get(k) is not None), Decimal(0)) for r in records}
        missing = len(set(fill_ids) - fees.keys())
        if missing:
            log.warning("tradovate_fill_fees_missing", fills=missing, counted_as="0")
        return fees

    def _items(self, auth: AuthResult, entity: str, ids: set[int]) -> dict[int, dict]:
        """Entities by id, BATCH_SIZE per call; every id asked for must come back."""
        found: dict[int, dict] = {}
        for batch in _batches(sorted(ids), BATCH_SIZE):
            records = self._list(auth, f"/{entity}/items", {"ids": ",".join(map(str, batch))})
            found.update((r["id"], r) for r in records)
        if not ids <= found.keys():
            raise BrokerAPIError(
                f"Tradovate did not return every {entity} the fills refer to.",
                provider=self.key,
                transient=True,
            )
        return found

    # --- one call, with Tradovate's own ways of saying "wait" -------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        auth: AuthResult | None = None,
        scope: str = "",
        buckets: tuple[str, ...] = DATA_BUCKETS,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """The JSON answer to one request, after honouring penalty tickets; raises on lockouts."""
        scope = scope or (auth.extra.get("limit_scope", "") if auth else "")
        headers = {"Authorization": f"Bearer {auth.token}"} if auth else {}
        params, body = params or {}, body or {}
        resends = 0
        while True:
            response = self.http.request(
                method,
                f"{self.api_url(auth)}{path}",
                scope=scope,
                buckets=buckets,
                allow_statuses=LOCKOUT_STATUSES + REDIRECT_STATUSES,
                headers=headers,
                params=params or None,
                json=body if method == "POST" else None,
            )
            if response.status_code in LOCKOUT_STATUSES:
                raise self._lockout(response, scope)
            if response.status_code in REDIRECT_STATUSES:
                raise self._moved(response.status_code)
            data = self.http.json(response)
            if not (isinstance(data, dict) and "p-ticket" in data):
                return data
            ticket = self._wait_out_penalty(data, last_try=resends == MAX_PENALTY_RESENDS)
            params, body = self._with_ticket(method, params, body, ticket)
            resends += 1

    def _list(self, auth: AuthResult, path: str, params: dict[str, str] | None = None) -> list[dict]:
        """A listing; a business error (errorText, ok: false, violations) comes as an object instead."""
        data = self._call("GET", path, auth=auth, params=params)
        if not isinstance(data, list):
            reason = data.get("errorText") if isinstance(data, dict) else None
            raise BrokerAPIError(
                f"Tradovate answered {path} with an error ({reason or 'unexpected answer'}). "
                "The sync will try again at the next interval; if this keeps happening, please report it.",
                provider=self.key,
            )
        return data

    @staticmethod
    def _with_ticket(method: str, params: dict, body: dict, ticket: str) -> tuple[dict, dict]:
        """Attach a penalty ticket to the resend. UNCONFIRMED for GET: sent as a query parameter,
        because the older alternative (the ticket as Bearer value) would drop the session token."""
        if method == "POST":
            return params, {**body, "p-ticket": ticket}
        return {**params, "p-ticket": ticket}, body

    def _wait_out_penalty(self, data: Mapping[str, Any], *, last_try: bool) -> str:
        """Back every worker off for the ticket's time; sleep through a short one and return the ticket."""
        limiter = get_limiter()
        if data.get("p-captcha"):
            reason = (
                "Tradovate asked for a captcha because our server sent too many requests; an automatic sync "
                "cannot solve one, so all Tradovate syncs wait about an hour. Nothing to do on your side."
            )
            raise self.blocked(reason, CAPTCHA_WAIT_S)
        wait = capped_wait(float(data.get("p-time") or 0))
        log.warning("tradovate_penalty_ticket", p_time=wait)
        reason = f"Tradovate asked us to pause for {max(1, round(wait))} s (too many requests from our server)."
        # Tickets count against our whole IP range, so every worker must back off, not just this one.
        limiter.block(self.limits_name, wait, reason=reason)
        if last_try or wait > settings.BROKER_RATE_LIMIT_MAX_SLEEP_S:
            raise BrokerRateLimitError(reason, provider=self.key, retry_after=max(wait, 1.0))
        time.sleep(wait)
        return data["p-ticket"]

    def _moved(self, status: int) -> TradovateHostMoved:
        # An auth error, so the engine renews or logs in again on the shared host, which
        # answers with the new hosts; only if that fails too does the trader read this.
        # Where the redirect pointed is not said: its query may hold the token.
        return TradovateHostMoved(
            f"Tradovate now serves this login from your organisation's own API host (HTTP {status}) and did not "
            "tell us which one when we signed in again. We do not follow the redirect, so that your session is "
            "never sent to an address Tradovate did not name. Enter the host your firm or NinjaTrader gave you "
            "(e.g. demo-yourfirm.tradovateapi.com) in the connection's API host field and save it; or, if you "
            "signed in at Tradovate, press Reconnect.",
            provider=self.key,
            status_code=status,
        )

    def _lockout(self, response: requests.Response, scope: str) -> BrokerRateLimitError:
        wait = parse_retry_after(response)
        wait = LOCKOUT_WAIT_S if wait is None else wait
        reason = (
            f"Tradovate locked out this user for too many requests (HTTP {response.status_code}); "
            "meanwhile keep other API tools on this login quiet."
        )
        # The lockout is per Tradovate user: block that user's calls, not every trader's.
        return self.blocked(reason, wait, scope=scope, status_code=response.status_code)


PROVIDERS = (TradovateProvider,)
