"""ProjectX Gateway API (futures prop firms: TopstepX, Alpha Futures, Bulenox…): one stored day-long session per user.

Every firm runs the same JSON API on its own host; the firm → host table is data
(projectx_firms.toml, extended by the operator's PROJECTX_FIRMS_FILE). Every call is a POST
whose business failures come back as HTTP 200 with `success: false` and an errorCode that means
something different on each endpoint, so each call's answer is read through `_envelope`.
Facts and sources: docs/brokers/projectx.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import structlog
from django.conf import settings

from brokers.providers import firms
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAPIError, BrokerAuthError
from brokers.providers.ratelimit import scope_for
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

log = structlog.get_logger("brokers.projectx")

FIRMS_FILE = Path(__file__).with_name("projectx_firms.toml")
# A bare host name: the firm's table must not smuggle in a scheme, a port or a path.
HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")
SIDES = {0: BUY, 1: SELL}
# Position/searchOpen's `type`: the direction of an unsigned size.
POSITION_DIRECTIONS = {1: 1, 2: -1}
# The docs' token life; the token's own `exp` claim wins when it has one.
TOKEN_LIFETIME = timedelta(hours=24)
# One trading day per trade search, as the facts advise: the endpoint has no paging.
WINDOW = timedelta(days=1)
# UNCONFIRMED: no result cap is documented. A window answering this many trades or more may
# have been cut short silently, so it is asked again in halves, down to MIN_WINDOW.
SUSPECT_TRUNCATED = 1000
MIN_WINDOW = timedelta(minutes=1)
# UNCONFIRMED: whether `fees` already includes `commissions`. The examples show only `fees`
# (exchange and clearing charges per side), so a `commissions` figure is added to it.
FEES_INCLUDE_COMMISSIONS = False
# Contracts seen by this process, (API base, contract id) -> (symbol, point value). A contract
# never changes its name or tick value, so the cache outlives runs; bounded for long workers.
_CONTRACTS: dict[tuple[str, str], tuple[str, Decimal]] = {}
CONTRACT_CACHE_SIZE = 5000
# When Contract/searchById cannot name a contract: ProjectX product code -> (root, point
# value). EP and ENQ are documented; the micro codes are UNCONFIRMED (read from client code).
FALLBACK_ROOTS = {
    "EP": ("ES", Decimal(50)),
    "ENQ": ("NQ", Decimal(20)),
    "MES": ("MES", Decimal(5)),
    "MNQ": ("MNQ", Decimal(2)),
}
# CON.F.US.EP.H25: the product code, then month letter and two-digit year.
CONTRACT_ID = re.compile(r"CON\.F\.[A-Z]+\.(?P<product>[A-Z0-9]+)\.(?P<month>[FGHJKMNQUVXZ])(?P<year>[0-9]{2})")
# LoginErrorCode values (swagger enum) a trader can act on; every other code reads generically.
LOGIN_REFUSALS = {
    3: "{firm} refused the username or API key. Check the ProjectX username and paste the API key again "
    "(or generate a new one in the platform under Settings → API), then save the connection again.",
    7: "{firm} wants you to accept its agreements first: log in to the trading platform, accept them, "
    "then save the connection again.",
    9: "{firm} found no ProjectX API subscription for this user. API access is bought at "
    "dashboard.projectx.com and linked in the platform under Settings → API; then save the connection again.",
    10: "{firm} has not enabled API access for this user (API key login is switched off). Ask your firm "
    "to enable it, then save the connection again.",
}
# Contract/searchById's ContractNotFound; Trade/search's AccountNotFound.
CONTRACT_NOT_FOUND = 1
ACCOUNT_NOT_FOUND = 1


def load_firms(extra_file: str = "") -> dict[str, dict[str, str]]:
    """Firm key -> {"name", "host"}: the shipped table, then the operator's file over it."""
    return firms.load_firms(
        FIRMS_FILE,
        extra_file,
        "PROJECTX_FIRMS_FILE",
        needs="a name and a bare host such as api.topstepx.com (no https://, no port, no path)",
        fields=_host,
    )


