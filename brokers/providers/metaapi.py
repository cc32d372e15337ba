"""MetaTrader 4/5 at any broker, through MetaApi's REST API (provisioning and client), on our HTTP layer.

MetaTrader has no web API of its own: MetaApi runs a terminal per MT account in its cloud. The
journal provisions the trader's account there read-only (investor password) with a MetaApi token,
either the operator's (METAAPI_TOKEN: the installation pays) or the trader's own (a credential
field: the trader pays and sees the account in their MetaApi dashboard). MetaApi's SDK is not
used: its licence allows it only inside MetaApi's own service (docs/brokers/metatrader.md).

Who is who: one journal connection is one MT account (platform, server, login); authenticate()
finds the MetaApi account this journal provisioned for it (tagged, see metaapi_accounts.py) or adds it, and the
session carries the token and MetaApi's account id. A sync deploys the terminal (billed by the
hour), waits with the run paused until it is connected, reads the deals, and undeploys again
unless METAAPI_KEEP_DEPLOYED. Deleting the connection removes the MetaApi account (forget()).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import requests
import structlog
from django.conf import settings

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerError,
    BrokerRateLimitError,
    BrokerSetupError,
)
from brokers.providers.metaapi_accounts import (
    GONE,
    MetaApiAccounts,
    body_of,
    digest,
    metaapi_id,
    operator_token,
    parse_time,
)
from brokers.providers.ratelimit import get_limiter, scope_for
from brokers.providers.text import printable
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

log = structlog.get_logger("brokers.metaapi")

PROVISIONING_URL = "https://mt-provisioning-api-v1.agiliumtrade.agiliumtrade.ai"
PLATFORMS = (("mt5", "MetaTrader 5"), ("mt4", "MetaTrader 4"))
# Only buys and sells are fills; a cancelled one is a bust of the deal with the same ticket
# (MetaTrader changes the deal's type in place). Balance, credit, commission, interest,
# dividend and tax deals are cash movements, not trades.
FILL_TYPES = {"DEAL_TYPE_BUY": BUY, "DEAL_TYPE_SELL": SELL}
BUST_TYPES = {"DEAL_TYPE_BUY_CANCELED": BUY, "DEAL_TYPE_SELL_CANCELED": SELL}
POSITION_DIRECTIONS = {"POSITION_TYPE_BUY": 1, "POSITION_TYPE_SELL": -1}
# MetaApi's maximum (and default) page of history deals.
PAGE_SIZE = 1000
# A window is one request plus pages, its deals sorted in memory before they are yielded: a year
# keeps a first sync of two years at three requests, and MT5 G2 returns 5,000 deals at most anyway.
WINDOW = timedelta(days=365)
# MT5 accounts on MetaApi's G2 servers return only the last 5,000 deals (metaapi-node.js-sdk#46).
G2_DEAL_LIMIT = 5000
READY = ("DEPLOYED", "CONNECTED")
# States from which a deploy starts the terminal; the others are on their way somewhere.
DEPLOYABLE = {"CREATED", "UNDEPLOYED", "DEPLOY_FAILED", "REDEPLOY_FAILED", "UNDEPLOY_FAILED"}
# Client errors that mean "the terminal is not ready yet", not a failure.
NOT_READY_ERRORS = {"NotSynchronizedError", "NotAuthenticatedError"}
SPEC_CACHE_S = 24 * 3600
# MetaApi's SDK keeps the client API's domain about this long.
DOMAIN_CACHE_S = 600


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0))


def _contract_size(spec: Mapping[str, Any]) -> Decimal:
    # A symbol the broker no longer lists has no contract size: its volume stays in lots.
    return _decimal(spec["contractSize"]) if spec.get("contractSize") else Decimal("1")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class MetaTraderProvider(BrokerProvider):
    key = "metatrader"
    display_name = "MetaTrader 4/5 (any broker, through MetaApi)"
    base_urls = {"": PROVISIONING_URL}
    credential_fields = (
        CredentialField("platform", "Platform", choices=PLATFORMS),
        CredentialField(
            "server",
            "Server",
            suggest=True,
            help_text="The server your MetaTrader terminal logs in to, e.g. ICMarketsSC-Demo: type your "
            "broker's name to find it.",
        ),
        CredentialField("login", "Login", help_text="Your MetaTrader account number."),
        CredentialField(
            "investor_password",
            "Investor password",
            secret=True,
            help_text="The read-only password: it can see trades but not place them. In MetaTrader: Tools → "
            "Options → Server → Change, then 'Change investor (read only) password'.",
        ),
        CredentialField(
            "metaapi_token",
            "Your MetaApi token",
            secret=True,
            required=False,
            help_text="Optional where this installation provides MetaApi: your own token from "
            "app.metaapi.cloud/token, billed to your MetaApi account.",
        ),
    )
    # MetaApi answers right after a deploy from a terminal still loading history, and a broker
    # may cancel a deal days later: every sync reads three days again.
    sync_overlap = timedelta(days=3)
    # Two years: enough for a journal, and about what MT5 G2's 5,000 deals cover for an active trader.
    max_history = timedelta(days=730)
    # MetaApi's SDK retries 409 (conflict) and 500 as well as gateway errors.
    transient_statuses = frozenset({409, 500, 502, 503, 504})
    trades_ascending = True
    provisions = True
    # What get_positions found of the terminal, for the deals read that follows in the same run:
    # the account once connected, or why it did not connect.
    _terminal: dict | BrokerError | None = None

    @property
    def api(self) -> MetaApiAccounts:
        return MetaApiAccounts(self.http, key=self.key, limits_name=self.limits_name)

    @classmethod
    def validate_credentials(cls, values: Mapping[str, str], environment: str = "") -> dict[str, str]:
        problems = super().validate_credentials(values, environment)
        login = values.get("login")
        if "login" not in problems and isinstance(login, str) and not login.strip().isdigit():
            problems["login"] = "Login is your MetaTrader account number: digits only."
        if "metaapi_token" not in problems and not (values.get("metaapi_token") or "").strip() and not operator_token():
            problems["metaapi_token"] = (
                "This installation has no MetaApi account of its own: enter your MetaApi token "
                "(app.metaapi.cloud/token)."
            )
        return problems

    # --- the contract ------------------------------------------------------------------------
    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        """Find the MetaApi account this journal provisioned for this MT login, or provision it."""
        token, own = self._token(credentials)
        platform, server, login = credentials["platform"], credentials["server"], credentials["login"].strip()
        password = credentials["investor_password"]
        refusal = f"metatrader:refused:{digest(platform, server, login, password)}"
        if get_limiter().client.exists(refusal):
            raise self.api.refused_login(remembered=True)
        account = self.api.find(token, own, platform, server, login)
        if account is None:
            account = self.api.create(token, own, platform, server, login, password, refusal)
        else:
            self.api.update(token, own, account, password)
        return AuthResult(
            token=token,
            extra={
                "account_id": metaapi_id(account),
                "own_token": own,
                "platform": platform,
                "type": str(account.get("type") or "cloud-g2"),
            },
        )

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        return auth  # a MetaApi token does not expire on its own

    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        account = self._account(auth)
        login, server = str(account.get("login") or ""), str(account.get("server") or "")
        platform = str(account.get("platform") or auth.extra.get("platform") or "").upper()
        return [
            BrokerAccountInfo(
                external_id=f"{login}@{server}",
                name=f"{platform} {login} · {server}",
                # The account currency is known only to a deployed terminal; a trade's currency is its
                # symbol's profit currency (see _trade), so this is a default, not a fact.
                currency=str(account.get("baseCurrency") or "USD")[:3],
            )
        ]

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition]:
        """The terminal's open positions, in the fills' units (lots × the symbol's contract size).

        Read before the deals, so this call deploys the terminal and waits for it. A hedging
        account may hold several positions in one symbol: the comparison adds them up.
        """
        try:
            self._terminal = deployed = self._ready(auth)
        except BrokerRateLimitError:
            raise
        except BrokerError as exc:
            # The terminal did not connect: the read of the deals that follows fails with this, not after a second wait.
            self._terminal = exc
            raise
        base = f"{self._client_url(auth, deployed)}/users/current/accounts/{auth.extra['account_id']}"
        rows = self.http.json(self._client_call(auth, f"{base}/positions", params={"refreshTerminalState": "false"}))
        if not isinstance(rows, list):
            raise self.unreadable("the open positions")
        specs: dict[str, dict] = {}
        try:
            return [
                BrokerPosition(
                    symbol=str(p["symbol"]),
                    quantity=POSITION_DIRECTIONS[p["type"]]
                    * _decimal(p["volume"])
                    * _contract_size(self._spec(auth, base, str(p["symbol"]), specs)),
                    average_price=_decimal(p["openPrice"]) if p.get("openPrice") is not None else None,
                    mark_price=_decimal(p["currentPrice"]) if p.get("currentPrice") is not None else None,
                )
                for p in rows
            ]
        except (KeyError, TypeError, InvalidOperation):
            raise self.unreadable("the open positions") from None

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        try:
            if isinstance(self._terminal, BrokerError):
                raise self._terminal
            yield from self._deals(auth, self._terminal or self._ready(auth), account, since, until)
        except BrokerRateLimitError:
            raise  # a wait: the terminal stays up for the run that continues
        except BrokerError:
            self._release(auth, quietly=True)
            raise
        self._release(auth)

    def forget(self, credentials: BrokerCredentials, auth: AuthResult | None) -> None:
        """Remove the MetaApi account this journal provisioned for the connection, if there is one."""
        if auth is not None and auth.extra.get("account_id"):
            (token, own), account_id = self._caller(auth), auth.extra["account_id"]
        else:
            token, own = self._token(credentials)
            found = self.api.find(token, own, credentials["platform"], credentials["server"], credentials["login"])
            if found is None:
                return
            account_id = metaapi_id(found)
        path = f"/users/current/accounts/{account_id}"
        response = self.api.call(token, own, "DELETE", path, allow=(404,))
        log.info("metaapi_account_removed", account_id=account_id, status=response.status_code)

    # --- what the connection form calls ------------------------------------------------------
    def suggestions(self, field: str, query: str, values: Mapping[str, str]) -> list[tuple[str, str]]:
        return self.api.known_servers(query, values.get("platform") or "mt5") if field == "server" else []

    # --- provisioning ------------------------------------------------------------------------
    def _token(self, credentials: BrokerCredentials) -> tuple[str, bool]:
        own = credentials.get("metaapi_token").strip()
        if own:
            return own, True
        if operator_token():
            return operator_token(), False
        raise BrokerSetupError(
            "This installation's MetaApi token (METAAPI_TOKEN) is not set up any more: enter your own MetaApi "
            "token on this connection, or ask the operator to set it back.",
            provider=self.key,
            field="metaapi_token",
        )

    # --- deployment --------------------------------------------------------------------------
    def _account(self, auth: AuthResult) -> dict:
        path = f"/users/current/accounts/{auth.extra['account_id']}"
        response = self.api.call(*self._caller(auth), "GET", path, allow=(404,))
        account = self.http.json(response) if response.status_code != 404 else None
        if not isinstance(account, dict) or account.get("state") in GONE:
            raise BrokerAuthError(
                "The MetaApi account of this connection is gone (removed in the MetaApi dashboard?). Edit the "
                "connection and save it again to add it anew; your trades stay.",
                provider=self.key,
                status_code=response.status_code,
            )
        return account

    def _ready(self, auth: AuthResult) -> dict:
        """The account once its terminal is deployed and connected; until then a wait with the run paused."""
        account = self._account(auth)
        state, status = account.get("state"), account.get("connectionStatus")
        account_id = auth.extra["account_id"]
        marker = f"metatrader:deploying:{scope_for(account_id)}"
        client = get_limiter().client
        if (state, status) == READY:
            client.delete(marker)  # the next wait for this terminal is timed afresh
            return account
        marker_life = max(60, int(settings.METAAPI_CONNECT_TIMEOUT_S * 2))
        if state in DEPLOYABLE:
            path = f"/users/current/accounts/{account_id}/deploy"
            self.api.call(*self._caller(auth), "POST", path, idempotent=True)
            client.set(marker, datetime.now(UTC).isoformat(), ex=marker_life)
            reason = "Starting your MetaTrader terminal at MetaApi: the first connection can take a few minutes."
        else:
            # A terminal we did not start (kept deployed, or lost its broker) gets the same time to connect.
            client.set(marker, datetime.now(UTC).isoformat(), nx=True, ex=marker_life)
            started = client.get(marker)
            waited = (datetime.now(UTC) - datetime.fromisoformat(started.decode())).total_seconds()
            if waited > settings.METAAPI_CONNECT_TIMEOUT_S:
                client.delete(marker)
                raise BrokerAPIError(self._not_connecting(status, waited), provider=self.key, transient=True)
            reason = f"Waiting for your MetaTrader terminal at MetaApi to connect to the broker ({state}, {status})."
        raise BrokerRateLimitError(reason, provider=self.key, retry_after=settings.METAAPI_CONNECT_POLL_S)

    def _not_connecting(self, status: Any, waited: float) -> str:
        if status == "DISCONNECTED_FROM_BROKER":
            return (
                "MetaApi's terminal cannot log in to your broker's server. If you changed the investor password, "
                "edit the connection and enter the new one; otherwise the broker's server may be down."
            )
        return f"Your MetaTrader terminal at MetaApi did not connect within {round(waited / 60)} minutes."

    def _release(self, auth: AuthResult, *, quietly: bool = False) -> None:
        """Undeploy after reading: MetaApi bills deployed hours (unless the operator keeps terminals up)."""
        if settings.METAAPI_KEEP_DEPLOYED:
            return
        path = f"/users/current/accounts/{auth.extra['account_id']}/undeploy"
        try:
            self.api.call(*self._caller(auth), "POST", path, idempotent=True)
        except BrokerError as exc:
            if not quietly:
                raise
            log.warning("metaapi_undeploy_failed", account_id=auth.extra["account_id"], error=str(exc))

    # --- deals -------------------------------------------------------------------------------
    def _client_url(self, auth: AuthResult, account: Mapping[str, Any]) -> str:
        """The client API of the account's own region (calls to another region hang)."""
        if settings.METAAPI_CLIENT_URL:
            return settings.METAAPI_CLIENT_URL.rstrip("/")
        client = get_limiter().client
        domain = client.get("metatrader:client-domain")
        if domain is None:
            answer = self.http.json(self.api.call(*self._caller(auth), "GET", "/users/current/servers/mt-client-api"))
            domain = str((answer or {}).get("domain") or "agiliumtrade.ai").encode()
            client.set("metatrader:client-domain", domain, ex=DOMAIN_CACHE_S)
        region = str(account.get("region") or "new-york")
        return f"https://mt-client-api-v1.{region}.{domain.decode()}"

    def _deals(
        self, auth: AuthResult, deployed: dict, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        base = f"{self._client_url(auth, deployed)}/users/current/accounts/{auth.extra['account_id']}"
        specs: dict[str, dict] = {}
        seen = 0
        start = since
        while start < until:
            end = min(start + WINDOW, until)
            # A window is yielded only once every page of it came complete: a pause while MetaApi
            # synchronises leaves the cursor before the window, never past a partial page.
            deals = list(self._window(auth, base, start, end))
            seen += len(deals)
            trades = [t for t in (self._trade(d, auth, base, account, specs) for d in deals) if t is not None]
            yield from sorted(trades, key=lambda t: t.executed_at)
            start = end
        first_sync = since <= until - self.max_history + timedelta(days=1)
        if first_sync and seen >= G2_DEAL_LIMIT and auth.extra.get("platform") == "mt5":
            self.notes.append(
                f"MetaApi gives at most the last {G2_DEAL_LIMIT:,} deals of an MT5 account, and this first import "
                "reached that limit: older trades are missing. Import them from an MT5 history report."
            )

    def _window(self, auth: AuthResult, base: str, start: datetime, end: datetime) -> Iterator[dict]:
        offset = 0
        while True:
            url = f"{base}/history-deals/time/{quote(_stamp(start))}/{quote(_stamp(end))}"
            response = self._client_call(auth, url, params={"offset": offset, "limit": PAGE_SIZE})
            page = self.http.json(response)
            rows = page.get("deals") if isinstance(page, dict) else page
            if not isinstance(rows, list):
                raise self.unreadable()
            if isinstance(page, dict) and page.get("synchronizing"):
                raise BrokerRateLimitError(
                    "MetaApi is still loading this account's history from the broker.",
                    provider=self.key,
                    retry_after=settings.METAAPI_CONNECT_POLL_S,
                )
            yield from rows
            offset += len(rows)
            if len(rows) < PAGE_SIZE:
                return

    def _spec(self, auth: AuthResult, base: str, symbol: str, specs: dict[str, dict]) -> dict:
        """The symbol's contract size and profit currency, cached per MetaApi account for a day."""
        if symbol in specs:
            return specs[symbol]
        client = get_limiter().client
        cache_key = f"metatrader:spec:{auth.extra['account_id']}:{hashlib.sha256(symbol.encode()).hexdigest()[:24]}"
        cached = client.get(cache_key)
        if cached:
            specs[symbol] = json.loads(cached)
            return specs[symbol]
        response = self._client_call(auth, f"{base}/symbols/{quote(symbol, safe='')}/specification", allow=(404,))
        body = self.http.json(response) if response.status_code != 404 else {}
        spec = {
            "contractSize": (body or {}).get("contractSize"),
            "profitCurrency": (body or {}).get("profitCurrency") or "",
        }
        client.set(cache_key, json.dumps(spec), ex=SPEC_CACHE_S)
        specs[symbol] = spec
        return spec

    def _trade(
        self, deal: Mapping[str, Any], auth: AuthResult, base: str, account: BrokerAccountInfo, specs: dict
    ) -> BrokerTrade | None:
        kind = deal.get("type")
        if kind not in FILL_TYPES and kind not in BUST_TYPES:
            return None
        try:
            lots = _decimal(deal["volume"])
            busted = kind in BUST_TYPES
            spec = {} if busted else self._spec(auth, base, str(deal["symbol"]), specs)
            contract = _contract_size(spec)
            # Charges are negative in MetaTrader; a net credit (a rebate, a positive swap) is no cost
            # and stays visible in raw.
            cost = -(_decimal(deal.get("commission")) + _decimal(deal.get("swap")))
            return BrokerTrade(
                broker_trade_id=str(deal["id"]),
                account_external_id=account.external_id,
                symbol=str(deal["symbol"]),
                side=FILL_TYPES.get(kind) or BUST_TYPES[kind],
                # Only a bust's ticket matters, and a cancelled deal may carry no volume.
                quantity=Decimal("1") if busted and lots <= 0 else lots * contract,
                price=_decimal(deal["price"]),
                executed_at=parse_time(str(deal["time"])),
                fees=max(cost, Decimal("0")),
                currency=str(spec.get("profitCurrency") or account.currency),
                asset_class="CFD",
                order_id=str(deal.get("orderId") or ""),
                busted=busted,
                raw={**deal, "lots": str(lots), "contractSize": str(contract) if spec.get("contractSize") else None},
            )
        except (KeyError, TypeError, ValueError, InvalidOperation):
            log.warning("metaapi_deal_unreadable", deal_id=str(deal.get("id")), time=str(deal.get("time"))[:40])
            raise BrokerAPIError(
                f"MetaApi sent a deal we could not read (deal {printable(str(deal.get('id', 'without id')))}). "
                "Retrying will not help — please report it.",
                provider=self.key,
            ) from None

    # --- requests ----------------------------------------------------------------------------
    @staticmethod
    def _caller(auth: AuthResult) -> tuple[str, bool]:
        """The token a session's calls send, and whether it is the trader's own."""
        own = bool(auth.extra.get("own_token"))
        # An operator's session follows the installation's current token: replacing METAAPI_TOKEN
        # needs no reconnect (MetaApi's accounts belong to the user, not to one token).
        return (auth.token if own else operator_token() or auth.token), own

    def _client_call(self, auth: AuthResult, url: str, *, params=None, allow: tuple[int, ...] = ()):
        response = self.api.call(*self._caller(auth), "GET", url, params=params, allow=(404,))
        if (response.status_code == 404 and 404 not in allow) or _not_ready(response):
            # The terminal is not connected or not synchronised yet: MetaApi's answer is "try after a while".
            raise BrokerRateLimitError(
                "Your MetaTrader terminal at MetaApi is not ready to answer yet.",
                provider=self.key,
                retry_after=settings.METAAPI_CONNECT_POLL_S,
            )
        return response


def _not_ready(response: requests.Response) -> bool:
    body = body_of(response) if response.status_code >= 400 else None
    return isinstance(body, dict) and body.get("error") in NOT_READY_ERRORS


PROVIDERS = (MetaTraderProvider,)
