"""The formats a trader may import, and which one a file is, read off its start."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from journal.files import ibkr, metatrader, ninjatrader, projectx, template, tradovate
from journal.files.reading import HEAD_BYTES, FileProblem, NotAFill, Options, Parsed, delimiter_of, encoding_of

Reader = Callable[[IO[bytes], str, Options], Iterator[Parsed | NotAFill]]


@dataclass(frozen=True)
class Format:
    key: str
    label: str
    read: Reader
    # A CSV format recognises its header; a markup format the start of its text.
    header_test: Callable[[list[str]], bool] | None = None
    text_test: Callable[[str], bool] | None = None


FORMATS = (
    Format(template.KEY, template.LABEL, template.read, header_test=template.recognises),
    Format(
        tradovate.ORDERS,
        tradovate.LABELS[tradovate.ORDERS],
        tradovate.read_orders,
        header_test=tradovate.recognises_orders,
    ),
    Format(
        tradovate.PERFORMANCE,
        tradovate.LABELS[tradovate.PERFORMANCE],
        tradovate.read_performance,
        header_test=tradovate.recognises_performance,
    ),
    Format(
        tradovate.POSITION_HISTORY,
        tradovate.LABELS[tradovate.POSITION_HISTORY],
        tradovate.read_position_history,
        header_test=tradovate.recognises_position_history,
    ),
    Format(ninjatrader.KEY, ninjatrader.LABEL, ninjatrader.read, header_test=ninjatrader.recognises),
    Format(projectx.KEY, projectx.LABEL, projectx.read, header_test=projectx.recognises),
    Format(ibkr.KEY, ibkr.LABEL, ibkr.read, text_test=ibkr.recognises_text),
    Format(metatrader.KEY, metatrader.LABEL, metatrader.read, text_test=metatrader.recognises_text),
)
BY_KEY = {f.key: f for f in FORMATS}
CHOICES = tuple((f.key, f.label) for f in FORMATS)


def detect(head: bytes) -> tuple[Format, str]:
    """The file's format and encoding from its first bytes; FileProblem when none or several fit."""
    if not head.strip():
        raise FileProblem("the file is empty")
    if head.startswith(b"PK\x03\x04"):
        raise FileProblem(
            "this is a spreadsheet or an archive (Excel, Open XML, zip): save the export as CSV, "
            "or the MetaTrader report as HTML, and import that"
        )
    encoding = encoding_of(head)
    text = head.decode(encoding, errors="ignore")
    fitting = [f for f in FORMATS if f.text_test is not None and f.text_test(text)]
    if not fitting and not text.lstrip().startswith("<"):
        first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
        header = next(csv.reader([first], delimiter=delimiter_of(first)), [])
        header = [h.strip() for h in header]
        fitting = [f for f in FORMATS if f.header_test is not None and f.header_test(header)]
    if not fitting:
        raise FileProblem(
            "we do not recognise this file's format. Choose the format, or write your fills into the template CSV.",
            row=1,
        )
    if len(fitting) > 1:
        names = " or ".join(f.label for f in fitting)
        raise FileProblem(f"this file could be {names}: choose the format.", row=1)
    return fitting[0], encoding


def open_as(stream: IO[bytes], chosen: str = "") -> tuple[Format, str]:
    """The format (the trader's choice, else detected) and encoding of a seekable binary stream, rewound."""
    head = stream.read(HEAD_BYTES)
    stream.seek(0)
    if chosen:
        if chosen not in BY_KEY:
            raise FileProblem(f"{chosen!r} is no format we read; choose one of {', '.join(BY_KEY)}")
        if not head.strip():
            raise FileProblem("the file is empty")
        return BY_KEY[chosen], encoding_of(head)
    return detect(head)
