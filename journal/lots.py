"""What one instrument's fills mean: FIFO lots, round trips from flat to flat, and their P&L.

Pure Python on Decimal: no database, no clock. journal.positions feeds it one account's fills
of one instrument and stores what it returns.

A round trip runs from flat to flat. A fill that crosses zero (a reversal) closes one round
trip and opens the next with the rest of its quantity; its fees are split by quantity. Within
a round trip, closing fills match the oldest open lots first (FIFO). Over a whole round trip
the matching method does not change the P&L (every lot is matched by the time the position
is flat); it decides only how the P&L of a position still open splits into realised and
unrealised, which is what FIFO is for here (docs/architecture.md, "Positions and round trips").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

BUY = "BUY"
LONG = "LONG"
SHORT = "SHORT"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Fill:
    """One execution, as the engine needs it. quantity > 0; side says the direction.

    fees are in the instrument's currency; other_fees are (currency, cost) pairs charged in
    another currency (they are carried, never added to the instrument-currency P&L).
    """

    id: int
    broker_trade_id: str
    executed_at: datetime
    side: str
    quantity: Decimal
    price: Decimal
    multiplier: Decimal = Decimal(1)
    fees: Decimal = ZERO
    other_fees: tuple[tuple[str, Decimal], ...] = ()
    fx_rate_to_base: Decimal | None = None

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side == BUY else -self.quantity


def arrival_order(fill: Fill) -> tuple:
    """The one order fills are read in, whatever order they arrived in: by execution time, then broker id."""
    return (fill.executed_at, fill.broker_trade_id, fill.id)


@dataclass
class _Lot:
    quantity: Decimal  # unsigned, what is still open
    price: Decimal


@dataclass
class RoundTrip:
    """One position from flat to flat (closed_at None while it is still open).

    size is the quantity opened; entry/exit averages are over opening and closing quantities.
    gross is the realised P&L in the instrument's currency, net is gross less the fees in that
    currency; gross_base / fees_base are in the account's base currency, None when a fill of
    the round trip has no FX rate. open_quantity is signed; open_average is the FIFO cost of
    the lots still open.
    """

    side: str
    opened_at: datetime
    closed_at: datetime | None = None
    size: Decimal = ZERO
    entry_value: Decimal = ZERO
    exit_quantity: Decimal = ZERO
    exit_value: Decimal = ZERO
    gross: Decimal = ZERO
    fees: Decimal = ZERO
    other_fees: dict[str, Decimal] = field(default_factory=dict)
    gross_base: Decimal | None = ZERO
    fees_base: Decimal | None = ZERO
    fill_ids: list[int] = field(default_factory=list)
    lots: deque[_Lot] = field(default_factory=deque)

    @property
    def net(self) -> Decimal:
        return self.gross - self.fees

    @property
    def net_base(self) -> Decimal | None:
        if self.gross_base is None or self.fees_base is None:
            return None
        return self.gross_base - self.fees_base

    @property
    def entry_average(self) -> Decimal:
        return self.entry_value / self.size if self.size else ZERO

    @property
    def exit_average(self) -> Decimal | None:
        return self.exit_value / self.exit_quantity if self.exit_quantity else None

    @property
    def open_quantity(self) -> Decimal:
        held = sum((lot.quantity for lot in self.lots), ZERO)
        return held if self.side == LONG else -held

    @property
    def open_average(self) -> Decimal | None:
        held = sum((lot.quantity for lot in self.lots), ZERO)
        return sum((lot.quantity * lot.price for lot in self.lots), ZERO) / held if held else None

    def unrealised(self, mark: Decimal, multiplier: Decimal) -> Decimal:
        """P&L of the open lots at this mark price, in the instrument's currency."""
        direction = 1 if self.side == LONG else -1
        return sum(((mark - lot.price) * lot.quantity * multiplier * direction for lot in self.lots), ZERO)


