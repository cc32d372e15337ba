"""ccxt's own recorded exchange answers, through our provider and import, against ccxt's own parse.

Every `*.json` under peer_fixtures/ (README there) is one exchange: its markets, the helper data
ccxt sets while loading them, and entries of a raw `fetchMyTrades` body with ccxt's parse.
Each entry's body answers every request the provider sends; the trades it yields are imported
into the journal, and each trade ccxt parsed must be stored with the same id, time, side,
amount, price, symbol and fees (each with its currency). Where a file has no recorded parse,
the installed ccxt parses the body itself, on its own client, as the reference.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import responses
from django.core.cache import cache

from brokers import services
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import BrokerAccountInfo
from journal.importing import import_trades
from journal.models import Trade

FIXTURES = Path(__file__).with_name("peer_fixtures")
ENTRIES = [
    pytest.param(path, index, id=f"{path.stem}-{index}-{entry['description']}")
    for path in sorted(FIXTURES.rglob("*.json"))
    for index, entry in enumerate(json.loads(path.read_text())["entries"])
]
# Placeholder credentials in the shapes ccxt checks before it signs (a wallet is 0x + 40 hex).
KEYS = {
    "walletAddress": "0x" + "ab" * 20,
    "privateKey": "0x" + "11" * 32,
}
SINCE_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)

pytestmark = pytest.mark.django_db


def market(entry: dict) -> dict:
    """A ccxt market from a fixture's id and unified symbol (BTC/USDT, BTC/USDT:USDT, BTC/USD:BTC-261225)."""
    base, _, rest = entry["symbol"].partition("/")
    quote, _, settle_part = rest.partition(":")
    settle = settle_part.split("-")[0] or None
    kind = "spot" if settle is None else ("future" if "-" in settle_part else "swap")
    contract = kind != "spot"
    return {
        "base": base,
        "quote": quote,
        "settle": settle,
        "baseId": base,
        "quoteId": quote,
        "settleId": settle,
        "type": kind,
        "spot": not contract,
        "margin": False,
        "swap": kind == "swap",
        "future": kind == "future",
        "option": False,
        "contract": contract,
        "linear": True if contract else None,
        "inverse": False if contract else None,
        "contractSize": entry.get("contractSize", 1) if contract else None,
        "active": True,
        "info": {},
        **entry,
    }


def expected_trades(fixture: dict, entry: dict, markets: list[dict]) -> list[dict]:
    if "parsedResponse" in entry:
        return entry["parsedResponse"]
    reference = getattr(importlib.import_module("ccxt"), fixture["exchange"])()
    reference.number = str
    reference.set_markets(markets)
    reference.options.update(fixture.get("options", {}))
    return reference.parse_trades(entry["httpResponse"], reference.market(entry["input"][0]))


def number(value) -> Decimal:
    return Decimal(str(value))


def charged(fees) -> Counter:
    """(currency, cost) of every fee that costs something: a zero fee and no fee read alike."""
    return Counter(
        (f["currency"], number(f["cost"])) for f in fees if f and f.get("cost") is not None and number(f["cost"])
    )


def stored_fees(trade: Trade) -> Counter:
    fees = [{"currency": trade.fee_currency or trade.currency, "cost": trade.fees}, *trade.other_fees]
    return charged(fees)


@pytest.fixture
def account(trader):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    return connection.accounts.create(external_id="fixture", name="fixture")


@pytest.mark.parametrize(("path", "index"), ENTRIES)
def test_a_recorded_answer_is_stored_as_ccxt_parses_it(path, index, account):
    fixture = json.loads(path.read_text())
    entry = fixture["entries"][index]
    symbol, params = entry["input"][0], (entry["input"][3] if len(entry["input"]) > 3 else {})
    markets = [market(m) for m in fixture["markets"]]
    provider = get_broker_provider(f"ccxt_{fixture['exchange']}")
    cache.set(provider._markets_key, {"markets": markets, "currencies": None, "helpers": fixture.get("options", {})})
    keys = {f.name: KEYS.get(f.name, f"{f.name}-placeholder") for f in provider.credential_fields}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        for method in ("GET", "POST"):
            rsps.add(method, re.compile(r".*"), json=entry["httpResponse"])
        exchange = provider._exchange(keys)
        info = BrokerAccountInfo(external_id=provider._type_of(exchange, symbol), name="fixture")
        until_ms = int(datetime.now(UTC).timestamp() * 1000)
        import_trades(account.pk, provider._pages(exchange, info, symbol, SINCE_MS, until_ms, dict(params)))
    expected = expected_trades(fixture, entry, markets)
    assert expected, "an entry with nothing to compare proves nothing"
    stored = {t.broker_trade_id: t for t in Trade.objects.filter(account=account)}
    differences = []
    for parsed in expected:
        trade = stored.get(f"{parsed['symbol']}|{parsed['id']}")
        if trade is None:
            differences.append(f"{parsed['id']}: not imported")
            continue
        ours = {
            "symbol": trade.symbol,
            "time": int(trade.executed_at.timestamp() * 1000),
            "side": trade.side.lower(),
            "amount": trade.quantity,
            "price": trade.price,
            "fees": stored_fees(trade),
        }
        theirs = {
            "symbol": parsed["symbol"],
            "time": parsed["timestamp"],
            "side": parsed["side"],
            "amount": number(parsed["amount"]),
            "price": number(parsed["price"]),
            "fees": charged(parsed.get("fees") or [parsed.get("fee")]),
        }
        differences += [
            f"{parsed['id']} {k}: ours {ours[k]!r}, ccxt {theirs[k]!r}" for k in ours if ours[k] != theirs[k]
        ]
    assert differences == []
