"""The broker picker's catalogue: every brokerage a trader can connect, by the name they know it by.

A brokerage is one entry however many ways reach it (Alpaca by API key, by signing in at Alpaca
or through SnapTrade); each way is a link to that provider's existing add page, with the query
that preselects the firm (ProjectX) or the brokerage (SnapTrade). Only installed providers
appear (settings.BROKER_PROVIDERS). The add page and /api/providers/ both read this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from django.urls import reverse

from brokers import services
from brokers.crypto import CredentialsUnreadable
from brokers.providers.errors import BrokerError
from brokers.providers.projectx import FIRMS
from brokers.providers.registry import get_broker_provider, provider_classes, shipped_providers

# What the entries are grouped by, in the order the page shows them.
MARKETS = (
    ("futures", "Futures"),
    ("stocks", "Stocks & options"),
    ("crypto", "Crypto"),
    ("forex", "Forex & CFD"),
)

API_KEY = "API key"
SIGN_IN = "Sign in at the broker"
SNAPTRADE = "Through SnapTrade"
METAAPI = "Through MetaApi"

# The brokerages SnapTrade documents (docs/brokers/snaptrade.md), by SnapTrade's slug: shown when
# no live list can be had (no key yet, or SnapTrade not answering). With a key the live list
# (GET /brokerages, cached six hours) replaces it, so brokerages SnapTrade adds appear by themselves.
SNAPTRADE_DOCUMENTED = (
    ("ALPACA", "Alpaca"),
    ("ETRADE", "E*TRADE"),
    ("FIDELITY", "Fidelity"),
    ("IBKR", "Interactive Brokers"),
    ("PUBLIC", "Public"),
    ("QUESTRADE", "Questrade"),
    ("ROBINHOOD", "Robinhood"),
    ("SCHWAB", "Charles Schwab"),
    ("TASTYTRADE", "Tastytrade"),
    ("TRADIER", "Tradier"),
    ("TRADING212", "Trading 212"),
    ("VANGUARD", "Vanguard"),
    ("WEALTHSIMPLETRADE", "Wealthsimple"),
    ("WEBULL", "Webull"),
)

# MetaTrader reaches any MT4/MT5 broker: naming well-known ones makes it findable by the broker's
# name; its server field then searches MetaApi's list of every broker's servers.
METATRADER_EXAMPLES = (
    "IC Markets",
    "Pepperstone",
    "FTMO",
    "Exness",
    "XM",
    "OANDA",
    "FP Markets",
    "Tickmill",
    "Admirals",
    "AvaTrade",
    "Vantage",
    "RoboForex",
    "FundedNext",
    "The5ers",
)


@dataclass(frozen=True)
class Way:
    """One way into a brokerage: the provider, how it connects, what the trader needs first."""

    key: str
    how: str
    needs: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return f"{reverse('brokers:add')}?{urlencode((('broker', self.key), *self.params))}"


@dataclass(frozen=True)
class Brokerage:
    name: str
    market: str
    ways: tuple[Way, ...]
    # Other names it is found by.
    also: tuple[str, ...] = ()
    # A line shown under it (and searched too).
    note: str = ""

    @property
    def market_label(self) -> str:
        return dict(MARKETS)[self.market]

    def matches(self, words: list[str]) -> bool:
        """Each typed word starts a word of the name, its other names or how it connects ("ic mark")."""
        text = " ".join((self.name, *self.also, self.note, self.market_label, *(w.how for w in self.ways)))
        known = _words(text)
        squashed = "".join(known)
        return all(squashed.startswith(w) or any(k.startswith(w) for k in known) for w in words)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _squash(name: str) -> str:
    return "".join(_words(name))


def _direct(installed: dict) -> list[Brokerage]:
    """The providers of our own, under the names traders know (two Tradovate ways are one brokerage)."""
    wanted = (
        (
            "Demo broker",
            "futures",
            (),
            (
                (
                    "demo",
                    API_KEY,
                    "Nothing: it simulates futures and stock fills; its scenario field picks how it behaves.",
                ),
            ),
        ),
        (
            "Tradovate / NinjaTrader",
            "futures",
            ("NinjaTrader brokerage",),
            (
                (
                    "tradovate",
                    API_KEY,
                    "Tradovate's API Access add-on and an API key (CID and secret), with your login. "
                    "A NinjaTrader brokerage account is a Tradovate account.",
                ),
                ("tradovate_signin", SIGN_IN, "Your Tradovate or NinjaTrader login."),
            ),
        ),
        (
            "Interactive Brokers",
            "stocks",
            ("IBKR",),
            (("ibkr_flex", API_KEY, "A Flex Web Service token and a Flex Query ID from IBKR's Client Portal."),),
        ),
        (
            "Alpaca",
            "stocks",
            (),
            (
                ("alpaca", API_KEY, "An API key ID and secret from Alpaca's dashboard (paper or live)."),
                ("alpaca_connect", SIGN_IN, "Your Alpaca login."),
            ),
        ),
        ("Charles Schwab", "stocks", ("Schwab",), (("schwab", SIGN_IN, "Your Schwab login."),)),
    )
    found = []
    for name, market, also, ways in wanted:
        ways = tuple(Way(key, how, needs) for key, how, needs in ways if key in installed)
        if ways:
            found.append(Brokerage(name, market, ways, also))
    return found


def _exchanges(installed: dict) -> list[Brokerage]:
    found = []
    for key, provider_class in installed.items():
        if shipped_providers()[key][0] == "ccxt":
            asked = ", ".join(f.label for f in provider_class.credential_fields if f.required)
            needs = f"A read-only API key from {provider_class.display_name}: {asked}."
            found.append(Brokerage(provider_class.display_name, "crypto", (Way(key, API_KEY, needs),)))
    return found


def _firms() -> list[Brokerage]:
    return [
        Brokerage(
            firm["name"],
            "futures",
            (
                Way(
                    "projectx",
                    API_KEY,
                    f"Your ProjectX username and an API key from {firm['name']} (the firm must enable API access).",
                    (("firm", key),),
                ),
            ),
            note="A futures prop firm on ProjectX.",
        )
        for key, firm in FIRMS.items()
    ]


def _snaptrade_brokerages(user) -> tuple[list[tuple[str, str]], bool]:
    """SnapTrade's live list when a key reads it, else the documented one; and whether a key exists."""
    try:
        key = services.snaptrade_key_for(user)
    except CredentialsUnreadable:
        return list(SNAPTRADE_DOCUMENTED), True
    if key is None:
        return list(SNAPTRADE_DOCUMENTED), False
    try:
        return get_broker_provider("snaptrade").brokerages(key) or list(SNAPTRADE_DOCUMENTED), True
    except BrokerError:
        return list(SNAPTRADE_DOCUMENTED), True


