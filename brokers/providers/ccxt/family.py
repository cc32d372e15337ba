"""Crypto exchanges through ccxt: one registered provider per exchange that lists a trader's own trades.

Traders pick "Kraken" or "Binance" (key ccxt_kraken, ccxt_binance); every one of them is a
CcxtProvider with the exchange's own name, credential fields (from ccxt's
requiredCredentials), environments (a sandbox where ccxt knows a test URL) and limits entry.
Requests go through our HTTP layer and limiter (ccxt/transport.py). Markets are public and
large, so they are cached in Redis per exchange for every worker, not fetched per sync.
One BrokerAccount per market type (spot, swap, future) the exchange lists and ccxt can read.

The declarations come from exchanges.json, which `manage.py ccxt_catalog --write`
generates from the installed ccxt (a test checks they agree): importing ccxt and building
93 clients costs every process about a second, so ccxt is imported only when a ccxt
connection syncs.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings
from django.core.cache import cache

from brokers.providers.base import BrokerProvider
from brokers.providers.ccxt.transport import SILENT_LOGGER, ArgumentsMissing, SessionThroughBrokerHTTP, call
from brokers.providers.errors import BrokerAuthError, UnreadableRow
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
    Fee,
)

# Market lists change when an exchange lists a coin; a few hours old is fine for reading trades.
MARKETS_TTL_S = 6 * 3600
# Market types that hold trades of their own, in the order accounts are listed. Options are
# left out: their trades need expiry and strike that ccxt's unified trade does not carry.
ACCOUNT_TYPES = ("spot", "swap", "future")
ACCOUNT_LABELS = {"spot": "spot", "swap": "perpetuals", "future": "futures"}
ASSET_CLASSES = {"spot": "CRYPTO", "margin": "CRYPTO", "swap": "PERP", "future": "FUT"}
CATALOG_FILE = Path(__file__).with_name("exchanges.json")


def _field(name: str, exchange: str) -> CredentialField:
    """A ccxt credential in the trader's words; `exchange` is the name the trader knows."""
    where = f"In your {exchange} account, open API management and create a key that can read"
    words = {
        "apiKey": (
            "API key",
            True,
            f"{where} balances and trade history. The journal never trades or withdraws: leave those permissions off.",
        ),
        "secret": ("API secret", True, "Shown once, next to the API key, when you create it."),
        "password": (
            "API passphrase",
            True,
            f"The passphrase you chose when creating the API key on {exchange} — not your login password.",
        ),
        "uid": ("User ID", False, f"Your {exchange} user (client) ID, shown in your account settings."),
        "accountId": ("Account ID", False, f"The {exchange} account (or subaccount) ID the key belongs to."),
        "login": ("Login", False, f"The user name you sign in to {exchange} with."),
        "walletAddress": ("Wallet address", False, "The public address of the wallet that trades (0x…)."),
        "privateKey": (
            "API private key",
            True,
            f"The private key of an API (agent) wallet or signer you created on {exchange} for reading — "
            "never your main wallet's key where it offers one.",
        ),
    }
    label, secret, help_text = words.get(name, (name, True, f"The {name} {exchange} gives you with the API key."))
    return CredentialField(name, label, secret=secret, help_text=help_text)


