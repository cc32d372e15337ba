"""Finding a brokerage in the catalogue (brokers/catalogue.py) as the trader types, and its groups by market.

The picker at /brokers/add/ shows the catalogue as it is; this module only filters and groups it.
"""

from __future__ import annotations

import re

from brokers.catalogue import MARKETS, METATRADER, Brokerage


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _matches(brokerage: Brokerage, words: list[str]) -> bool:
    """Each typed word starts one of its words ("ic mark" finds MetaTrader by IC Markets), or starts its
    words run together ("etrade" finds E*TRADE)."""
    text = " ".join(
        (
            brokerage.name,
            *brokerage.known_as,
            brokerage.note,
            dict(MARKETS)[brokerage.market],
            *(part for way in brokerage.ways for part in (way.name, way.how)),
        )
    )
    known = _words(text)
    squashed = "".join(known)
    return all(squashed.startswith(w) or any(k.startswith(w) for k in known) for w in words)


def search(brokerages: tuple[Brokerage, ...], query: str) -> list[Brokerage]:
    words = _words(query)
    return [b for b in brokerages if _matches(b, words)] if words else list(brokerages)


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