def round_trips(fills: list[Fill]) -> list[RoundTrip]:
    """Every round trip of one instrument's fills (the last one open if the position is not flat)."""
    trips: list[RoundTrip] = []
    current: RoundTrip | None = None
    for fill in sorted(fills, key=arrival_order):
        part = _Part(fill)
        while part.quantity:
            if current is None:
                current = RoundTrip(side=LONG if fill.side == BUY else SHORT, opened_at=fill.executed_at)
                trips.append(current)
            opening = (fill.side == BUY) == (current.side == LONG)
            used = part.quantity if opening else min(part.quantity, current.open_quantity.copy_abs())
            _book_fees(current, fill, *part.take(used))
            if opening:
                current.lots.append(_Lot(used, fill.price))
                current.size += used
                current.entry_value += used * fill.price
            else:
                _close(current, fill, used)
            if fill.id not in current.fill_ids:
                current.fill_ids.append(fill.id)
            if not current.lots:
                current.closed_at = fill.executed_at
                current = None
    return trips


class _Part:
    """What is left of a fill while it is booked to round trips (two of them when it reverses the position).

    Fees split by quantity; the last part takes what is left, so the parts add up exactly.
    """

    def __init__(self, fill: Fill):
        self.fill = fill
        self.quantity = fill.quantity
        self.fees = fill.fees
        self.whole_other: dict[str, Decimal] = {}
        for currency, cost in fill.other_fees:
            self.whole_other[currency] = self.whole_other.get(currency, ZERO) + cost
        self.other_fees = dict(self.whole_other)

    def take(self, used: Decimal) -> tuple[Decimal, dict[str, Decimal]]:
        whole = used == self.quantity
        fees = self.fees if whole else _share(self.fill.fees, used, self.fill.quantity)
        other = {
            currency: cost if whole else _share(self.whole_other[currency], used, self.fill.quantity)
            for currency, cost in self.other_fees.items()
        }
        self.quantity -= used
        self.fees -= fees
        for currency, cost in other.items():
            self.other_fees[currency] -= cost
        return fees, other


# A share of a fee is cut to the places amounts are stored with, so the share and the rest add
# up to the fee exactly (an unrounded third would lose its last digit in the subtraction).
FEE_PLACES = Decimal("1e-18")


def _share(amount: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    return (amount * part / whole).quantize(FEE_PLACES)


def _book_fees(trip: RoundTrip, fill: Fill, fees: Decimal, other_fees: dict[str, Decimal]) -> None:
    trip.fees += fees
    for currency, cost in other_fees.items():
        trip.other_fees[currency] = trip.other_fees.get(currency, ZERO) + cost
    if trip.fees_base is not None:
        trip.fees_base = None if fill.fx_rate_to_base is None else trip.fees_base + fees * fill.fx_rate_to_base


def _close(trip: RoundTrip, fill: Fill, quantity: Decimal) -> None:
    direction = 1 if trip.side == LONG else -1
    trip.exit_quantity += quantity
    trip.exit_value += quantity * fill.price
    left = quantity
    realised = ZERO
    while left:
        lot = trip.lots[0]
        matched = min(left, lot.quantity)
        realised += (fill.price - lot.price) * matched * fill.multiplier * direction
        lot.quantity -= matched
        left -= matched
        if not lot.quantity:
            trip.lots.popleft()
    trip.gross += realised
    if trip.gross_base is not None:
        # Converted at the closing fill's rate, as brokers report realised P&L in base currency.
        trip.gross_base = None if fill.fx_rate_to_base is None else trip.gross_base + realised * fill.fx_rate_to_base


# Where each kind of instrument's trading day begins. CME futures (and their options) trade
# from 17:00 Chicago time, so a fill at 18:00 on Sunday belongs to Monday; US stocks and
# options keep New York's calendar day; crypto trades around the clock on UTC days.
_SESSION_START = {
    "FUT": (ZoneInfo("America/Chicago"), time(17)),
    "FOP": (ZoneInfo("America/Chicago"), time(17)),
    "CASH": (ZoneInfo("America/New_York"), time(17)),
    "CRYPTO": (ZoneInfo("UTC"), time(0)),
    "PERP": (ZoneInfo("UTC"), time(0)),
}
_DEFAULT_SESSION = (ZoneInfo("America/New_York"), time(0))


def trading_day(moment: datetime, asset_class: str) -> date:
    """The trading day of a moment for this kind of instrument (an evening session counts for the next day)."""
    zone, start = _SESSION_START.get(asset_class, _DEFAULT_SESSION)
    local = moment.astimezone(zone)
    day = local.date()
    if start != time(0) and local.time() >= start:
        day += timedelta(days=1)
    return day