def _host(row: Mapping[str, Any]) -> dict[str, str] | None:
    host = str(row.get("host", "")).strip().lower()
    return {"host": host} if HOST.fullmatch(host) else None


FIRMS = load_firms(settings.PROJECTX_FIRMS_FILE)


def _utc(value: str) -> datetime:
    # Fractions of varying length (.523293, .16776) and offsets: fromisoformat reads them all.
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decimal(value: Any) -> Decimal:
    # JSON numbers arrive as floats; their shortest repr is the decimal ProjectX sent.
    return Decimal(str(value))


def _expiry(token: str, now: datetime) -> datetime:
    """When the JWT says it ends (its `exp`), or the documented 24 hours from now."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error, OverflowError):
        return now + TOKEN_LIFETIME


class ProjectXProvider(BrokerProvider):
    key = "projectx"
    display_name = "ProjectX (futures prop firms)"
    credential_fields = (
        CredentialField(
            "firm",
            "Prop firm",
            choices=tuple(sorted(((k, f["name"]) for k, f in FIRMS.items()), key=lambda c: c[1].lower())),
            help_text="The firm whose ProjectX platform you trade on (TopstepX is Topstep's). "
            "Firm not listed? The operator of this journal can add it.",
        ),
        CredentialField(
            "username",
            "ProjectX username",
            help_text="The username you log in to your firm's ProjectX platform with.",
        ),
        CredentialField(
            "api_key",
            "API key",
            secret=True,
            help_text="In your firm's platform: Settings → API. API access is a ProjectX subscription "
            "(bought at dashboard.projectx.com and linked there first). The key could place orders; "
            "the journal only reads with it, and stores it encrypted.",
        ),
    )
    # A sync every few hours costs one trade search per account while re-reading the last
    # 20 hours, so a fill voided hours later is still seen and removed (UNCONFIRMED how late
    # a void can come).
    sync_overlap = timedelta(hours=20)
    # One request per day of history and account: 90 days is half a minute of the budget per
    # account, and reaches back over a usual evaluation.
    max_history = timedelta(days=90)
    # The docs advise renewing a 24 h token when it is about 20 hours old.
    token_renew_margin = timedelta(hours=4)
    trades_ascending = True

    # --- session --------------------------------------------------------------------------
    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        firm = credentials["firm"].strip()
        username = credentials["username"].strip()
        api_key = credentials["api_key"].strip()
        extra = {"firm": firm, "limit_scope": scope_for(f"{firm}:{username.lower()}")}
        data = self._post(extra, "/api/Auth/loginKey", {"userName": username, "apiKey": api_key})
        if data.get("success") is not True or not data.get("token"):
            raise BrokerAuthError(self._login_refusal(firm, data, (username, api_key)), provider=self.key)
        return self._session(data["token"], extra)

    def _login_refusal(self, firm: str, data: Mapping[str, Any], secrets: tuple[str, ...]) -> str:
        name = self._firm(firm)["name"]
        code = data.get("errorCode")
        if code in LOGIN_REFUSALS:
            return LOGIN_REFUSALS[code].format(firm=name)
        reason = str(data.get("errorMessage") or "no reason given")
        for secret in secrets:
            reason = reason.replace(secret, "***") if secret else reason
        return (
            f"{name} refused the login (ProjectX error {code}: {reason}). Check the username and API key, "
            "then save the connection again."
        )

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        # Renewing keeps the login budget for syncs; a new login would also work (old tokens stay valid).
        data = self._post(auth.extra, "/api/Auth/validate", None, auth=auth)
        if data.get("success") is not True or not data.get("newToken"):
            raise BrokerAuthError(
                "ProjectX would not renew the session; we log in again with the saved API key.", provider=self.key
            )
        return self._session(data["newToken"], auth.extra)

    @staticmethod
    def _session(token: str, extra: Mapping[str, Any]) -> AuthResult:
        now = datetime.now(UTC)
        return AuthResult(token=token, expires_at=_expiry(token, now), extra=dict(extra), issued_at=now)

    # --- data -----------------------------------------------------------------------------
    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        # false also lists ended (passed or failed) evaluation accounts, whose history a trader keeps.
        data = self._post(auth.extra, "/api/Account/search", {"onlyActiveAccounts": False}, auth=auth)
        self._envelope(data, "the account list")
        return [
            BrokerAccountInfo(
                external_id=str(a["id"]),
                name=a.get("name") or str(a["id"]),
                currency="USD",
                extra={"can_trade": bool(a.get("canTrade")), "simulated": a.get("simulated")},
            )
            for a in data.get("accounts") or []
        ]

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        seen: set[int] = set()
        start = since
        while start < until:
            end = min(start + WINDOW, until)
            found = [t for t in self._search(auth, account, start, end) if t["id"] not in seen]
            seen.update(t["id"] for t in found)
            found.sort(key=lambda t: (_utc(t["creationTimestamp"]), t["id"]))
            contracts = self._contracts(auth, {t["contractId"] for t in found if not t.get("voided")})
            for record in found:
                yield self._fill(record, account, contracts)
            start = end

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition]:
        """POST /api/Position/searchOpen: the account's open positions, each contract named as its fills are."""
        data = self._post(auth.extra, "/api/Position/searchOpen", {"accountId": int(account.external_id)}, auth=auth)
        self._envelope(data, "the open positions")
        rows = data.get("positions") or []
        try:
            contracts = self._contracts(auth, {str(p["contractId"]) for p in rows})
            return [
                BrokerPosition(
                    symbol=contracts[str(p["contractId"])][0],
                    quantity=POSITION_DIRECTIONS[p["type"]] * _decimal(p["size"]),
                    average_price=_decimal(p["averagePrice"]) if p.get("averagePrice") is not None else None,
                )
                for p in rows
            ]
        except (KeyError, TypeError, InvalidOperation):
            raise self.unreadable("the open positions") from None

    def _search(self, auth: AuthResult, account: BrokerAccountInfo, start: datetime, end: datetime) -> list[dict]:
        """Trades of one window. Neighbouring windows share their edge: get_trades drops a trade both return."""
        body = {"accountId": int(account.external_id), "startTimestamp": _stamp(start), "endTimestamp": _stamp(end)}
        data = self._post(auth.extra, "/api/Trade/search", body, auth=auth)
        if data.get("success") is False and data.get("errorCode") == ACCOUNT_NOT_FOUND:
            raise BrokerAPIError(
                f"ProjectX no longer finds account {account.name}; if your firm closed it, its trades stay in "
                "the journal and you can switch this account's sync off.",
                provider=self.key,
            )
        self._envelope(data, "the trade search")
        trades = data.get("trades") or []
        if len(trades) >= SUSPECT_TRUNCATED and end - start > MIN_WINDOW:
            middle = start + (end - start) / 2
            return self._search(auth, account, start, middle) + self._search(auth, account, middle, end)
        return trades

    def _fill(
        self, record: Mapping[str, Any], account: BrokerAccountInfo, contracts: Mapping[str, tuple[str, Decimal]]
    ) -> BrokerTrade:
        executed_at = _utc(record["creationTimestamp"])
        if record.get("voided"):
            # A bust: only its id matters to the journal (its contract is not even looked up).
            return BrokerTrade(
                broker_trade_id=str(record["id"]),
                account_external_id=account.external_id,
                symbol=str(record.get("contractId") or ""),
                side=SIDES.get(record.get("side"), BUY),
                quantity=_decimal(record.get("size") or 1),
                price=_decimal(record.get("price") or 0),
                executed_at=executed_at,
                busted=True,
                raw=record,
            )
        side = SIDES.get(record.get("side"))
        if side is None:
            raise BrokerAPIError(
                f"ProjectX reported trade {record['id']} with a side we do not know ({record.get('side')!r}). "
                "Please report it.",
                provider=self.key,
            )
        fees = _decimal(record.get("fees") or 0)
        if not FEES_INCLUDE_COMMISSIONS:
            fees += _decimal(record.get("commissions") or 0)
        symbol, multiplier = contracts[record["contractId"]]
        return BrokerTrade(
            broker_trade_id=str(record["id"]),
            account_external_id=account.external_id,
            symbol=symbol,
            side=side,
            quantity=_decimal(record["size"]),
            price=_decimal(record["price"]),
            executed_at=executed_at,
            # A cost whichever sign a firm reports it with.
            fees=abs(fees),
            currency="USD",
            asset_class="FUT",
            multiplier=multiplier,
            order_id=str(record.get("orderId") or ""),
            raw=record,
        )

    def _contracts(self, auth: AuthResult, contract_ids: set[str]) -> dict[str, tuple[str, Decimal]]:
        """Symbol and point value of each contract: one lookup per contract this process has not met."""
        base = self._base(auth.extra["firm"])
        if len(_CONTRACTS) > CONTRACT_CACHE_SIZE:
            _CONTRACTS.clear()
        for contract_id in sorted(contract_ids):
            if (base, contract_id) not in _CONTRACTS:
                _CONTRACTS[(base, contract_id)] = self._contract(auth, contract_id)
        return {c: _CONTRACTS[(base, c)] for c in contract_ids}

    def _contract(self, auth: AuthResult, contract_id: str) -> tuple[str, Decimal]:
        data = self._post(auth.extra, "/api/Contract/searchById", {"contractId": contract_id}, auth=auth)
        # Older versions of the docs answered with a `contracts` list: accept both shapes.
        contract = data.get("contract") or next(iter(data.get("contracts") or []), None)
        if (data.get("success") is False and data.get("errorCode") == CONTRACT_NOT_FOUND) or not contract:
            return self._fallback_contract(contract_id)
        self._envelope(data, f"contract {contract_id}")
        tick_size, tick_value = _decimal(contract["tickSize"]), _decimal(contract["tickValue"])
        return contract["name"], (tick_value / tick_size).normalize()

    def _fallback_contract(self, contract_id: str) -> tuple[str, Decimal]:
        match = CONTRACT_ID.fullmatch(contract_id)
        if not match or match["product"] not in FALLBACK_ROOTS:
            raise BrokerAPIError(
                f"ProjectX could not tell us what contract {contract_id} is, so its fills cannot be valued. "
                "Please report it.",
                provider=self.key,
            )
        root, point_value = FALLBACK_ROOTS[match["product"]]
        log.warning("projectx_contract_fallback", contract_id=contract_id)
        return f"{root}{match['month']}{match['year'][-1]}", point_value

    # --- one call --------------------------------------------------------------------------
    def _firm(self, firm: str) -> dict[str, str]:
        if firm not in FIRMS:
            raise BrokerAuthError(
                f"This journal no longer lists the prop firm {firm!r}. Choose your firm again on the "
                "connection's page and save it.",
                provider=self.key,
            )
        return FIRMS[firm]

    def _base(self, firm: str) -> str:
        known = self._firm(firm)
        return (settings.BROKER_BASE_URLS.get(self.key) or f"https://{known['host']}").rstrip("/")

    def _post(self, extra: Mapping[str, Any], path: str, body: dict | None, *, auth: AuthResult | None = None) -> dict:
        """The JSON object one POST answers; every endpoint only reads, so a resend is harmless."""
        response = self.http.request(
            "POST",
            self._base(extra["firm"]) + path,
            scope=extra["limit_scope"],
            idempotent=True,
            headers={"Authorization": f"Bearer {auth.token}"} if auth else {},
            json=body,
        )
        data = self.http.json(response)
        if not isinstance(data, dict):
            raise self.unreadable()
        return data

    def _envelope(self, data: Mapping[str, Any], what: str) -> None:
        """Raise for HTTP 200 with success false (error codes differ per endpoint, so `what` names the call)."""
        if data.get("success") is False:
            raise BrokerAPIError(
                f"ProjectX refused {what} (error {data.get('errorCode')}: "
                f"{data.get('errorMessage') or 'no reason given'}). If this keeps happening, please report it.",
                provider=self.key,
            )


PROVIDERS = (ProjectXProvider,)
