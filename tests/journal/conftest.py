"""Fixtures the journal's page and API tests share."""

from datetime import timedelta

import pytest

from tests.factories import SUNDAY_EVENING, account_with, fill


@pytest.fixture
def es_round_trip_and_open_nq(trader):
    """An ES round trip closed 20 minutes after it opened, and an NQ short still open."""
    return account_with(
        trader,
        [
            fill(1, "BUY", 2, "5900.00", SUNDAY_EVENING),
            fill(2, "SELL", 2, "5910.25", SUNDAY_EVENING + timedelta(minutes=20)),
            fill(3, "SELL", 1, "21000", SUNDAY_EVENING, symbol="NQZ6", multiplier="20"),
        ],
    )
