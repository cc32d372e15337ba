"""Round trips and open positions kept in step with the fills: each import recomputes the instruments it touched.

An instrument is recomputed from its earliest changed fill on: the round trips that closed
before that fill stay, everything after is rebuilt from the fills (deleted ones left out).
So a fill that arrives late or out of order changes every round trip after it and none
before, and the usual sync (new fills after all others) rebuilds only the open round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Context, Decimal

from django.db import transaction
from django.db.models import Exists, OuterRef

from brokers.providers.types import BrokerTrade
from journal import lots
from journal.models import RoundTrip, Trade
from journal.numbers import plain

# Wide enough that cutting any stored amount to 18 places never overflows the context.
_WIDE = Context(prec=60)
_PLACES = Decimal("1e-18")


@dataclass(frozen=True)
class Instrument:
    """What the lot engine keeps apart: one account's fills of one symbol (and option series)."""

    account_id: int
    symbol: str
    expiry: date | None = None
    strike: Decimal | None = None
    option_right: str = ""

    @classmethod
    def of(cls, account_id: int, trade) -> Instrument:
        """The instrument of a stored Trade or of a provider's BrokerTrade."""
        strike = trade.strike.normalize() if trade.strike is not None else None
        return cls(account_id, trade.symbol, trade.expiry, strike, trade.option_right)

    def fills(self):
        return Trade.objects.filter(
            account_id=self.account_id,
            symbol=self.symbol,
            expiry=self.expiry,
            strike=self.strike,
            option_right=self.option_right,
            deleted_at__isnull=True,
        )

    def round_trips(self):
        return RoundTrip.objects.filter(
            account_id=self.account_id,
            symbol=self.symbol,
            expiry=self.expiry,
            strike=self.strike,
            option_right=self.option_right,
        )


