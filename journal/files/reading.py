"""What every file format shares: text decoded as it streams, CSV rows, numbers and times, and the row problem."""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import IO

from brokers.providers.types import BrokerTrade
from journal.models import EARLIEST_TRADE_DATE, LATEST_TRADE_DATE

# A longer line is no export row: refuse it rather than hold it in memory.
MAX_LINE_CHARS = 1_000_000
# What detection and the encoding guess read of a file's start.
HEAD_BYTES = 64 * 1024
# The broker_trade_id of a fill the file names by content only (docs/file-import.md, "Which key").
CONTENT_KEY_PREFIX = "file:"
# The years a trade's time may fall in (journal.models.EARLIEST_TRADE_DATE, LATEST_TRADE_DATE).
EARLIEST_YEAR, LATEST_YEAR = EARLIEST_TRADE_DATE.year, LATEST_TRADE_DATE.year
# The journal keeps 20 integer digits (journal.models.EXACT).
MAX_NUMBER = Decimal(10) ** 20


class FileProblem(Exception):
    """A file we will not import: what is wrong, on which row (1 = the first line) and in which column."""

    def __init__(self, message: str, *, row: int | None = None, column: str = ""):
        self.message, self.row, self.column = message, row, column
        super().__init__(self.described())

    def described(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        # Only the first letter: a column keeps its own spelling (Volume, B/S).
        return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class NotAFill:
    """A row the file holds that is no execution (a cancelled order, a deposit, a summary line)."""

    row: int
    reason: str


@dataclass(frozen=True)
class Parsed:
    """One execution read from a row; account is the file's own name for it ('' when the file names none)."""

    row: int
    trade: BrokerTrade
    account: str = ""


@dataclass
class Options:
    """What the trader chose for the import; the formats read what they need."""

    # Times the file writes without an offset are in this zone (None: the format's default).
    time_zone: tzinfo | None = None
    # The trader's own zone (their profile): the default of exports written in the PC's zone.
    trader_zone: tzinfo = UTC
    # The account's currency, for formats whose rows name none.
    account_currency: str = "USD"
    # Notes the format leaves for the result (a unit it could not know, a zone it assumed).
    notes: list[str] = field(default_factory=list)
    # Point values the account's synced fills already know, by symbol (multiplier), for formats without them.
    known_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    # MetaTrader contract sizes the account's synced deals already know, by symbol.
    known_contract_sizes: Mapping[str, Decimal] = field(default_factory=dict)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def encoding_of(head: bytes) -> str:
    """The file's encoding from its byte-order mark, else UTF-8 when its start reads as UTF-8, else Windows-1252.

    MetaTrader writes its reports in UTF-16 with a mark; spreadsheet programs add a UTF-8 mark.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A character cut at the end of the sample is still UTF-8.
        if exc.reason != "unexpected end of data":
            return "cp1252"
    return "utf-8"


def text_lines(stream: IO[bytes], encoding: str) -> Iterator[str]:
    """The file's lines, decoded one by one as they are read; a line too long or bytes not in the encoding
    is a FileProblem naming its line. (UTF-16 is decoded by a text wrapper: its newline is two bytes.)"""
    if encoding == "utf-16":
        yield from _wide_lines(stream)
        return
    number = 0
    if encoding == "utf-8-sig":
        stream.read(len(codecs.BOM_UTF8))
    while True:
        line = stream.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise FileProblem(f"the line is longer than {MAX_LINE_CHARS:,} characters; this is no export", row=number)
        try:
            yield line.decode(encoding)
        except UnicodeDecodeError:
            raise FileProblem(
                f"the text is not {encoding}; save the export again as UTF-8 (comma separated)", row=number
            ) from None


def _wide_lines(stream: IO[bytes]) -> Iterator[str]:
    text = io.TextIOWrapper(stream, encoding="utf-16", newline="")
    number = 0
    try:
        while True:
            line = text.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_CHARS:
                raise FileProblem(
                    f"the line is longer than {MAX_LINE_CHARS:,} characters; this is no export", row=number
                )
            yield line
    except UnicodeDecodeError:
        raise FileProblem("the text is not UTF-16 throughout", row=number + 1) from None
    finally:
        # The caller's stream stays open for it (a closed one is left as it is).
        with contextlib.suppress(ValueError):
            text.detach()


def delimiter_of(header_line: str) -> str:
    """Comma, semicolon or tab: whichever the header row holds most of (European exports use ';')."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


class CsvRows:
    """A CSV file's rows as {header: value} with their row number (the header is row 1), read one by one."""

    def __init__(self, lines: Iterator[str]):
        first = next(lines, "")
        if not first.strip():
            raise FileProblem("the file is empty")
        self.delimiter = delimiter_of(first)
        self._reader = csv.reader(_chain(first, lines), delimiter=self.delimiter)
        self.header = [h.strip().strip('"').lstrip("\ufeff").strip() for h in next(self._reader)]
        self.decimal_comma = self.delimiter == ";"

    def column(self, *names: str) -> str | None:
        """The first of `names` the header holds (exports name one column several ways), or None."""
        lowered = {h.lower(): h for h in self.header}
        return next((lowered[n.lower()] for n in names if n.lower() in lowered), None)

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        try:
            for values in self._reader:
                number = self._reader.line_num
                if not any(v.strip() for v in values):
                    continue
                yield number, dict(zip(self.header, (v.strip() for v in values), strict=False))
        except csv.Error as exc:
            raise FileProblem(f"the CSV cannot be read ({exc})", row=self._reader.line_num) from None


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


_NUMBER_NOISE = re.compile(r"[\s$€£¥\u00a0\u202f]|USD|EUR")


def number(text: str, *, row: int, column: str, decimal_comma: bool = False) -> Decimal:
    """A number as exports write it: currency signs, spaced thousands and signs, `(160.00)`, decimal commas."""
    cleaned = _NUMBER_NOISE.sub("", text or "")
    negative = cleaned.startswith("(") and cleaned.endswith(")")
    cleaned = cleaned.strip("()")
    if decimal_comma or ("," in cleaned and "." not in cleaned and re.fullmatch(r"-?\d+,\d{1,2}", cleaned)):
        cleaned = cleaned.replace(".", "").replace(",", ".")
    else:
        cleaned = cleaned.replace(",", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise FileProblem(f"{text!r} is not a number", row=row, column=column) from None
    if not value.is_finite():
        raise FileProblem(f"{text!r} is not a number", row=row, column=column)
    if abs(value) >= MAX_NUMBER:
        raise FileProblem(f"{text!r} is larger than any amount the journal stores", row=row, column=column)
    return -value if negative else value


def positive(text: str, *, row: int, column: str, decimal_comma: bool = False) -> Decimal:
    value = number(text, row=row, column=column, decimal_comma=decimal_comma)
    if value <= 0:
        raise FileProblem(f"{text!r} must be more than zero", row=row, column=column)
    return value


def required(values: Mapping[str, str], column: str | None, *, row: int, name: str) -> str:
    """The row's value in `column`, or a FileProblem naming the column (name: how the docs call it)."""
    value = values.get(column, "") if column else ""
    if not value:
        raise FileProblem("the value is missing", row=row, column=column or name)
    return value


def moment(text: str, formats: tuple[str, ...], zone: tzinfo, *, row: int, column: str) -> datetime:
    """A time in one of `formats`: with its own offset (%z) it keeps it, else it is read in `zone`; returns UTC."""
    cleaned = " ".join(text.split())
    for fmt in formats:
        try:
            parsed = datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
        return in_utc(parsed, zone, text, row=row, column=column)
    raise FileProblem(f"{text!r} is not a time we can read (expected e.g. {formats[0]})", row=row, column=column)


def in_utc(parsed: datetime, zone: tzinfo, text: str, *, row: int, column: str) -> datetime:
    """A parsed time (read in `zone` when it has no offset) in UTC, within the years a trade may have."""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        moment_ = parsed.astimezone(UTC)
    except OverflowError:
        moment_ = None
    if moment_ is None or not EARLIEST_YEAR <= moment_.year <= LATEST_YEAR:
        raise FileProblem(f"{text!r} is outside the years a trade may have", row=row, column=column)
    return moment_


class ContentKeys:
    """The key of a fill a file names by content only: symbol, side, quantity, price, time to the second.

    The account is the import's (the unique key is per account), so one fill in two files of
    different formats gets one key. The order id is left out: whether a file's order id is the
    API's is UNCONFIRMED for most brokers. Identical rows of one file (an order filled twice at
    the same price in the same second) are told apart by their occurrence, so importing the same
    file again matches every row.
    """

    def __init__(self):
        # By digest, not by content: about 100 bytes a row for files read by content (docs/file-import.md).
        self._seen: Counter[bytes] = Counter()

    def __call__(self, symbol: str, side: str, quantity: Decimal, price: Decimal, at: datetime) -> str:
        digest = hashlib.sha256(content_of(symbol, side, quantity, price, at).encode()).digest()[:20]
        self._seen[digest] += 1
        return f"{CONTENT_KEY_PREFIX}{digest.hex()}:{self._seen[digest]}"


def content_of(symbol: str, side: str, quantity: Decimal, price: Decimal, at: datetime) -> str:
    moment_ = at.astimezone(UTC).replace(microsecond=0).isoformat()
    return "|".join((symbol.upper(), side, _plain(quantity), _plain(price), moment_))


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
