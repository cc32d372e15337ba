"""NinjaTrader 8's Executions grid exported as CSV: one row per fill, in the PC's locale and time zone."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import IO

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

KEY = "ninjatrader"
LABEL = "NinjaTrader 8 Executions CSV"
SIDES = {"buy": BUY, "sell": SELL, "buy to cover": BUY, "sell short": SELL}
# The date order follows the PC's locale: a `;` file is read day first (UNCONFIRMED, docs/file-import.md).
MONTH_FIRST = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S")
DAY_FIRST = ("%d/%m/%Y %H:%M:%S", "%d-%m-%Y %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S")


def recognises(header: list[str]) -> bool:
    names = {h.lower() for h in header}
    return {"instrument", "action", "quantity", "price", "time", "e/x"} <= names


def read(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    rows = CsvRows(text_lines(stream, encoding))
    account_col = rows.column("Account display name", "Account")
    formats = DAY_FIRST if rows.decimal_comma else MONTH_FIRST
    zone = options.time_zone or options.trader_zone
    keys = ContentKeys()
    for row, values in rows:
        dec = rows.decimal_comma

        def get(name: str, values=values, row=row) -> str:
            return required(values, rows.column(name), row=row, name=name)

        side = SIDES.get(get("Action").lower())
        if side is None:
            raise FileProblem(f"{values['Action']!r} is no Buy or Sell", row=row, column="Action")
        instrument = get("Instrument")
        symbol = futures.from_ninjatrader(instrument)
        quantity = positive(get("Quantity"), row=row, column="Quantity", decimal_comma=dec)
        price = number(get("Price"), row=row, column="Price", decimal_comma=dec)
        at = moment(get("Time"), formats, zone, row=row, column="Time")
        commission = values.get(rows.column("Commission") or "", "")
        fees = abs(number(commission, row=row, column="Commission", decimal_comma=dec)) if commission else Decimal(0)
        account = values.get(account_col, "") if account_col else ""
        if symbol is None:
            symbol, asset_class, multiplier = instrument.upper(), "STK", Decimal(1)
        else:
            asset_class = "FUT"
            multiplier = futures.point_value(symbol, dict(options.known_multipliers))
            if multiplier is None:
                options.note(f"The point value of {symbol} is unknown: its P&L is in points until a sync corrects it.")
                multiplier = Decimal(1)
        if len(symbol) > 64:
            raise FileProblem("the instrument is longer than 64 characters", row=row, column="Instrument")
        trade = BrokerTrade(
            # NinjaTrader's own ID is not known to equal any broker API's id: the content decides.
            broker_trade_id=keys(symbol, side, quantity, price, at),
            account_external_id=account,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            executed_at=at,
            fees=fees,
            asset_class=asset_class,
            multiplier=multiplier,
            order_id=values.get(rows.column("Order ID") or "", "")[:128],
            raw=values,
        )
        yield Parsed(row, trade, account)
