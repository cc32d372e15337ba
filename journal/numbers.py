"""How an exact amount is written for a trader: every digit it has, none it does not."""

from __future__ import annotations

from decimal import Decimal


def plain(value: Decimal | None) -> str:
    """0.000732004000000000 as "0.000732004", 100.000 as "100" (never "1E+2"); None as ""."""
    if value is None:
        return ""
    return format(value.normalize(), "f")