class CcxtProvider(BrokerProvider):
    """One ccxt exchange. Subclasses (made by provider_for) set exchange_id and the declarations."""

    exchange_id: ClassVar[str]
    rate_limit_ms: ClassVar[float]
    # Whether ccxt's fetchMyTrades for this exchange takes an `until` (end time) to page back by.
    pages_by_until: ClassVar[bool]
    # The market types whose trades ccxt can list for this exchange (in ACCOUNT_TYPES order).
    account_types: ClassVar[tuple[str, ...]]
    sync_overlap = timedelta(hours=1)
    # The first sync asks for a year; exchanges that keep less answer with what they keep.
    max_history = timedelta(days=365)

    # --- the contract ----------------------------------------------------------------------
    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        keys = {f.name: credentials.get(f.name).strip() for f in self.credential_fields}
        exchange = self._exchange(keys)
        # The cheapest authenticated call: it proves the key works and may read the account.
        self._call(exchange, exchange.fetch_balance)
        return AuthResult(token=json.dumps(keys))

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        return auth  # API keys do not expire; the "session" is the key itself, stored encrypted

    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        exchange = self._exchange(self._keys(auth))
        self._call(exchange, exchange.fetch_balance)
        return [
            BrokerAccountInfo(
                external_id=market_type,
                name=f"{self.display_name} {ACCOUNT_LABELS[market_type]}",
                currency="USD",
            )
            for market_type in self._account_types(exchange)
        ]

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        exchange = self._exchange(self._keys(auth))
        market_type = account.external_id
        several_types = len(self._account_types(exchange)) > 1
        # Where one key reads several market types, the exchange is told which one this account is.
        params = {"type": market_type} if several_types else {}
        since_ms, until_ms = _ms(since), _ms(until)
        try:
            yield from self._pages(exchange, account, None, since_ms, until_ms, params)
        except ArgumentsMissing:
            # The exchange lists trades per market only (Binance): ask per market the account holds.
            for symbol in self._held_markets(exchange, market_type, params):
                yield from self._pages(exchange, account, symbol, since_ms, until_ms, params)

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition] | None:
        """A perpetuals or futures account's open positions (ccxt's fetchPositions), in contracts as its fills.

        None for a spot account: a coin balance moves with deposits, withdrawals, transfers between
        accounts, staking rewards and fees taken in the coin, none of which is a fill, so comparing
        it with the fills would flag every deposit. None too where ccxt reads no positions for the
        exchange, or reads them only market by market (which markets to ask is not known).
        """
        market_type = account.external_id
        if market_type == "spot":
            return None
        exchange = self._exchange(self._keys(auth))
        if not exchange.has.get("fetchPositions"):
            return None
        params = {"type": market_type} if len(self._account_types(exchange)) > 1 else {}
        try:
            rows = self._call(exchange, exchange.fetch_positions, None, params)
        except ArgumentsMissing:
            return None
        positions = []
        for row in rows:
            symbol = row.get("symbol") or ""
            if "/" not in symbol or self._type_of(exchange, symbol) != market_type:
                continue
            try:
                contracts = abs(Decimal(str(row.get("contracts") or 0)))
                if not contracts:
                    continue
                # ccxt gives contracts unsigned and the direction in side (a hedge-mode account has one
                # position per side in a market: the comparison adds them up).
                sign = {"long": 1, "short": -1}[row.get("side")]
                entry, mark = row.get("entryPrice"), row.get("markPrice")
                positions.append(
                    BrokerPosition(
                        symbol=symbol,
                        quantity=sign * contracts,
                        average_price=Decimal(str(entry)) if entry not in (None, "") else None,
                        mark_price=Decimal(str(mark)) if mark not in (None, "") else None,
                    )
                )
            except (KeyError, InvalidOperation):
                raise self.unreadable("a position") from None
        return positions

    # --- paging and parsing --------------------------------------------------------------------
    def _pages(self, exchange, account, symbol, since_ms, until_ms, params) -> Iterator[BrokerTrade]:
        """Every trade in [since, until], page by page; ids already seen are passed over.

        Where the exchange's ccxt client reads `until` (pages_by_until), newest first as ccxt's
        own pagination does: up to `until`, then up to the oldest time seen, until a page
        reaches `since`, is empty or brings nothing new. Elsewhere, oldest first: from `since`,
        then from the newest time seen, until a page brings nothing new or passes `until`.
        """
        seen: set[str] = set()
        backward = self.pages_by_until
        cursor = until_ms if backward else since_ms
        while True:
            if backward:
                page = self._call(exchange, exchange.fetch_my_trades, symbol, None, None, {**params, "until": cursor})
            else:
                page = self._call(exchange, exchange.fetch_my_trades, symbol, cursor, None, dict(params))
            fresh = [t for t in page if _trade_key(t) not in seen]
            if not fresh:
                return
            for item in sorted(fresh, key=lambda t: t.get("timestamp") or 0, reverse=backward):
                seen.add(_trade_key(item))
                if "/" not in (item.get("symbol") or ""):
                    # ccxt names a market it does not list (delisted, or of a type whose markets
                    # we do not load) by the exchange's raw id: its type and currencies are
                    # unknown, so it is left out and said so rather than stopping every sync.
                    self.skip_unreadable(
                        f"trade {item.get('id') or 'without id'} of market {item.get('symbol')}, "
                        f"which {self.display_name} no longer lists"
                    )
                    continue
                if since_ms <= (item.get("timestamp") or 0) <= until_ms and (
                    self._type_of(exchange, item.get("symbol")) == account.external_id
                ):
                    try:
                        yield self._trade(exchange, item, account)
                    except UnreadableRow as exc:
                        self.skip_unreadable(str(exc))
            times = [t.get("timestamp") or 0 for t in page]
            if backward and min(times) <= since_ms or not backward and max(times) >= until_ms:
                return
            cursor = min(times) if backward else max(times)

    def _trade(self, exchange, item: Mapping[str, Any], account: BrokerAccountInfo) -> BrokerTrade:
        try:
            symbol = item["symbol"]
            market = exchange.markets.get(symbol) or {}
            currency = market.get("quote") or symbol.split("/")[1].split(":")[0]
            main, others = _fees(item, currency)
            return BrokerTrade(
                broker_trade_id=_trade_key(item),
                account_external_id=account.external_id,
                symbol=symbol,
                side={"buy": BUY, "sell": SELL}[item["side"]],
                quantity=Decimal(item["amount"]),
                price=Decimal(item["price"]),
                executed_at=datetime.fromtimestamp(item["timestamp"] / 1000, UTC),
                # A maker rebate comes as a negative fee: the journal records fees as costs, so
                # it is 0 here and the rebate stays in raw.
                fees=max(main.cost, Decimal("0")),
                fee_currency=main.currency,
                other_fees=others,
                currency=currency,
                asset_class=ASSET_CLASSES.get(market.get("type"), "CRYPTO"),
                multiplier=Decimal(str(market.get("contractSize") or 1)),
                order_id=str(item.get("order") or ""),
                raw={k: item.get(k) for k in ("info", "takerOrMaker", "cost", "type", "fee", "fees")},
            )
        except (KeyError, IndexError, TypeError, ValueError, InvalidOperation):
            raise UnreadableRow(
                f"trade {item.get('id') or 'without id'}: no side, amount, price, time or fee we can read"
            ) from None

    def _held_markets(self, exchange, market_type: str, params) -> list[str]:
        """Markets of this type whose currencies the account holds now (one request: the balance)."""
        balance = self._call(exchange, exchange.fetch_balance, dict(params))
        held = {code for code, amount in (balance.get("total") or {}).items() if _nonzero(amount)}
        return sorted(
            symbol
            for symbol, m in exchange.markets.items()
            if m.get("type") == market_type and m.get("base") in held and ({m.get("quote"), m.get("settle")} & held)
        )

    # --- the ccxt client -------------------------------------------------------------------------
    def _exchange(self, keys: Mapping[str, str]):
        session = SessionThroughBrokerHTTP(self.http, self._scope(keys))
        exchange = getattr(importlib.import_module("ccxt"), self.exchange_id)(
            {
                **keys,
                "session": session,
                "userAgent": settings.BROKER_HTTP_USER_AGENT,
                "logger": SILENT_LOGGER,
                "enableRateLimit": True,
            }
        )
        exchange.throttle = session.throttle
        # Exact decimals: ccxt's parsers return numbers as strings, which become Decimal here.
        exchange.number = str
        if self.environment == "sandbox":
            exchange.set_sandbox_mode(True)
        override = settings.BROKER_BASE_URLS.get(self.key)
        if override:
            exchange.urls["api"] = _pointed_at(exchange.urls["api"], override.rstrip("/"))
        loaded = cache.get(self._markets_key)
        if loaded is None:
            loaded = self._load_markets(exchange)
            cache.set(self._markets_key, loaded, MARKETS_TTL_S)
        # A fresh load is applied from the same record as a cached one, so both give a fill
        # the same symbol, currency and trade id.
        exchange.set_markets(loaded["markets"], loaded["currencies"])
        exchange.options.update(loaded["helpers"])
        return exchange

    @property
    def _markets_key(self) -> str:
        return f"ccxt-markets:v2:{self.exchange_id}:{self.environment}"

    def _load_markets(self, exchange) -> dict[str, Any]:
        """The markets, and what ccxt sets beside them while loading that its parsers read later.

        An exchange names that helper data in its `marketHelperProps` option (Hyperliquid: which
        collateral each HIP-3 market settles in; Kraken: markets by their old names); ccxt copies
        it with the markets when it shares them between clients, and so do we through the cache.
        Such an exchange is loaded the whole way ccxt does it (currencies first), because its
        helpers are built from them; elsewhere the market list alone is enough and is all we fetch.
        """
        wanted = exchange.options.get("fetchMarkets")
        if isinstance(wanted, dict) and "types" in wanted:
            # Option markets run to thousands per exchange and hold no account of ours.
            wanted["types"] = [t for t in wanted["types"] if t != "option"]
        helpers = exchange.options.get("marketHelperProps") or []
        if helpers:
            self._call(exchange, exchange.load_markets)
            markets, currencies = list(exchange.markets.values()), exchange.currencies
        else:
            markets, currencies = self._call(exchange, exchange.fetch_markets), None
        return {
            "markets": markets,
            "currencies": currencies,
            "helpers": {name: exchange.options[name] for name in helpers if exchange.options.get(name) is not None},
        }

    def _account_types(self, exchange) -> list[str]:
        present = {m.get("type") for m in exchange.markets.values()}
        return [t for t in self.account_types if t in present] or list(self.account_types[:1])

    def _type_of(self, exchange, symbol) -> str:
        market = exchange.markets.get(symbol)
        if market is None:
            # A market no longer listed: ccxt's unified symbol still says what it was
            # (BTC/USDT spot, BTC/USDT:USDT perpetual, BTC/USD:BTC-261225 dated future).
            settle = (symbol or "").partition(":")[2]
            return "spot" if not settle else ("future" if "-" in settle else "swap")
        kind = market.get("type") or "spot"
        return "spot" if kind == "margin" else kind

    def _call(self, exchange, fn, *args):
        return call(self.key, self.display_name, exchange.session.scope, fn, *args)

    def _scope(self, keys: Mapping[str, str]) -> str:
        identity = next((keys[n] for n in ("apiKey", "walletAddress", "privateKey", "secret") if keys.get(n)), "")
        return scope_for(identity) if identity else ""

    def _keys(self, auth: AuthResult) -> dict[str, str]:
        try:
            keys = json.loads(auth.token)
            return {f.name: keys[f.name] for f in self.credential_fields}
        except (ValueError, TypeError, KeyError):
            raise BrokerAuthError(
                f"The saved {self.display_name} session could not be read. We will log in again with your "
                "API key; if this persists, save it again on the connection's page.",
                provider=self.key,
            ) from None


