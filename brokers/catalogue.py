"""Every brokerage this installation reaches, once each, by the route a trader takes to it.

One venue reachable by two routes (Schwab directly and through SnapTrade) is one brokerage: it
is listed under the first route in ROUTES and named as "also" under the others. The command
`manage.py list_brokers` prints this, and the README quotes its total (a test keeps them equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import ccxt

from brokers.providers import projectx, snaptrade
from brokers.providers.ccxt.family import FAMILY
from brokers.providers.registry import provider_classes

DIRECT, CCXT, SNAPTRADE, PROJECTX, METATRADER = "direct", "ccxt", "SnapTrade", "ProjectX firms", "MetaTrader"
ROUTES = (DIRECT, CCXT, SNAPTRADE, PROJECTX)
# Providers that are a route to many brokerages rather than one brokerage, and the simulated one.
NOT_A_BROKERAGE = {"demo", "snaptrade", "projectx", "metatrader"}
# A direct provider by the brokerage a trader knows: two ways to connect one broker are one
# brokerage, and Tradovate's API also serves NinjaTrader's brokerage accounts.
DIRECT_BROKERAGES = {
    "tradovate": ("Tradovate", "NinjaTrader brokerage (through Tradovate)"),
    "tradovate_signin": ("Tradovate",),
    "ibkr_flex": ("Interactive Brokers",),
    "alpaca_connect": ("Alpaca",),
}
# ccxt exchanges that are a brokerage reached another way under another name.
SAME_AS = {"Alpaca Crypto": "Alpaca"}


@dataclass(frozen=True)
class Catalogue:
    routes: dict[str, list[str]]  # route -> the brokerages counted under it
    also: dict[str, list[str]]  # route -> brokerages it reaches that an earlier route counted
    metatrader: bool  # "any MT4/MT5 broker" through MetaApi: a route, not a named brokerage

    @property
    def total(self) -> int:
        return sum(len(names) for names in self.routes.values())


def _venue(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", SAME_AS.get(name, name).lower())


def _ccxt_brokerages(installed: set[str]) -> list[str]:
    """One name per venue: ccxt ids for one venue's other markets (Binance COIN-M, USDⓈ-M) share its
    website in ccxt's own description, so they count once, under the first id's name."""
    names: dict[str, str] = {}
    for exchange_id, provider_class in sorted(FAMILY.items()):
        if provider_class.key not in installed:
            continue
        www = getattr(ccxt, exchange_id)().describe()["urls"].get("www") or exchange_id
        site = (urlsplit(www[0] if isinstance(www, list) else www).hostname or exchange_id).removeprefix("www.")
        names.setdefault(site, provider_class.display_name)
    return sorted(names.values(), key=str.lower)


def catalogue() -> Catalogue:
    installed = provider_classes()
    offered: dict[str, list[str]] = {route: [] for route in ROUTES}
    for key, provider_class in installed.items():
        if key in NOT_A_BROKERAGE or provider_class in FAMILY.values():
            continue
        offered[DIRECT].extend(DIRECT_BROKERAGES.get(key, (provider_class.display_name,)))
    offered[CCXT] = _ccxt_brokerages(set(installed))
    if "snaptrade" in installed:
        offered[SNAPTRADE] = list(snaptrade.DOCUMENTED_BROKERAGES)
    if "projectx" in installed:
        offered[PROJECTX] = [firm["name"] for firm in projectx.FIRMS.values()]
    routes: dict[str, list[str]] = {route: [] for route in ROUTES}
    also: dict[str, list[str]] = {route: [] for route in ROUTES}
    seen: set[str] = set()
    for route in ROUTES:
        # Two ways to connect one broker on the same route (password and sign-in) name it once.
        for name in sorted({_venue(n): n for n in offered[route]}.values(), key=str.lower):
            (also if _venue(name) in seen else routes)[route].append(name)
            seen.add(_venue(name))
    return Catalogue(routes=routes, also=also, metatrader="metatrader" in installed)
