"""Alpaca's open positions (GET /v2/positions), read for reconciliation with the journal."""

from decimal import Decimal

import pytest
import responses

from brokers.providers.errors import BrokerAPIError
from brokers.providers.registry import get_broker_provider
from tests.providers.test_alpaca import PAPER, make_account, make_auth


@pytest.fixture
def rsps():
    with responses.RequestsMock() as mock:
        yield mock


def test_long_and_short_positions_come_back_signed_with_their_average_price(rsps):
    rsps.get(
        f"{PAPER}/v2/positions",
        json=[
            {"symbol": "AAPL", "qty": "10", "side": "long", "avg_entry_price": "231.45"},
            {"symbol": "TSLA", "qty": "-5", "side": "short", "avg_entry_price": "250.10"},
        ],
    )
    positions = get_broker_provider("alpaca", "paper").get_positions(make_auth(), make_account())
    assert [(p.symbol, p.quantity, p.average_price) for p in positions] == [
        ("AAPL", Decimal("10"), Decimal("231.45")),
        ("TSLA", Decimal("-5"), Decimal("250.10")),
    ]


def test_a_position_we_cannot_read_is_an_error_a_retry_may_cure(rsps):
    rsps.get(f"{PAPER}/v2/positions", json=[{"symbol": "AAPL", "qty": "ten"}])
    with pytest.raises(BrokerAPIError) as info:
        get_broker_provider("alpaca", "paper").get_positions(make_auth(), make_account())
    assert info.value.transient and "position" in str(info.value)