def _trade_key(item: Mapping[str, Any]) -> str:
    """Trade ids are unique per market on some exchanges (Binance), not per account; a few
    exchanges send none, and then the fill's own facts name it."""
    trade_id = item.get("id")
    if trade_id in (None, ""):
        trade_id = ":".join(str(item.get(k)) for k in ("order", "timestamp", "side", "amount", "price"))
    return f"{item.get('symbol')}|{trade_id}"


def _fees(item: Mapping[str, Any], currency: str) -> tuple[Fee, tuple[Fee, ...]]:
    """The fee in the trade's currency (else the first one reported), and every other, each in its currency.

    ccxt lists a trade's fees in `fees`, one per currency; where there are several, its single
    `fee` is an empty placeholder, so `fee` is read only when the list is missing.
    """
    listed = [f for f in (item.get("fees") or [item.get("fee") or {}]) if f and f.get("cost") not in (None, "")]
    fees = [Fee(currency=f.get("currency") or "", cost=Decimal(f["cost"])) for f in listed]
    if not fees:
        return Fee(currency="", cost=Decimal("0")), ()
    main = next((f for f in fees if f.currency == currency), fees[0])
    return main, tuple(f for f in fees if f is not main)


def _nonzero(amount) -> bool:
    try:
        return amount is not None and Decimal(str(amount)) != 0
    except InvalidOperation:
        return False


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _pointed_at(urls, base: str):
    """ccxt's API URLs with scheme and host replaced by `base` (a sandbox or a local simulator)."""
    if isinstance(urls, dict):
        return {k: _pointed_at(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        rest = urls.split("://", 1)[1]
        path = rest.split("/", 1)[1] if "/" in rest else ""
        return f"{base}/{path}" if path else base
    return urls


def provider_for(exchange_id: str, entry: Mapping[str, Any]) -> type[CcxtProvider]:
    """The provider class for one ccxt exchange, from its catalog entry."""
    attrs = {
        "__module__": __name__,
        "__doc__": f"{entry['name']} through ccxt.",
        "key": f"ccxt_{exchange_id}",
        "display_name": entry["name"],
        "exchange_id": exchange_id,
        "rate_limit_ms": float(entry["rate_limit_ms"]),
        "pages_by_until": entry["pages_by_until"],
        "account_types": tuple(entry["account_types"]),
        # Oldest first across the whole account only when one listing covers every market: the
        # engine then saves progress batch by batch and a paused backfill resumes where it stopped.
        "trades_ascending": not entry["pages_by_until"] and not entry["lists_per_market"],
        "credential_fields": tuple(_field(n, entry["name"]) for n in entry["credentials"]),
        "environments": (("live", "Live"), ("sandbox", "Sandbox")) if entry["sandbox"] else (),
    }
    return type(f"Ccxt_{exchange_id}_Provider", (CcxtProvider,), attrs)


CATALOG: dict[str, dict[str, Any]] = json.loads(CATALOG_FILE.read_text())
FAMILY = {eid: provider_for(eid, entry) for eid, entry in CATALOG.items()}
FAMILY_KEY = "ccxt"
PROVIDERS = tuple(FAMILY.values())
