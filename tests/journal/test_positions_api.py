"""The API's round trips, positions and calendar: the same numbers as the pages, only the trader's own."""

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from brokers.models import SyncLog
from tests.factories import SUNDAY_EVENING


@pytest.mark.django_db
def test_round_trips_come_with_their_pnl_as_exact_decimals_and_their_fills(trader_client, es_round_trip_and_open_nq):
    body = trader_client.get("/api/round-trips/", {"open": "false"}).json()
    (es,) = body["results"]
    assert (es["symbol"], es["side"], es["trading_day"]) == ("ESZ6", "LONG", "2026-03-02")
    assert (es["net_pnl"], es["gross_pnl"], es["entry_average"]) == ("1016", "1025", "5900")
    assert len(es["fills"]) == 2 and es["fill_count"] == 2


@pytest.mark.django_db
def test_positions_are_the_open_round_trips(trader_client, es_round_trip_and_open_nq):
    (nq,) = trader_client.get("/api/positions/").json()
    assert (nq["symbol"], nq["side"], nq["open_quantity"], nq["closed_at"]) == ("NQZ6", "SHORT", "-1", None)


@pytest.mark.django_db
def test_the_calendar_gives_each_trading_day_its_count_and_net(trader_client, es_round_trip_and_open_nq):
    days = trader_client.get("/api/calendar/", {"month": "2026-03"}).json()
    assert [(d["trading_day"], d["round_trips"]) for d in days] == [("2026-03-02", 1)]
    assert days[0]["net_pnl"] == {"USD": "1016"}


@pytest.mark.django_db
@pytest.mark.parametrize("month", ["2026-13", "March", "0000-01", ""])
def test_a_month_the_calendar_cannot_show_is_a_400_naming_it(trader_client, month):
    answer = trader_client.get("/api/calendar/", {"month": month})
    assert answer.status_code == 400 and "month" in answer.json()


@pytest.mark.django_db
def test_another_traders_api_shows_none_of_it(other_trader, es_round_trip_and_open_nq):
    client = APIClient()
    client.force_authenticate(other_trader)
    assert client.get("/api/round-trips/").json()["results"] == []
    assert client.get("/api/positions/").json() == []
    assert client.get("/api/calendar/", {"month": "2026-03"}).json() == []


@pytest.mark.django_db
def test_a_position_is_valued_at_the_broker_s_last_price_and_unknown_without_one(
    trader_client, es_round_trip_and_open_nq
):
    connection = es_round_trip_and_open_nq.connection
    (nq,) = trader_client.get("/api/positions/").json()
    assert (nq["mark_price"], nq["mark_as_of"], nq["unrealised_pnl"]) == (None, None, None)
    at = SUNDAY_EVENING + timedelta(hours=1)
    marks = {"NQZ6": {"price": "20990.5", "as_of": at.isoformat()}}
    detail = {"ACC-1": {"imported": 3, "skipped": 0, "differences": [], "marks": marks}}
    SyncLog.objects.create(connection=connection, status="SUCCESS", started_at=at, detail=detail)
    # A later run that read no positions (SnapTrade's between holdings reads) keeps the price found before.
    later = at + timedelta(hours=1)
    detail = {"ACC-1": {"imported": 0, "skipped": 0}}
    SyncLog.objects.create(connection=connection, status="SUCCESS", started_at=later, detail=detail)
    (nq,) = trader_client.get("/api/positions/").json()
    # Short 1 NQ from 21000 at 20990.5: 9.5 points × $20.
    assert (nq["mark_price"], nq["unrealised_pnl"]) == ("20990.5", "190")
    assert nq["mark_as_of"] == "2026-03-02T00:30:00Z"