def _stored(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(_PLACES, context=_WIDE)


def as_fill(trade: Trade) -> lots.Fill:
    """A stored trade as the engine reads it: fees in the instrument's currency, and apart each other currency's."""
    by_currency: dict[str, Decimal] = {}
    charges = [(trade.fee_currency or trade.currency, trade.fees)]
    charges += [(fee["currency"] or trade.currency, Decimal(str(fee["cost"]))) for fee in trade.other_fees]
    for currency, cost in charges:
        by_currency[currency] = by_currency.get(currency, Decimal(0)) + cost
    return lots.Fill(
        id=trade.pk,
        broker_trade_id=trade.broker_trade_id,
        executed_at=trade.executed_at,
        side=trade.side,
        quantity=trade.quantity,
        price=trade.price,
        multiplier=trade.multiplier,
        fees=by_currency.pop(trade.currency, Decimal(0)),
        other_fees=tuple((currency, cost) for currency, cost in by_currency.items() if cost),
        fx_rate_to_base=trade.fx_rate_to_base,
    )


def changed_by(account_id: int, trades: Iterable) -> dict[Instrument, datetime]:
    """Each instrument of these fills (stored trades or a provider's) with the earliest of its fills' moments."""
    earliest: dict[Instrument, datetime] = {}
    for trade in trades:
        instrument = Instrument.of(account_id, trade)
        if instrument not in earliest or trade.executed_at < earliest[instrument]:
            earliest[instrument] = trade.executed_at
    return earliest


class ChangedInstruments:
    """What an import changed, instrument by instrument, from which moment on: fed by import_trades' on_batch_committed.

    A bust is not a fill: it changes the instrument of the fill it voided, from that fill's moment.
    """

    def __init__(self, account_id: int):
        self.account_id = account_id
        self.since: dict[Instrument, datetime] = {}

    def add(self, batch: list[BrokerTrade], voided: list[Trade]) -> None:
        fills = [t for t in batch if not t.busted]
        for instrument, earliest in changed_by(self.account_id, [*fills, *voided]).items():
            self.since[instrument] = min(earliest, self.since.get(instrument, earliest))


def positions_recompute(*, changed: Mapping[Instrument, datetime | None]) -> int:
    """Recompute each instrument from its earliest changed fill (None: its first); returns the round trips rebuilt."""
    total = 0
    for instrument, since in changed.items():
        with transaction.atomic():
            total += _recompute(instrument, since)
    return total


def positions_recompute_account(*, account_id: int) -> int:
    """Every instrument of one account from its first fill (after a fill was deleted, or for fills imported before)."""
    keys = Trade.objects.filter(account_id=account_id).values_list("symbol", "expiry", "strike", "option_right")
    instruments = {Instrument(account_id, s, e, k.normalize() if k is not None else None, r) for s, e, k, r in keys}
    RoundTrip.objects.filter(account_id=account_id).delete()
    return positions_recompute(changed=dict.fromkeys(instruments))


def _restart_point(instrument: Instrument, since: datetime | None) -> datetime | None:
    """The close of the last round trip that stays, or None to rebuild the instrument from its first fill.

    A round trip stays if it closed before `since` and the position was flat after its
    closing fill: one that reopened at the very moment it closed (a reversal splits one
    fill between the two) is rebuilt with the next.
    """
    if since is None:
        return None
    # The last few closes are enough: a longer run of reversals rebuilds the whole instrument.
    reopened = instrument.round_trips().filter(opened_at=OuterRef("closed_at"))
    closes = (
        instrument.round_trips()
        .filter(closed_at__lt=since)
        .annotate(reopened=Exists(reopened))
        .order_by("-closed_at", "-id")
        .values_list("closed_at", "reopened")[:50]
    )
    return next((closed_at for closed_at, reopened in closes if not reopened), None)


def _recompute(instrument: Instrument, since: datetime | None) -> int:
    restart = _restart_point(instrument, since)
    trips_after = instrument.round_trips()
    fills = instrument.fills()
    if restart is not None:
        trips_after = trips_after.exclude(closed_at__lte=restart)
        fills = fills.filter(executed_at__gt=restart)
    trips_after.delete()
    trades = list(fills.order_by("executed_at", "broker_trade_id", "id"))
    if not trades:
        return 0
    # The instrument's description is its newest fill's (a broker may correct it later).
    latest = trades[-1]
    rows, links = [], []
    for trip in lots.round_trips([as_fill(t) for t in trades]):
        rows.append(
            RoundTrip(
                account_id=instrument.account_id,
                symbol=instrument.symbol,
                expiry=instrument.expiry,
                strike=latest.strike,
                option_right=instrument.option_right,
                asset_class=latest.asset_class,
                currency=latest.currency,
                multiplier=latest.multiplier,
                side=trip.side,
                opened_at=trip.opened_at,
                closed_at=trip.closed_at,
                trading_day=lots.trading_day(trip.closed_at, latest.asset_class) if trip.closed_at else None,
                size=_stored(trip.size),
                entry_average=_stored(trip.entry_average),
                exit_average=_stored(trip.exit_average),
                open_quantity=_stored(trip.open_quantity),
                open_average=_stored(trip.open_average),
                gross_pnl=_stored(trip.gross),
                fees=_stored(trip.fees),
                net_pnl=_stored(trip.net),
                other_fees={currency: plain(cost) for currency, cost in trip.other_fees.items()},
                gross_pnl_base=_stored(trip.gross_base),
                net_pnl_base=_stored(trip.net_base),
                fill_count=len(trip.fill_ids),
            )
        )
        links.append(trip.fill_ids)
    RoundTrip.objects.bulk_create(rows)
    through = RoundTrip.fills.through
    pairs = [(row.pk, fill_id) for row, ids in zip(rows, links, strict=True) for fill_id in ids]
    through.objects.bulk_create([through(roundtrip_id=trip, trade_id=fill) for trip, fill in pairs])
    return len(rows)