def _metatrader() -> Brokerage:
    needs = (
        "Your MetaTrader login, its investor (read-only) password and server; the server search finds "
        "any MetaTrader broker. A MetaApi token too, unless this installation has one."
    )
    examples = ", ".join(METATRADER_EXAMPLES)
    note = f"Any broker or prop firm offering MetaTrader 4 or 5, for example {examples}."
    return Brokerage("MetaTrader 4/5 — any broker", "forex", (Way("metatrader", METAAPI, needs),), note=note)


def catalogue(user) -> list[Brokerage]:
    """Every brokerage this installation reaches, one entry each, grouped by market then by name."""
    installed = provider_classes()
    entries = _direct(installed) + _exchanges(installed)
    if "projectx" in installed:
        entries += _firms()
    if "metatrader" in installed:
        entries.append(_metatrader())
    index = {_squash(name): i for i, entry in enumerate(entries) for name in (entry.name, *entry.also)}
    if "snaptrade" in installed:
        brokerages, has_key = _snaptrade_brokerages(user)
        and_key = "" if has_key else " and a free SnapTrade Personal key (this installation has none)"
        for slug, name in brokerages:
            needs = f"Your {name} login{and_key}; you sign in on SnapTrade's page."
            way = Way("snaptrade", SNAPTRADE, needs, (("brokerage", slug),))
            known = index.get(_squash(name))
            if known is None:
                index[_squash(name)] = len(entries)
                entries.append(Brokerage(name, "stocks", (way,)))
            else:
                # The same brokerage reached a second way stays one entry, with both ways.
                entries[known] = replace(entries[known], ways=(*entries[known].ways, way))
    order = [market for market, _ in MARKETS]
    return sorted(entries, key=lambda e: (order.index(e.market), e.name.casefold()))


def search(entries: list[Brokerage], query: str) -> list[Brokerage]:
    words = _words(query)
    return [entry for entry in entries if entry.matches(words)] if words else entries


def any_broker(entries: list[Brokerage]) -> Brokerage | None:
    """The entry that reaches brokers the catalogue cannot name one by one (MetaTrader), if installed."""
    return next((entry for entry in entries if any(way.key == "metatrader" for way in entry.ways)), None)


def grouped(entries: list[Brokerage]) -> list[tuple[str, str, list[Brokerage]]]:
    """(market, label, entries) for each market that has entries."""
    return [
        (market, label, members)
        for market, label in MARKETS
        if (members := [entry for entry in entries if entry.market == market])
    ]
