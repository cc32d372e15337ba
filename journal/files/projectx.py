"""ProjectX's (TopstepX and other firms') trades export: one round trip per row, split into its two fills."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import IO

from brokers.providers.projectx import FEES_INCLUDE_COMMISSIONS
from brokers.providers.types import BUY, SELL, BrokerTrade
from journal.files import futures
from journal.files.reading import (
    ContentKeys,
    CsvRows,
    FileProblem,
    NotAFill,
    Options,
    Parsed,
    moment,
    number,
    positive,
    required,
    text_lines,
)

KEY = "projectx_trades"
LABEL = "ProjectX / TopstepX trades CSV"
# Times carry their offset (10/01/2025 21:13:23 +02:00); one without is read in the chosen zone.
TIME_FORMATS = ("%m/%d/%Y %H:%M:%S %z", "%m/%d/%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z")
SIDES = {"long": (BUY, SELL), "short": (SELL, BUY)}


def recognises(header: list[str]) -> bool:
    return {"contractname", "enteredat", "exitedat", "entryprice", "exitprice", "size", "type"} <= {
        h.lower() for h in header
    }


def read(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    """Each row is an entry and an exit: two fills keyed by content (whether the row's Id is any
    API id is UNCONFIRMED), both keeping the row's Id in their record. Fees are split between them."""
    rows = CsvRows(text_lines(stream, encoding))
    zone = options.time_zone or options.trader_zone
    keys = ContentKeys()
    for row, values in rows:

        def get(name: str, values=values, row=row) -> str:
            return required(values, rows.column(name), row=row, name=name)

        sides = SIDES.get(get("Type").lower())
        if sides is None:
            raise FileProblem(f"{values[rows.column('Type')]!r} is neither Long nor Short", row=row, column="Type")
        symbol = get("ContractName").upper()
        if len(symbol) > 64:
            raise FileProblem("the contract name is longer than 64 characters", row=row, column="ContractName")
        quantity = positive(get("Size"), row=row, column="Size")
        fees = _fees(values, rows, row)
        multiplier = futures.point_value(symbol, dict(options.known_multipliers))
        if multiplier is None:
            options.note(f"The point value of {symbol} is unknown: its P&L is in points until a sync corrects it.")
            multiplier = Decimal(1)
        legs = (
            (sides[0], "EntryPrice", "EnteredAt"),
            (sides[1], "ExitPrice", "ExitedAt"),
        )
        for side, price_col, time_col in legs:
            price = number(get(price_col), row=row, column=price_col)
            at = moment(get(time_col), TIME_FORMATS, zone, row=row, column=time_col)
            trade = BrokerTrade(
                broker_trade_id=keys(symbol, side, quantity, price, at),
                account_external_id="",
                symbol=symbol,
                side=side,
                quantity=quantity,
                price=price,
                executed_at=at,
                fees=fees / 2,
                asset_class="FUT",
                multiplier=multiplier,
                raw={**values, "leg": "entry" if price_col == "EntryPrice" else "exit"},
            )
            yield Parsed(row, trade)


def _fees(values: dict[str, str], rows: CsvRows, row: int) -> Decimal:
    # Whether Fees already holds Commissions is UNCONFIRMED: the API's provider decides it in one place.
    names = ("Fees",) if FEES_INCLUDE_COMMISSIONS else ("Fees", "Commissions")
    total = Decimal(0)
    for name in names:
        column = rows.column(name)
        if column and values.get(column):
            total += abs(number(values[column], row=row, column=column))
    return total
