"""The broker-neutral template CSV: one execution per row, columns named as docs/file-import.md lists them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO

from brokers.providers.types import BUY, SELL, BrokerTrade
from journal.files.reading import (
    ContentKeys,
    CsvRows,
    FileProblem,
    NotAFill,
    Options,
    Parsed,
    in_utc,
    number,
    positive,
    required,
    text_lines,
)

KEY = "template"
LABEL = "Template CSV (one execution per row)"
REQUIRED = ("account", "executed_at", "symbol", "asset_class", "side", "quantity", "price")
ASSET_CLASSES = {
    "stock": "STK", "option": "OPT", "future": "FUT", "future_option": "FOP",
    "forex": "CASH", "cfd": "CFD", "crypto": "CRYPTO",
}  # fmt: skip
SIDES = {"buy": BUY, "sell": SELL}
RIGHTS = {"c": "C", "call": "C", "p": "P", "put": "P"}
# The downloadable example: a stock, a future and an option (docs/file-import.md).
EXAMPLE = (
    "account,executed_at,symbol,asset_class,side,quantity,price,multiplier,currency,commission,fees,"
    "exec_id,order_id,expiry,strike,put_call,note\n"
    "U1234567,2026-03-04T14:31:07-05:00,AAPL,stock,buy,100,182.35,,USD,1.00,0.02,0001f4e5.6576a1b2.01.01,"
    "412,,,,bought the open\n"
    "U1234567,2026-03-04T15:02:44.250Z,MESH6,future,sell,2,5812.25,5,USD,0.70,0.64,,,,,,\n"
    "U1234567,2026-03-05T10:15:00-05:00,AAPL  260320C00190000,option,buy,1,3.45,100,USD,0.65,0.03,,,"
    "2026-03-20,190,C,\n"
)


def recognises(header: list[str]) -> bool:
    return {"account", "executed_at", "symbol", "side", "quantity", "price"} <= {h.lower() for h in header}


def read(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    rows = CsvRows(text_lines(stream, encoding))
    missing = [name for name in REQUIRED if rows.column(name) is None]
    if missing:
        raise FileProblem(f"the header has no column {', '.join(missing)} (see the template)", row=1)
    keys = ContentKeys()
    for row, values in rows:
        values = {k.lower(): v for k, v in values.items() if k}
        if (values.get("status") or "filled").lower() not in ("filled", "busted"):
            raise FileProblem(f"{values['status']!r} is neither filled nor busted", row=row, column="status")
        yield _parsed(row, values, options, keys, rows.decimal_comma)


def _parsed(row: int, values: dict[str, str], options: Options, keys: ContentKeys, dec: bool) -> Parsed:
    def get(name: str) -> str:
        return required(values, name, row=row, name=name)

    side = SIDES.get(get("side").lower())
    if side is None:
        raise FileProblem(f"{values['side']!r} is neither buy nor sell", row=row, column="side")
    asset_class = ASSET_CLASSES.get(get("asset_class").lower())
    if asset_class is None:
        raise FileProblem(
            f"{values['asset_class']!r} is none of {', '.join(ASSET_CLASSES)}", row=row, column="asset_class"
        )
    quantity = positive(get("quantity"), row=row, column="quantity", decimal_comma=dec)
    price = number(get("price"), row=row, column="price", decimal_comma=dec)
    executed_at = _executed_at(get("executed_at"), options, row)
    fees = sum((_cost(values, name, row, dec) for name in ("commission", "fees")), start=Decimal(0))
    multiplier = (
        positive(values["multiplier"], row=row, column="multiplier", decimal_comma=dec)
        if values.get("multiplier")
        else None
    )
    if multiplier is None and asset_class in ("FUT", "OPT", "FOP", "CFD"):
        raise FileProblem(f"a {values['asset_class']} needs its multiplier", row=row, column="multiplier")
    symbol, account = get("symbol"), get("account")
    is_option = asset_class in ("OPT", "FOP")
    exec_id = values.get("exec_id", "")
    if len(exec_id) > 128:
        raise FileProblem("the id is longer than 128 characters", row=row, column="exec_id")
    currency = (values.get("currency") or "USD").upper()
    if len(currency) > 16:
        raise FileProblem(f"{currency!r} is no currency code", row=row, column="currency")
    if len(symbol) > 64:
        raise FileProblem("the symbol is longer than 64 characters", row=row, column="symbol")
    trade = BrokerTrade(
        broker_trade_id=exec_id or keys(symbol, side, quantity, price, executed_at),
        account_external_id=account,
        symbol=symbol,
        side=side,
        quantity=quantity,
        price=price,
        executed_at=executed_at,
        fees=fees,
        currency=currency,
        asset_class=asset_class,
        multiplier=multiplier or Decimal(1),
        order_id=values.get("order_id", "")[:128],
        expiry=_expiry(values.get("expiry", ""), row) if is_option else None,
        strike=number(values["strike"], row=row, column="strike", decimal_comma=dec)
        if is_option and values.get("strike")
        else None,
        option_right=RIGHTS.get(values.get("put_call", "").lower(), "") if is_option else "",
        busted=(values.get("status") or "").lower() == "busted",
        raw={k: v for k, v in values.items() if v},
    )
    return Parsed(row, trade, account)


def _cost(values: dict[str, str], name: str, row: int, dec: bool):
    if not values.get(name):
        return Decimal(0)
    cost = number(values[name], row=row, column=name, decimal_comma=dec)
    if cost < 0:
        raise FileProblem(
            f"{values[name]!r} is negative: a cost is positive (rebates are not taken)", row=row, column=name
        )
    return cost


def _executed_at(text: str, options: Options, row: int) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise FileProblem(
            f"{text!r} is not ISO 8601 (e.g. 2026-03-04T14:31:07-05:00)", row=row, column="executed_at"
        ) from None
    if parsed.tzinfo is None and options.time_zone is None:
        raise FileProblem(
            f"{text!r} has no offset: add one (-05:00, Z) or choose the file's time zone", row=row, column="executed_at"
        )
    return in_utc(parsed, options.time_zone or UTC, text, row=row, column="executed_at")


def _expiry(text: str, row: int) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FileProblem(f"{text!r} is not a date written YYYY-MM-DD", row=row, column="expiry") from None
