"""Futures contracts as exports name them: the root's point value, and NinjaTrader's `MES JUN26` as `MESM6`."""

from __future__ import annotations

import re
from decimal import Decimal

# Currency per point of a contract, by root (CME's contract specifications). A root missing
# here takes the point value the account's synced fills already know, else 1 with a note.
POINT_VALUES = {
    "ES": "50", "MES": "5", "NQ": "20", "MNQ": "2", "YM": "5", "MYM": "0.5", "RTY": "50", "M2K": "5",
    "EMD": "100", "NKD": "5", "CL": "1000", "MCL": "100", "QM": "500", "NG": "10000", "QG": "2500",
    "RB": "42000", "HO": "42000", "GC": "100", "MGC": "10", "SI": "5000", "SIL": "1000", "HG": "25000",
    "MHG": "2500", "PL": "50", "PA": "100", "ZB": "1000", "UB": "1000", "ZN": "1000", "TN": "1000",
    "ZF": "1000", "ZT": "2000", "6E": "125000", "M6E": "12500", "6J": "12500000", "6B": "62500",
    "M6B": "6250", "6A": "100000", "M6A": "10000", "6C": "100000", "6S": "125000", "ZC": "50",
    "ZS": "50", "ZW": "50", "ZL": "600", "ZM": "100", "LE": "400", "HE": "400", "GF": "500",
    "BTC": "5", "MBT": "0.1", "ETH": "50", "MET": "0.1",
}  # fmt: skip
MONTH_CODES = {
    "JAN": "F", "FEB": "G", "MAR": "H", "APR": "J", "MAY": "K", "JUN": "M",
    "JUL": "N", "AUG": "Q", "SEP": "U", "OCT": "V", "NOV": "X", "DEC": "Z",
}  # fmt: skip
# A contract code: root, month letter, year in one or two digits (MESZ5, ESZ25).
CONTRACT = re.compile(r"(?P<root>[A-Z0-9]{1,4}?)(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,2})")
NINJA_INSTRUMENT = re.compile(r"(?P<root>[A-Z0-9]+)\s+(?P<month>[A-Z]{3})(?P<year>\d{2})")


def root_of(symbol: str) -> str:
    match = CONTRACT.fullmatch(symbol.upper())
    return match["root"] if match else symbol.upper()


def point_value(symbol: str, known: dict | None = None) -> Decimal | None:
    """The contract's point value: from the root table, else from the account's synced fills of it, else None."""
    if known and symbol in known:
        return known[symbol]
    value = POINT_VALUES.get(root_of(symbol))
    return Decimal(value) if value is not None else None


def from_ninjatrader(instrument: str) -> str | None:
    """`MES JUN26` → `MESM6`, as Tradovate (the broker behind NinjaTrader's accounts) names it; None if no match."""
    match = NINJA_INSTRUMENT.fullmatch(" ".join(instrument.upper().split()))
    if not match or match["month"] not in MONTH_CODES:
        return None
    return f"{match['root']}{MONTH_CODES[match['month']]}{match['year'][-1]}"
