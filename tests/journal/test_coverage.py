"""Trading days that no successful sync read are marked on the calendar; weekends and covered days are not."""

from datetime import UTC, datetime, timedelta

import pytest

from brokers.models import BrokerConnection, SyncLog
from brokers.providers.registry import get_provider_class
from tests.factories import account_with, fill

# November 2026: Monday the 9th to Friday the 13th; NYSE closes at 21:00 UTC (16:00 New York).
MONDAY_CLOSE = datetime(2026, 11, 9, 21, 0, tzinfo=UTC)


def run(connection, status, started_at):
    SyncLog.objects.create(connection=connection, status=status, started_at=started_at, finished_at=started_at)


@pytest.fixture
def failed_all_tuesday(trader):
    """A demo connection of stocks (its broker returns two days of fills) that failed all Tuesday."""
    account = account_with(
        trader,
        [
            fill(1, "BUY", 10, "230", MONDAY_CLOSE - timedelta(hours=2), "AAPL", "STK", "1"),
            fill(2, "SELL", 10, "231", MONDAY_CLOSE - timedelta(hours=1), "AAPL", "STK", "1"),
        ],
    )
    connection = account.connection
    BrokerConnection.objects.filter(pk=connection.pk).update(created_at=datetime(2026, 11, 1, tzinfo=UTC))
    run(connection, SyncLog.Status.SUCCESS, MONDAY_CLOSE + timedelta(minutes=30))
    for hour in range(0, 24, 3):
        run(connection, SyncLog.Status.FAILED, datetime(2026, 11, 10, hour, tzinfo=UTC))
    # Thursday evening: too late for Tuesday (closed more than two days before), in time for Wednesday.
    run(connection, SyncLog.Status.SUCCESS, MONDAY_CLOSE + timedelta(days=3, hours=1))
    return connection


def cell(page, day):
    return page.split(f'data-day="{day}"')[1].split("</td>")[0]


@pytest.mark.django_db
def test_a_connection_that_failed_all_tuesday_shows_tuesday_not_synced_and_the_weekend_unmarked(
    trader_client, failed_all_tuesday
):
    page = trader_client.get("/trades/calendar/?month=2026-11").content.decode()
    assert "not synced after the close" in cell(page, "2026-11-10")
    for covered in ("2026-11-09", "2026-11-11", "2026-11-07", "2026-11-08"):
        assert "not synced" not in cell(page, covered), covered
    assert "fills of" in page and "may be missing" in page


@pytest.mark.django_db
def test_a_day_not_closed_yet_or_before_the_connection_could_read_it_is_not_judged(trader_client, failed_all_tuesday):
    october = trader_client.get("/trades/calendar/?month=2026-10").content.decode()
    # Created on 1 November with two days of reach: 30 October is judged (and was never read), the 29th is not.
    assert "not synced after the close" in cell(october, "2026-10-30")
    assert "not synced after the close" not in cell(october, "2026-10-29")
    next_year = trader_client.get("/trades/calendar/?month=2027-06").content.decode()
    assert "not synced after the close" not in next_year


def test_tradovate_counts_only_the_current_day_as_readable():
    assert get_provider_class("tradovate").reach() == timedelta(days=1)
    assert get_provider_class("alpaca").reach() == timedelta(days=90)
