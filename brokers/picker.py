"""Finding a brokerage in the catalogue (brokers/catalogue.py) as the trader types, and its groups by market.

The picker at /brokers/add/ shows the catalogue as it is; this module only filters and groups it.
"""

from __future__ import annotations

import re

from brokers.catalogue import MARKETS, METATRADER, Brokerage


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _matches(texts: tuple[str, ...], words: list[str]) -> bool:
    """Each typed word starts one of the words of texts ("ic mark" finds MetaTrader by IC Markets), or
    starts their words run together ("etrade" finds E*TRADE)."""
    known = _words(" ".join(texts))
    squashed = "".join(known)
    return all(squashed.startswith(w) or any(k.startswith(w) for k in known) for w in words)


def _names(brokerage: Brokerage) -> tuple[str, ...]:
    return (brokerage.name, *brokerage.known_as)


def _everything(brokerage: Brokerage) -> tuple[str, ...]:
    ways = (part for way in brokerage.ways for part in (way.name, way.how))
    return (*_names(brokerage), brokerage.note, dict(MARKETS)[brokerage.market], *ways)


def search(brokerages: tuple[Brokerage, ...], query: str) -> list[Brokerage]:
    """The brokerages the words find: those they name first ("tradovate" finds Tradovate before the prop
    firms whose accounts are Tradovate accounts), in the catalogue's order within each."""
    words = _words(query)
    if not words:
        return list(brokerages)
    found = [b for b in brokerages if _matches(_everything(b), words)]
    return sorted(found, key=lambda b: not _matches(_names(b), words))


def any_broker(brokerages: tuple[Brokerage, ...]) -> Brokerage | None:
    """The entry that reaches brokers the catalogue cannot name one by one (MetaTrader), if installed."""
    return next((b for b in brokerages if b.name == METATRADER), None)


def grouped(brokerages: list[Brokerage]) -> list[tuple[str, str, list[Brokerage]]]:
    """(market, label, brokerages) for each market that has some."""
    return [
        (market, label, members)
        for market, label in MARKETS
        if (members := [b for b in brokerages if b.market == market])
    ]
