"""The journal's positions beside the broker's: which instruments differ, never a fill invented to close the gap."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.db.models import Case, DecimalField, F, Sum, When

from brokers.providers.types import BUY, BrokerPosition
from journal.models import Trade
from journal.numbers import plain


def _key(symbol: str, expiry, strike, option_right: str) -> tuple:
    # A pair's slash is left out: Alpaca reports the position of BTC/USD as BTCUSD, and no two
    # instruments differ by a slash alone.
    return (
        symbol.replace("/", ""),
        expiry.isoformat() if expiry else "",
        plain(strike),
        option_right,
    )


def journal_positions(account_id: int, as_of: datetime) -> dict[tuple, Decimal]:
    """Signed quantity per instrument from the account's fills executed up to `as_of` (deleted ones left out)."""
    signed = Case(
        When(side=BUY, then=F("quantity")),
        default=-F("quantity"),
        output_field=DecimalField(max_digits=38, decimal_places=18),
    )
    rows = (
        Trade.objects.filter(account_id=account_id, deleted_at__isnull=True, executed_at__lte=as_of)
        .order_by()
        .values("symbol", "expiry", "strike", "option_right")
        .annotate(quantity=Sum(signed))
    )
    return {
        _key(r["symbol"], r["expiry"], r["strike"], r["option_right"]): r["quantity"] for r in rows if r["quantity"]
    }


def position_differences(account_id: int, reported: Iterable[BrokerPosition], read_at: datetime) -> list[dict]:
    """Each instrument whose signed quantity differs between the journal and the broker, as a record for the run.

    The journal is counted at the moment the broker's figure holds (its as_of, else when it
    was read), so a fill the broker makes after that moment is not a difference.
    """
    reported = list(reported)
    as_of = min((p.as_of for p in reported if p.as_of), default=read_at)
    broker = {}
    for p in reported:
        key = _key(p.symbol, p.expiry, p.strike, p.option_right)
        broker[key] = broker.get(key, Decimal(0)) + p.quantity
    journal = journal_positions(account_id, as_of)
    differences = []
    for key in sorted(set(broker) | set(journal)):
        ours, theirs = journal.get(key, Decimal(0)), broker.get(key, Decimal(0))
        if ours != theirs:
            differences.append({"instrument": _name(key), "journal": plain(ours), "broker": plain(theirs)})
    return differences


def _name(key: tuple) -> str:
    symbol, expiry, strike, right = key
    return " ".join(part for part in (symbol, expiry, f"{strike}{right}" if strike else right) if part)


def instrument_name(symbol: str, expiry, strike, option_right: str) -> str:
    """How a run's record names an instrument ("ESZ6", "AAPL 2026-12-18 250C"), for fills and positions alike."""
    return _name(_key(symbol, expiry, strike, option_right))


def broker_marks(reported: Iterable[BrokerPosition], read_at: datetime) -> dict[str, dict]:
    """The broker's price of each instrument it gives one for, and when: kept with the run to value open positions."""
    return {
        instrument_name(p.symbol, p.expiry, p.strike, p.option_right): {
            "price": plain(p.mark_price),
            "as_of": (p.as_of or read_at).isoformat(),
        }
        for p in reported
        if p.mark_price is not None
    }
