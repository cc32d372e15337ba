"""Tradovate's Orders export (one row per order) and Performance export (paired fills with Tradovate's fill ids)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO
from zoneinfo import ZoneInfo

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

ORDERS, PERFORMANCE, POSITION_HISTORY = "tradovate_orders", "tradovate_performance", "tradovate_position_history"
LABELS = {
    ORDERS: "Tradovate Orders CSV",
    PERFORMANCE: "Tradovate Performance CSV (paired fills)",
    POSITION_HISTORY: "Tradovate Position History CSV (paired fills)",
}
# The files carry no offset; which zone they are in is UNCONFIRMED (docs/file-import.md).
DEFAULT_ZONE = ZoneInfo("America/Chicago")
TIME_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M:%S")
NO_FEES = "Tradovate's exports carry no fees: these fills are imported with fees 0."


def recognises_orders(header: list[str]) -> bool:
    names = {h.lower() for h in header}
    return "b/s" in names and "contract" in names and ("orderid" in names or "order id" in names)


def recognises_performance(header: list[str]) -> bool:
    return {"buyfillid", "sellfillid", "boughttimestamp", "soldtimestamp"} <= {h.lower() for h in header}


def _symbol(text: str, row: int, column: str) -> str:
    symbol = text.strip().upper()
    if not symbol or len(symbol) > 64:
        raise FileProblem(f"{text!r} is no contract", row=row, column=column)
    return symbol


def _multiplier(symbol: str, options: Options) -> Decimal:
    value = futures.point_value(symbol, dict(options.known_multipliers))
    if value is None:
        options.note(f"The point value of {symbol} is unknown: its P&L is in points until a sync corrects it.")
        return Decimal(1)
    return value


def read_orders(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    rows = CsvRows(text_lines(stream, encoding))
    col = {
        "order": rows.column("orderId", "Order ID"),
        "account": rows.column("Account"),
        "side": rows.column("B/S"),
        "contract": rows.column("Contract"),
        "price": rows.column("avgPrice", "Avg Fill Price"),
        "quantity": rows.column("filledQty", "Filled Qty"),
        "time": rows.column("Fill Time"),
        "status": rows.column("Status"),
    }
    for name in ("side", "contract", "price", "quantity", "time", "status"):
        if col[name] is None:
            raise FileProblem(f"the header has no {name} column of Tradovate's Orders export", row=1)
    zone = options.time_zone or DEFAULT_ZONE
    keys = ContentKeys()
    options.note(NO_FEES)
    for row, values in rows:
        status = values.get(col["status"], "").strip()
        filled = values.get(col["quantity"], "").strip()
        if status.lower() != "filled" or not filled or number(filled, row=row, column=col["quantity"]) <= 0:
            yield NotAFill(row, f"order {status or 'without status'}")
            continue
        side = {"buy": BUY, "sell": SELL}.get(required(values, col["side"], row=row, name="B/S").strip().lower())
        if side is None:
            raise FileProblem(f"{values[col['side']]!r} is neither Buy nor Sell", row=row, column=col["side"])
        symbol = _symbol(required(values, col["contract"], row=row, name="Contract"), row, col["contract"])
        quantity = positive(filled, row=row, column=col["quantity"])
        price = number(required(values, col["price"], row=row, name="avgPrice"), row=row, column=col["price"])
        at = moment(
            required(values, col["time"], row=row, name="Fill Time"), TIME_FORMATS, zone, row=row, column=col["time"]
        )
        account = values.get(col["account"], "") if col["account"] else ""
        trade = BrokerTrade(
            broker_trade_id=keys(symbol, side, quantity, price, at),
            account_external_id=account,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            executed_at=at,
            asset_class="FUT",
            multiplier=_multiplier(symbol, options),
            order_id=values.get(col["order"], "")[:128] if col["order"] else "",
            raw=values,
        )
        yield Parsed(row, trade, account)


@dataclass
class _Fill:
    row: int
    side: str
    symbol: str
    quantity: Decimal
    price: Decimal
    at: datetime
    raw: dict


@dataclass(frozen=True)
class _Paired:
    """Where a paired export writes each pair: the contract, the paired quantity, the account, each leg."""

    symbol: str
    quantity: str
    account: str | None
    legs: tuple[tuple[str, str, str, str], ...]  # (side, fill id, price, time) columns


_PERFORMANCE = _Paired(
    "symbol",
    "qty",
    None,
    ((BUY, "buyFillId", "buyPrice", "boughtTimestamp"), (SELL, "sellFillId", "sellPrice", "soldTimestamp")),
)
_POSITION_HISTORY = _Paired(
    "Contract",
    "Paired Qty",
    "Account",
    ((BUY, "Buy Fill ID", "Buy Price", "Bought Timestamp"), (SELL, "Sell Fill ID", "Sell Price", "Sold Timestamp")),
)


def recognises_position_history(header: list[str]) -> bool:
    return {"buy fill id", "sell fill id", "paired qty", "bought timestamp", "sold timestamp"} <= {
        h.lower() for h in header
    }


def read_performance(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    return _read_paired(stream, encoding, options, _PERFORMANCE)


def read_position_history(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    return _read_paired(stream, encoding, options, _POSITION_HISTORY)


def _read_paired(stream: IO[bytes], encoding: str, options: Options, layout: _Paired) -> Iterator[Parsed | NotAFill]:
    """Each pair row names a buy fill and a sell fill by Tradovate's fill id, the id its API gives them.

    A fill paired in several rows (2 bought, sold 1 and 1) is one fill: its quantities add up.
    Only paired quantities are in these files: a fill still partly open when the file was saved
    is stored with its paired part (docs/file-import.md). The file's fills are held until its end
    (these exports are small).
    """
    rows = CsvRows(text_lines(stream, encoding))
    zone = options.time_zone or DEFAULT_ZONE
    options.note(NO_FEES)
    fills: dict[str, _Fill] = {}
    accounts: dict[str, str] = {}
    for row, values in rows:

        def get(name: str, values=values, row=row) -> str:
            return required(values, rows.column(name), row=row, name=name)

        symbol = _symbol(get(layout.symbol), row, layout.symbol)
        quantity = positive(get(layout.quantity), row=row, column=layout.quantity)
        account = values.get(rows.column(layout.account) or "", "") if layout.account else ""
        for side, id_col, price_col, time_col in layout.legs:
            fill_id = get(id_col)
            price = number(get(price_col), row=row, column=price_col)
            at = _performance_time(get(time_col), zone, row, time_col)
            known = fills.get(fill_id)
            if known is None:
                fills[fill_id] = _Fill(row, side, symbol, quantity, price, at, {"row": values})
                accounts[fill_id] = account
            elif (known.side, known.symbol, known.price, known.at) != (side, symbol, price, at):
                raise FileProblem(f"fill {fill_id} differs from its row {known.row}", row=row, column=id_col)
            else:
                known.quantity += quantity
    for fill_id, fill in sorted(fills.items(), key=lambda item: item[1].row):
        trade = BrokerTrade(
            broker_trade_id=fill_id,
            account_external_id=accounts[fill_id],
            symbol=fill.symbol,
            side=fill.side,
            quantity=fill.quantity,
            price=fill.price,
            executed_at=fill.at,
            asset_class="FUT",
            multiplier=_multiplier(fill.symbol, options),
            raw=fill.raw,
        )
        yield Parsed(fill.row, trade, accounts[fill_id])


def _performance_time(text: str, zone, row: int, column: str) -> datetime:
    # Some files write epoch milliseconds instead (docs/file-import.md).
    if text.isdigit() and len(text) >= 12:
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    return moment(text, TIME_FORMATS, zone, row=row, column=column)
