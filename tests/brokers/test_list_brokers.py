"""manage.py list_brokers: every reachable brokerage once, by route, and the README quotes its total."""

import re
from io import StringIO
from pathlib import Path

from django.core.management import call_command

README = Path(__file__).resolve().parents[2] / "README.md"


def listed() -> str:
    out = StringIO()
    call_command("list_brokers", stdout=out)
    return out.getvalue()


def test_the_readme_quotes_the_count_the_command_prints():
    total = int(re.search(r"^Total: (\d+) named brokerages$", listed(), re.MULTILINE).group(1))
    quoted = re.search(r"reaching \*\*(\d+) named brokerages\*\*", README.read_text()).group(1)
    assert int(quoted) == total


def test_a_venue_reached_by_two_routes_is_counted_once():
    text = listed()
    names = [line.strip() for line in text.splitlines() if line.startswith("  ") and "also reached" not in line]
    for venue in ("Charles Schwab", "Interactive Brokers", "Alpaca", "Tradovate"):
        assert names.count(venue) == 1, venue
    assert (
        "also reached here, counted above: Alpaca, Binance, Charles Schwab, Coinbase, Interactive Brokers, Kraken"
        in text
    )
    assert "Coinbase" not in names, "SnapTrade's Coinbase is ccxt's Coinbase Advanced"
    assert "also reached here, counted above: TickTickTrader, Topstep, TradeDay" in text
    assert names.count("Topstep (TopstepX)") == 1 and "Topstep" not in names, "ProjectX counts Topstep"
    assert "Binance US" in names and "Binance COIN-M" not in names, "a venue's other market is not another venue"
    assert "NinjaTrader brokerage (through Tradovate)" in names and "any MT4/MT5 broker" in text
