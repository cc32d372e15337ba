"""MetaTrader 4/5 at any broker, through MetaApi's REST API (provisioning and client), on our HTTP layer.

MetaTrader has no web API of its own: MetaApi runs a terminal per MT account in its cloud. The
journal provisions the trader's account there read-only (investor password) with a MetaApi token,
either the operator's (METAAPI_TOKEN: the installation pays) or the trader's own (a credential
field: the trader pays and sees the account in their MetaApi dashboard). MetaApi's SDK is not
used: its licence allows it only inside MetaApi's own service (docs/brokers/metatrader.md).

Who is who: one journal connection is one MT account (platform, server, login); authenticate()
finds the MetaApi account this journal provisioned for it (tagged TAG) or creates it, and the
session carries the token and MetaApi's account id. A sync deploys the terminal (billed by the
hour), waits with the run paused until it is connected, reads the deals, and undeploys again
unless METAAPI_KEEP_DEPLOYED. Deleting the connection removes the MetaApi account (forget()).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import requests
import structlog
from django.conf import settings
from django.utils.crypto import salted_hmac

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerError,
    BrokerRateLimitError,
    BrokerSetupError,
)
from brokers.providers.http import DEFAULT_RATE_LIMIT_WAIT_S, parse_retry_after
from brokers.providers.ratelimit import capped_wait, get_limiter, scope_for
from brokers.providers.registry import register
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
    BrokerTrade,
    CredentialField,
)
from brokers.validators import printable

log = structlog.get_logger("brokers.metaapi")

PROVISIONING_URL = "https://mt-provisioning-api-v1.agiliumtrade.agiliumtrade.ai"
# Marks the MetaApi accounts this journal made: only those are reused and removed, never an
# account the trader added to their own MetaApi dashboard by hand.
TAG = "trading-journal"
PLATFORMS = (("mt5", "MetaTrader 5"), ("mt4", "MetaTrader 4"))
# Only buys and sells are fills; a cancelled one is a bust of the deal with the same ticket
# (MetaTrader changes the deal's type in place). Balance, credit, commission, interest,
# dividend and tax deals are cash movements, not trades.
FILL_TYPES = {"DEAL_TYPE_BUY": BUY, "DEAL_TYPE_SELL": SELL}
BUST_TYPES = {"DEAL_TYPE_BUY_CANCELED": BUY, "DEAL_TYPE_SELL_CANCELED": SELL}
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
GONE = {"DELETING", "DELETE_FAILED", "DRAFT"}
# Client errors that mean "the terminal is not ready yet", not a failure.
NOT_READY_ERRORS = {"NotSynchronizedError", "NotAuthenticatedError"}
PROVISIONING_BUCKETS = ("requests", "provisioning")
REQUEST_BUCKETS = ("requests",)
# The server search runs as traders type: its own bucket, so typing never starves a sync.
SEARCH_BUCKETS = ("search",)
SPEC_CACHE_S = 24 * 3600
SERVERS_CACHE_S = 24 * 3600
# MetaApi's SDK keeps the client API's domain about this long.
DOMAIN_CACHE_S = 600
# MetaApi bills refused adds and advises against repeating them: the same login and password
# are not sent again for a day after the broker refused them.
REFUSAL_MEMORY_S = 24 * 3600
# How long an add answered 202 (settings detection, about a minute) may be repeated as the same add.
TRANSACTION_LIFE_S = 15 * 60


def operator_token() -> str:
    return settings.METAAPI_TOKEN


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _account_id(account: Mapping[str, Any]) -> str:
    return str(account.get("_id") or account.get("id") or "")


def _error_code(body: Any) -> str:
    """The validation code: older answers put it in `details`, newer ones in `details.code`."""
    if not isinstance(body, dict):
        return ""
    details = body.get("details")
    if isinstance(details, str):
        return details
    if isinstance(details, dict):
        return str(details.get("code") or "")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("code") or "")
    return ""


def _suggested_servers(body: Any) -> list[str]:
    found = body.get("serversByBrokers") if isinstance(body, dict) else None
    if not isinstance(found, dict) and isinstance(body, dict) and isinstance(body.get("details"), dict):
        found = body["details"].get("serversByBrokers")
    if not isinstance(found, dict):
        return []
    return [printable(str(s)) for servers in found.values() if isinstance(servers, list) for s in servers][:5]


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
        refusal = f"metatrader:refused:{_digest(platform, server, login, password)}"
        if get_limiter().client.exists(refusal):
            raise self._refused_login(remembered=True)
        account = self._find(token, own, platform, server, login)
        if account is None:
            account = self._create(token, own, platform, server, login, password, refusal)
        else:
            self._update(token, own, account, password)
        return AuthResult(
            token=token,
            extra={
                "account_id": _account_id(account),
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

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        try:
            yield from self._deals(auth, self._ready(auth), account, since, until)
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
            found = self._find(token, own, credentials["platform"], credentials["server"], credentials["login"])
            if found is None:
                return
            account_id = _account_id(found)
        path = f"/users/current/accounts/{account_id}"
        response = self._call(token, own, "DELETE", path, allow=(404,))
        log.info("metaapi_account_removed", account_id=account_id, status=response.status_code)

    # --- what the connection form calls ------------------------------------------------------
    def suggestions(self, field: str, query: str, values: Mapping[str, str]) -> list[tuple[str, str]]:
        return self.known_servers(query, values.get("platform") or "mt5") if field == "server" else []

    def known_servers(self, query: str, platform: str) -> list[tuple[str, str]]:
        """(server, broker company) pairs MetaApi knows for what the trader typed; cached for a day.

        Uses the operator's token: without one the trader types the server name as the terminal shows it.
        """
        token = operator_token()
        words = " ".join(query.split()).lower()[:64]
        version = "4" if platform == "mt4" else "5"
        if not token or len(words) < 2:
            return []
        client = get_limiter().client
        cache_key = f"metatrader:servers:{version}:{hashlib.sha256(words.encode()).hexdigest()[:24]}"
        cached = client.get(cache_key)
        if cached:
            return [tuple(pair) for pair in json.loads(cached)]
        path = f"/known-mt-servers/{version}/search"
        response = self._call(token, False, "GET", path, params={"query": words}, buckets=SEARCH_BUCKETS)
        body = self.http.json(response)
        pairs = sorted(
            (str(server), str(broker))
            for broker, servers in (body.items() if isinstance(body, dict) else [])
            if isinstance(servers, list)
            for server in servers
        )
        client.set(cache_key, json.dumps(pairs), ex=SERVERS_CACHE_S)
        return pairs

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

    def _find(self, token: str, own: bool, platform: str, server: str, login: str) -> dict | None:
        params = {"query": login, "platform": platform, "limit": 1000}
        response = self._call(token, own, "GET", "/users/current/accounts", params=params)
        body = self.http.json(response)
        rows = body.get("items") if isinstance(body, dict) else body
        for row in rows if isinstance(rows, list) else []:
            if (
                str(row.get("login")) == login
                and row.get("server") == server
                and TAG in (row.get("tags") or [])
                and row.get("state") not in GONE
            ):
                return row
        return None

    def _create(
        self, token: str, own: bool, platform: str, server: str, login: str, password: str, refusal: str
    ) -> dict:
        body = {
            "name": f"{platform.upper()} {login} ({server})",
            "login": login,
            "password": password,
            "server": server,
            "platform": platform,
            "type": "cloud-g2",
            "magic": 0,
            "manualTrades": True,
            # High reliability bills two slots for a terminal that only reads history.
            "reliability": "regular",
            "tags": [TAG],
            "metastatsApiEnabled": False,
            "riskManagementApiEnabled": False,
        }
        if settings.METAAPI_REGION:
            body["region"] = settings.METAAPI_REGION
        # The same add sent again after a 202 (in a later attempt, maybe another worker) carries
        # the same id, as MetaApi's SDK does; a new add later gets a new one.
        client = get_limiter().client
        pending = f"metatrader:adding:{_digest(token, platform, server, login, password)}"
        transaction = client.get(pending)
        transaction = transaction.decode() if transaction else uuid.uuid4().hex
        client.set(pending, transaction, ex=TRANSACTION_LIFE_S)
        headers = {"transaction-id": transaction}
        response = self._call(
            token,
            own,
            "POST",
            "/users/current/accounts",
            json=body,
            headers=headers,
            allow=(202, 400),
            buckets=PROVISIONING_BUCKETS,
        )
        if response.status_code == 202:
            client.expire(pending, TRANSACTION_LIFE_S)
            wait = max(1.0, parse_retry_after(response) or DEFAULT_RATE_LIMIT_WAIT_S)
            raise BrokerRateLimitError(
                "MetaApi is still detecting your broker's server settings (it takes about a minute the first time).",
                provider=self.key,
                retry_after=wait,
            )
        client.delete(pending)
        if response.status_code == 400:
            raise self._provisioning_error(response, server, refusal)
        created = self.http.json(response)
        if not isinstance(created, dict) or not _account_id(created):
            raise BrokerAPIError("MetaApi sent an answer we could not read.", provider=self.key, transient=True)
        log.info("metaapi_account_provisioned", account_id=_account_id(created), platform=platform)
        return {**created, "type": body["type"]}

    def _update(self, token: str, own: bool, account: dict, password: str) -> None:
        """Send the password again: the trader may have saved a new investor password."""
        body = {"name": account.get("name") or "", "password": password, "server": account.get("server")}
        response = self._call(
            token, own, "PUT", f"/users/current/accounts/{_account_id(account)}", json=body, allow=(400,)
        )
        if response.status_code == 400:
            raise self._provisioning_error(response, str(account.get("server")), "")

    def _provisioning_error(self, response: requests.Response, server: str, refusal: str) -> BrokerError:
        body = _body(response)
        code = _error_code(body)
        shown = printable(server)
        if code == "E_SRV_NOT_FOUND":
            suggestions = _suggested_servers(body)
            hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
            return BrokerAuthError(
                f"MetaApi does not know the server {shown!r}. Choose your broker's server from the list as you type "
                f"(the name your MetaTrader terminal shows when you log in).{hint}",
                provider=self.key,
                status_code=400,
                field="server",
            )
        if code == "E_AUTH":
            if refusal:
                get_limiter().client.set(refusal, "1", ex=REFUSAL_MEMORY_S)
            return self._refused_login(remembered=False)
        if code == "E_SERVER_TIMEZONE":
            return BrokerSetupError(
                f"MetaApi could not detect the settings of the server {shown!r} by itself. Trying again will not "
                "help: MetaApi needs a provisioning profile for this server (ask MetaApi support or the operator).",
                provider=self.key,
                status_code=400,
                field="server",
            )
        if code == "E_RESOURCE_SLOTS":
            return BrokerSetupError(
                "MetaApi says this MetaTrader account needs more resource slots than it can give it. The owner of "
                "the MetaApi token must allow more slots (a paid option) in the MetaApi dashboard.",
                provider=self.key,
                status_code=400,
            )
        return BrokerAPIError(
            f"MetaApi refused to add the account (HTTP 400, {printable(code) or 'no code'}). Retrying will not "
            "help — please report it.",
            provider=self.key,
            status_code=400,
        )

    def _refused_login(self, *, remembered: bool) -> BrokerAuthError:
        again = (
            " The same login and password were refused earlier today, and MetaApi charges for each refused "
            "attempt, so they were not sent again."
            if remembered
            else ""
        )
        return BrokerAuthError(
            "Your broker's server refused this login and password. Enter the investor (read-only) password of "
            f"this account, and check the login number and the server.{again}",
            provider=self.key,
            status_code=400,
            field="investor_password",
        )

    # --- deployment --------------------------------------------------------------------------
    def _account(self, auth: AuthResult) -> dict:
        path = f"/users/current/accounts/{auth.extra['account_id']}"
        response = self._call(*self._caller(auth), "GET", path, allow=(404,))
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
            self._call(*self._caller(auth), "POST", path, idempotent=True)
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
            self._call(*self._caller(auth), "POST", path, idempotent=True)
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
            answer = self.http.json(self._call(*self._caller(auth), "GET", "/users/current/servers/mt-client-api"))
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
                raise BrokerAPIError("MetaApi sent an answer we could not read.", provider=self.key, transient=True)
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
        # A symbol the broker no longer lists has no contract size: its volume stays in lots.
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
            contract = _decimal(spec["contractSize"]) if spec.get("contractSize") else Decimal("1")
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
                executed_at=_time(str(deal["time"])),
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
        response = self._call(*self._caller(auth), "GET", url, params=params, allow=(404,))
        if (response.status_code == 404 and 404 not in allow) or _not_ready(response):
            # The terminal is not connected or not synchronised yet: MetaApi's answer is "try after a while".
            raise BrokerRateLimitError(
                "Your MetaTrader terminal at MetaApi is not ready to answer yet.",
                provider=self.key,
                retry_after=settings.METAAPI_CONNECT_POLL_S,
            )
        return response

    def _call(
        self,
        token: str,
        own: bool,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        allow: tuple[int, ...] = (),
        buckets: tuple[str, ...] = REQUEST_BUCKETS,
        idempotent: bool | None = None,
    ) -> requests.Response:
        scope = scope_for(token)
        response = self.http.request(
            method,
            path_or_url,
            scope=scope,
            buckets=buckets,
            allow_statuses=(401, 403, 429, *allow),
            idempotent=idempotent,
            params=params,
            json=json,
            headers={"auth-token": token, **(headers or {})},
        )
        status = response.status_code
        if status == 429:
            raise self._rate_limited(response, scope)
        if status in (401, 403):
            raise self._token_refused(status, own)
        return response

    def _token_refused(self, status: int, own: bool) -> BrokerError:
        what = "refused" if status == 401 else "does not allow this request with"
        if own:
            return BrokerAuthError(
                f"MetaApi {what} your token (HTTP {status}). Create a token with access to the MetaApi and "
                "provisioning APIs at app.metaapi.cloud/token and save it on this connection.",
                provider=self.key,
                status_code=status,
                field="metaapi_token",
            )
        return BrokerSetupError(
            f"MetaApi {what} this installation's token (HTTP {status}); the operator must replace METAAPI_TOKEN.",
            provider=self.key,
            status_code=status,
        )

    def _rate_limited(self, response: requests.Response, scope: str) -> BrokerRateLimitError:
        """Wait until MetaApi's recommendedRetryTime (or Retry-After), and make every worker wait."""
        body = _body(response)
        metadata = body.get("metadata") if isinstance(body, dict) else None
        wait = None
        recommended = metadata.get("recommendedRetryTime") if isinstance(metadata, dict) else None
        if isinstance(recommended, str):
            try:
                wait = (_time(recommended) - datetime.now(UTC)).total_seconds()
            except ValueError:
                wait = None
        if wait is None:
            wait = parse_retry_after(response)
        wait = max(1.0, capped_wait(wait if wait is not None else DEFAULT_RATE_LIMIT_WAIT_S))
        reason = "MetaApi asked us to slow down (HTTP 429): its CPU credits for this token are used up for now."
        get_limiter().block(self.limits_name, wait, scope=scope, reason=reason)
        return BrokerRateLimitError(reason, provider=self.key, status_code=429, retry_after=wait)


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _not_ready(response: requests.Response) -> bool:
    body = _body(response) if response.status_code >= 400 else None
    return isinstance(body, dict) and body.get("error") in NOT_READY_ERRORS


def _digest(*parts: str) -> str:
    # Keyed: an investor password is short, and a plain hash of it in a Redis key could be guessed back.
    return salted_hmac("brokers.metaapi", "\x1f".join(parts), algorithm="sha256").hexdigest()


register(MetaTraderProvider)
