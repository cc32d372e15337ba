"""MetaTrader 5's account history report saved as HTML: the Deals section's buy and sell rows are the fills."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from html.parser import HTMLParser
from typing import IO

from brokers.providers.types import BUY, SELL, BrokerTrade
from journal.files.reading import (
    FileProblem,
    NotAFill,
    Options,
    Parsed,
    moment,
    number,
    positive,
    text_lines,
)

KEY = "metatrader5"
LABEL = "MetaTrader 5 history report (HTML)"
TIME_FORMATS = ("%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M")
SIDES = {"buy": BUY, "sell": SELL}
# Localised terminals translate the headers: each column's names (English first).
COLUMNS = {
    "time": ("Time", "Ora", "Zeit", "Hora", "Heure", "Время"),
    "deal": ("Deal", "Affare", "Operazione", "Geschäft", "Transacción", "Transaction", "Сделка"),
    "symbol": ("Symbol", "Simbolo", "Símbolo", "Symbole", "Символ"),
    "type": ("Type", "Tipo", "Typ", "Тип"),
    "volume": ("Volume", "Volumen", "Объем"),
    "price": ("Price", "Prezzo", "Preis", "Precio", "Prix", "Цена"),
    "order": ("Order", "Ordine", "Auftrag", "Orden", "Ordre", "Ордер"),
    "commission": ("Commission", "Commissione", "Kommission", "Comisión", "Комиссия"),
    "fee": ("Fee", "Tassa", "Gebühr", "Cargo", "Frais", "Сбор"),
    "swap": ("Swap", "Своп"),
}
DEALS_TITLES = {"deals", "affari", "operazioni", "geschäfte", "transacciones", "transactions", "сделки"}
SECTION_TITLES = {"positions", "orders", "open positions", "working orders", "summary", "results", *DEALS_TITLES}


class _Rows(HTMLParser):
    """Table rows (their cells' text) as the HTML arrives, so a large report streams."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        # (the file's line where the row starts, its cells)
        self.rows: list[tuple[int, list[str]]] = []
        self._row: list[str] | None = None
        self._line = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
            self._line = self.getpos()[0]
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            # A hidden cell (MetaTrader pads some rows with them) is no column of the header.
            if ("class", "hidden") in attrs:
                self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append((self._line, self._row))
            self._row = None


def recognises_text(head: str) -> bool:
    lowered = head.lower()
    return "<html" in lowered and ("deals" in lowered or "trade history report" in lowered or "metatrader" in lowered)


def _table_rows(stream: IO[bytes], encoding: str) -> Iterator[tuple[int, list[str]]]:
    parser = _Rows()
    for line in text_lines(stream, encoding):
        parser.feed(line)
        yield from parser.rows
        parser.rows.clear()
    parser.close()
    yield from parser.rows


def read(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    zone = options.time_zone
    if zone is None:
        zone = UTC
        options.note(
            "MetaTrader writes times in the broker server's zone, which the report does not name: they were read "
            "as UTC. Import again with the server's zone if they are off (the deal tickets keep it one fill each)."
        )
    account = ""
    columns: dict[str, int] | None = None
    in_deals = found_deals = False
    for number_, cells in _table_rows(stream, encoding):
        texts = [c for c in cells if c]
        if not texts:
            # An empty row ends the Deals table; the summary follows it.
            in_deals = in_deals and columns is None
            continue
        if texts[0].rstrip(":").lower() in ("account", "conto", "konto", "cuenta", "compte", "счет") and len(texts) > 1:
            account = texts[1].split()[0]
            continue
        if len(texts) == 1 and texts[0].lower() in SECTION_TITLES:
            in_deals = texts[0].lower() in DEALS_TITLES
            found_deals = found_deals or in_deals
            columns = None
            continue
        if not in_deals:
            continue
        if columns is None:
            columns = _header(cells, number_)
            continue
        yield _deal(cells, columns, number_, account, zone, options)
    if not found_deals:
        raise FileProblem("the report has no Deals section: save the History tab's report as HTML (Deals included)")


def _header(cells: list[str], row: int) -> dict[str, int]:
    found = {}
    for name, synonyms in COLUMNS.items():
        lowered = {s.lower() for s in synonyms}
        position = next((i for i, cell in enumerate(cells) if cell.lower() in lowered), None)
        if position is not None:
            found[name] = position
    missing = [n for n in ("time", "deal", "symbol", "type", "volume", "price") if n not in found]
    if missing:
        raise FileProblem(f"the Deals header has no {', '.join(missing)} column we know", row=row)
    return found


def _deal(cells: list[str], columns: dict[str, int], row: int, account: str, zone, options: Options):
    def cell(name: str) -> str:
        position = columns.get(name)
        return cells[position] if position is not None and position < len(cells) else ""

    kind = cell("type").lower()
    side = SIDES.get(kind)
    if side is None:
        return NotAFill(row, f"deal of type {kind or 'none'}")
    deal = cell("deal")
    if not deal:
        raise FileProblem("the deal has no ticket", row=row, column="Deal")
    symbol = cell("symbol")
    if not symbol or len(symbol) > 64:
        raise FileProblem(f"{symbol!r} is no symbol", row=row, column="Symbol")
    lots = positive(cell("volume").split("/")[0], row=row, column="Volume", decimal_comma=_commas(cell("volume")))
    contract = options.known_contract_sizes.get(symbol)
    if contract is None:
        # Lots beside the sync's units would break the symbol's positions: refuse rather than guess.
        raise FileProblem(
            f"deal {deal}: the contract size of {symbol} is unknown, so its lots cannot become units as the sync "
            f"stores them: give it with the import ({symbol}=100000), or sync the MetaTrader connection first",
            row=row,
            column="Volume",
        )
    charges = sum(
        (
            number(cell(n), row=row, column=n.capitalize(), decimal_comma=_commas(cell(n)))
            for n in ("commission", "fee", "swap")
            if cell(n)
        ),
        start=Decimal(0),
    )
    trade = BrokerTrade(
        # The deal ticket: the id MetaApi gives the same deal, so a file and a sync store it once.
        broker_trade_id=deal,
        account_external_id=account,
        symbol=symbol,
        side=side,
        quantity=lots * contract,
        price=number(cell("price"), row=row, column="Price", decimal_comma=_commas(cell("price"))),
        executed_at=moment(cell("time"), TIME_FORMATS, zone, row=row, column="Time"),
        # Charges are negative in MetaTrader; a net credit is no cost (it stays in raw).
        fees=max(-charges, Decimal(0)),
        currency=options.account_currency,
        asset_class="CFD",
        order_id=cell("order")[:128],
        raw={"cells": cells, "lots": str(lots), "contractSize": str(contract)},
    )
    return Parsed(row, trade, account)


def _commas(text: str) -> bool:
    # MetaTrader separates thousands with spaces: a comma is a localised terminal's decimal mark.
    return "," in text and "." not in text


def contract_sizes(text: str) -> dict[str, Decimal]:
    """`EURUSD=100000, XAUUSD=100` as the trader writes it; ValueError names what it cannot read."""
    sizes = {}
    for item in text.replace(";", ",").replace("\n", ",").split(","):
        if not item.strip():
            continue
        symbol, _, size = item.partition("=")
        try:
            value = Decimal(size.strip())
        except ArithmeticError:
            value = None
        if not symbol.strip() or value is None or not value.is_finite() or value <= 0:
            raise ValueError(f"{item.strip()!r} is not SYMBOL=size (e.g. EURUSD=100000)")
        sizes[symbol.strip()] = value
    return sizes
