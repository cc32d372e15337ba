"""Every brokerage this installation reaches, once each: the name traders know, what it trades, each way in.

The one list of brokerages: `manage.py list_brokers` prints it by route with the total the README
quotes, the broker picker (/brokers/add/) shows it by market, /api/providers/ serves it by provider,
and tests keep the four equal. A venue reachable by two routes (Schwab directly and through
SnapTrade) is one brokerage with a way in on each: counted under the first route in ROUTES, named as
"also" under the others. The demo broker and MetaTrader are entries too but are not counted: one is
simulated, the other a route to any MT4/MT5 broker rather than a brokerage we can name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from urllib.parse import urlencode, urlsplit

import ccxt
from django.urls import reverse

from brokers.providers import projectx, snaptrade, tradovate
from brokers.providers.ccxt.family import FAMILY
from brokers.providers.registry import provider_classes

DIRECT, CCXT, SNAPTRADE, PROJECTX = "direct", "ccxt", "SnapTrade", "ProjectX firms"
TRADOVATE_FIRMS = "Tradovate prop firms"
ROUTES = (DIRECT, CCXT, SNAPTRADE, PROJECTX, TRADOVATE_FIRMS)

# What a brokerage trades, in the order the picker groups them.
MARKETS = (
    ("futures", "Futures"),
    ("stocks", "Stocks & options"),
    ("crypto", "Crypto"),
    ("forex", "Forex & CFD"),
)

# How a way in connects, in the words the picker and the API show.
API_KEY = "API key"
SIGN_IN = "Sign in at the broker"
THROUGH_SNAPTRADE = "Through SnapTrade"
THROUGH_METAAPI = "Through MetaApi"

NINJATRADER = "NinjaTrader brokerage (through Tradovate)"
# Our own providers: the brokerages each reaches, by the name traders know them, how it connects and
# what the trader needs first. Two providers of one broker (API key and sign-in) are two ways into
# one brokerage; Tradovate's API also serves NinjaTrader's brokerage accounts. A provider of our own
# missing here fails the catalogue's test (tests/brokers/test_catalogue.py).
OWN_PROVIDERS = {
    "demo": (
        ("Demo broker",),
        API_KEY,
        "Nothing: it simulates futures and stock fills; its scenario field picks how it behaves.",
    ),
    "tradovate": (
        ("Tradovate", NINJATRADER),
        API_KEY,
        "Tradovate's API Access add-on and an API key (CID and secret), with your login. "
        "A NinjaTrader brokerage account is a Tradovate account.",
    ),
    "tradovate_signin": (("Tradovate", NINJATRADER), SIGN_IN, "Your Tradovate or NinjaTrader login."),
    "ibkr_flex": (
        ("Interactive Brokers",),
        API_KEY,
        "A Flex Web Service token and a Flex Query ID from IBKR's Client Portal.",
    ),
    "alpaca": (("Alpaca",), API_KEY, "An API key ID and secret from Alpaca's dashboard (paper or live)."),
    "alpaca_connect": (("Alpaca",), SIGN_IN, "Your Alpaca login."),
    "schwab": (("Charles Schwab",), SIGN_IN, "Your Schwab login."),
}
# What each of those brokerages trades, and other names traders look for it by.
OWN_BROKERAGES = {
    "Demo broker": ("futures", ()),
    "Tradovate": ("futures", ()),
    NINJATRADER: ("futures", ()),
    "Interactive Brokers": ("stocks", ("IBKR",)),
    "Alpaca": ("stocks", ()),
    "Charles Schwab": ("stocks", ()),
}
# Simulated: offered to try the journal, never counted as a brokerage.
SIMULATED = {"demo"}
# Each is a route to many brokerages, listed by a builder of its own below.
ROUTE_PROVIDERS = {"snaptrade", "projectx", "metatrader"}
# Names one venue goes by on different routes: Alpaca's crypto exchange is Alpaca, SnapTrade's
# "Coinbase" is the Coinbase account whose trading ccxt reaches as Coinbase Advanced, and Topstep's
# Tradovate accounts belong to the firm ProjectX names after its platform, TopstepX.
SAME_AS = {"Alpaca Crypto": "Alpaca", "Coinbase": "Coinbase Advanced", "Topstep": "Topstep (TopstepX)"}
# The Tradovate providers reach a prop firm's Tradovate accounts as they reach Tradovate's own: the
# sign-in first, since whether a firm's accounts may buy Tradovate's API Access is UNCONFIRMED.
TRADOVATE_PROVIDERS = ("tradovate_signin", "tradovate")

METATRADER = "MetaTrader 4/5 — any broker"
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
    """One way into a brokerage: the provider, its name on that route, how it connects, what it needs."""

    provider: str
    name: str
    route: str | None  # None: not a route that counts brokerages (the demo broker, MetaTrader)
    how: str
    needs: str
    # What choosing it preselects on the add page: ProjectX's firm, SnapTrade's brokerage.
    chosen: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return f"{reverse('brokers:add')}?{urlencode((('broker', self.provider), *self.chosen))}"


@dataclass(frozen=True)
class Brokerage:
    name: str
    market: str
    ways: tuple[Way, ...]
    known_as: tuple[str, ...] = ()
    # A line shown under it, and searched too.
    note: str = ""

    @property
    def counted_under(self) -> str | None:
        """The first route in ROUTES reaching it; None for the demo broker and MetaTrader."""
        return next((route for route in ROUTES if any(way.route == route for way in self.ways)), None)


@dataclass(frozen=True)
class Catalogue:
    brokerages: tuple[Brokerage, ...]  # by market, then by name

    @property
    def routes(self) -> dict[str, list[str]]:
        """Route -> the brokerages counted under it."""
        return {
            route: sorted((b.name for b in self.brokerages if b.counted_under == route), key=str.lower)
            for route in ROUTES
        }

    @property
    def also(self) -> dict[str, list[str]]:
        """Route -> brokerages it reaches that an earlier route counted, by their names on this route."""
        return {
            route: sorted(
                {
                    w.name
                    for b in self.brokerages
                    if b.counted_under not in (None, route)
                    for w in b.ways
                    if w.route == route
                },
                key=str.lower,
            )
            for route in ROUTES
        }

    @property
    def total(self) -> int:
        return sum(1 for b in self.brokerages if b.counted_under)

    @property
    def metatrader(self) -> bool:
        return any(way.provider == "metatrader" for b in self.brokerages for way in b.ways)


def _venue(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", SAME_AS.get(name, name).lower())


@functools.cache
def _website(exchange_id: str) -> str:
    """The exchange's site in ccxt's own description (fixed for the installed ccxt, and slow to build)."""
    www = getattr(ccxt, exchange_id)().describe()["urls"].get("www") or exchange_id
    return (urlsplit(www[0] if isinstance(www, list) else www).hostname or exchange_id).removeprefix("www.")


def _own(installed: dict) -> list[Brokerage]:
    family = {provider_class.key for provider_class in FAMILY.values()}
    found = []
    for key in installed:
        if key in family or key in ROUTE_PROVIDERS:
            continue
        names, how, needs = OWN_PROVIDERS[key]
        route = None if key in SIMULATED else DIRECT
        for name in names:
            market, known_as = OWN_BROKERAGES[name]
            found.append(Brokerage(name, market, (Way(key, name, route, how, needs),), known_as))
    return found


def _exchanges(installed: dict) -> list[Brokerage]:
    """One per ccxt exchange, under its venue's name: ccxt ids for one venue's other markets (Binance
    COIN-M, USDⓈ-M) share its website in ccxt's description, so they are ways into the first id's venue."""
    venues: dict[str, str] = {}
    found = []
    for exchange_id, provider_class in sorted(FAMILY.items()):
        if provider_class.key not in installed:
            continue
        name = provider_class.display_name
        asked = ", ".join(f.label for f in provider_class.credential_fields if f.required)
        way = Way(provider_class.key, name, CCXT, API_KEY, f"A read-only API key from {name}: {asked}.")
        found.append(Brokerage(venues.setdefault(_website(exchange_id), name), "crypto", (way,)))
    return found


def _snaptrade() -> list[Brokerage]:
    """From SnapTrade's documented list, not its live one: the count must hold on any installation,
    with or without a SnapTrade key (the SnapTrade page itself offers the live list)."""
    found = []
    for slug, name in snaptrade.DOCUMENTED_BROKERAGES:
        needs = (
            f"Your {name} login, given on SnapTrade's page; a free SnapTrade Personal key too, unless this "
            "installation has a SnapTrade key."
        )
        way = Way("snaptrade", name, SNAPTRADE, THROUGH_SNAPTRADE, needs, (("brokerage", slug),))
        found.append(Brokerage(name, "stocks", (way,)))
    return found


def _firms() -> list[Brokerage]:
    found = []
    for key, firm in projectx.FIRMS.items():
        name = firm["name"]
        needs = f"Your ProjectX username and an API key from {name} (the firm must enable API access)."
        way = Way("projectx", name, PROJECTX, API_KEY, needs, (("firm", key),))
        found.append(Brokerage(name, "futures", (way,), note="A futures prop firm on ProjectX."))
    return found


def _tradovate_firms(installed: dict) -> list[Brokerage]:
    """Each firm with a way in through each Tradovate provider installed."""
    found = []
    for firm in tradovate.FIRMS.values():
        name = firm["name"]
        login = f"The Tradovate login {name} gave you"
        connects = {
            "tradovate_signin": (SIGN_IN, f"{login}."),
            "tradovate": (
                API_KEY,
                f"{login} and a Tradovate API key (CID and secret). UNCONFIRMED whether {name}'s accounts may "
                "use Tradovate's API Access: if not, sign in at Tradovate instead.",
            ),
        }
        ways = tuple(Way(key, name, TRADOVATE_FIRMS, *connects[key]) for key in TRADOVATE_PROVIDERS if key in installed)
        found.append(
            Brokerage(name, "futures", ways, note="A futures prop firm whose accounts are Tradovate accounts.")
        )
    return found


def _metatrader() -> Brokerage:
    needs = (
        "Your MetaTrader login, its investor (read-only) password and server; the server search finds "
        "any MetaTrader broker. A MetaApi token too, unless this installation has one."
    )
    note = f"Any broker or prop firm offering MetaTrader 4 or 5, for example {', '.join(METATRADER_EXAMPLES)}."
    return Brokerage(METATRADER, "forex", (Way("metatrader", METATRADER, None, THROUGH_METAAPI, needs),), note=note)


def catalogue() -> Catalogue:
    installed = provider_classes()
    found = _own(installed) + _exchanges(installed)
    if "snaptrade" in installed:
        found += _snaptrade()
    if "projectx" in installed:
        found += _firms()
    if any(key in installed for key in TRADOVATE_PROVIDERS):
        found += _tradovate_firms(installed)
    if "metatrader" in installed:
        found.append(_metatrader())
    # One entry per venue, as the first route reaching it names it (found is in ROUTES order).
    venues: dict[str, Brokerage] = {}
    for brokerage in found:
        first = venues.setdefault(_venue(brokerage.name), brokerage)
        if first is not brokerage:
            venues[_venue(brokerage.name)] = replace(first, ways=(*first.ways, *brokerage.ways))
    order = [market for market, _ in MARKETS]
    return Catalogue(tuple(sorted(venues.values(), key=lambda b: (order.index(b.market), b.name.casefold()))))
