"""The card warns when a short-history broker's trading day closed and no sync has read it."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from brokers.models import BrokerConnection, SyncLog
from brokers.selectors import unsynced_session
from tests import factories
from tests.e2e.broker_conditions import tradovate_connection

pytestmark = pytest.mark.django_db

# CME's session of Tuesday 10 November 2026 closes at 17:00 Chicago, 23:00 UTC; Friday's on the 13th.
TUESDAY_CLOSE = datetime(2026, 11, 10, 23, 0, tzinfo=UTC)
FRIDAY_CLOSE = datetime(2026, 11, 13, 23, 0, tzinfo=UTC)


@pytest.fixture
def tradovate(trader):
    connection = tradovate_connection(trader, broker=None)
    BrokerConnection.objects.filter(pk=connection.pk).update(created_at=datetime(2026, 11, 1, tzinfo=UTC))
    connection.refresh_from_db()
    return connection


def succeeded(connection, at):
    SyncLog.objects.create(connection=connection, status=SyncLog.Status.SUCCESS, started_at=at, finished_at=at)


def test_the_same_evening_the_card_asks_for_a_sync_while_the_day_can_still_be_read(tradovate):
    tonight = unsynced_session(tradovate, TUESDAY_CLOSE + timedelta(minutes=30))
    assert (tonight.day.isoformat(), tonight.still_readable) == ("2026-11-10", True)
    succeeded(tradovate, TUESDAY_CLOSE + timedelta(minutes=10))
    assert unsynced_session(tradovate, TUESDAY_CLOSE + timedelta(minutes=30)) is None


def test_a_day_left_unread_past_the_brokers_reach_is_named_as_possibly_missing_fills(tradovate):
    sunday = FRIDAY_CLOSE + timedelta(days=1, hours=13)
    missed = unsynced_session(tradovate, sunday)
    assert (missed.day.isoformat(), missed.still_readable) == ("2026-11-13", False)
    # A sync on Saturday, after Friday's reach had ended, does not read Friday any more.
    succeeded(tradovate, FRIDAY_CLOSE + timedelta(days=1, hours=1))
    assert unsynced_session(tradovate, sunday) is not None


def test_brokers_with_a_long_history_are_not_judged(trader):
    demo = factories.connection(trader, sync_enabled=False)
    assert unsynced_session(demo, FRIDAY_CLOSE + timedelta(days=2)) is None


def test_the_card_says_which_day_may_miss_fills(trader_client, tradovate):
    BrokerConnection.objects.filter(pk=tradovate.pk).update(created_at=timezone.now() - timedelta(days=10))
    page = trader_client.get("/brokers/").content.decode()
    assert 'class="state-line session-warning"' in page and "may be missing" in page
