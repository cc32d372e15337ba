"""The round-trips, positions and calendar pages, as a trader sees them."""

import re
from datetime import timedelta

import pytest

from brokers.models import SyncLog
from journal.models import RoundTrip, TraderProfile
from tests.factories import SUNDAY_EVENING, account_with, fill


@pytest.mark.django_db
def test_the_round_trips_page_shows_each_round_trip_with_its_net_pnl_and_opens_onto_its_fills(
    trader_client, es_round_trip_and_open_nq
):
    page = trader_client.get("/trades/round-trips/").content.decode()
    assert "2 round trips" in page
    # 10.25 points × 2 × $50 less four fees of $2.25.
    assert "1016.00 USD" in page and "20m 0s" in page
    es = RoundTrip.objects.get(symbol="ESZ6")
    fills = trader_client.get(f"/trades/round-trips/{es.pk}/fills/").content.decode()
    assert "ESZ6-1" in fills and "ESZ6-2" in fills and "NQZ6-3" not in fills


@pytest.mark.django_db
def test_times_on_the_round_trips_page_are_in_the_traders_zone(trader, trader_client, es_round_trip_and_open_nq):
    TraderProfile.objects.create(user=trader, time_zone="America/Chicago")
    page = trader_client.get("/trades/round-trips/").content.decode()
    assert "2026-03-01 17:30:00" in page and "2026-03-01 23:30:00" not in page


@pytest.mark.django_db
def test_the_positions_page_shows_what_is_still_open(trader_client, es_round_trip_and_open_nq):
    page = trader_client.get("/trades/positions/").content.decode()
    assert 'data-symbol="NQZ6"' in page and 'data-symbol="ESZ6"' not in page
    assert ">-1<" in page


@pytest.mark.django_db
def test_the_calendar_puts_a_sunday_evening_futures_trade_on_monday(trader_client, es_round_trip_and_open_nq):
    page = trader_client.get("/trades/calendar/?month=2026-03").content.decode()
    monday = page.split('data-day="2026-03-02"')[1].split("</td>")[0]
    sunday = page.split('data-day="2026-03-01"')[1].split("</td>")[0]
    assert "1016.00 USD" in monday and "1 trade" in monday
    assert "trade" not in sunday
    assert "1 round trip closed" in page


@pytest.mark.django_db
def test_the_calendar_of_one_account_leaves_the_others_out(trader, trader_client, es_round_trip_and_open_nq):
    other = account_with(
        trader,
        [
            fill(1, "BUY", 1, "100", SUNDAY_EVENING + timedelta(days=2), "AAPL", "STK", "1"),
            fill(2, "SELL", 1, "90", SUNDAY_EVENING + timedelta(days=2, hours=1), "AAPL", "STK", "1"),
        ],
        external_id="ACC-2",
    )
    everything = trader_client.get("/trades/calendar/?month=2026-03").content.decode()
    assert "2 round trips closed" in everything
    one = trader_client.get(f"/trades/calendar/?month=2026-03&account={other.pk}").content.decode()
    assert "1 round trip closed" in one and "-14.50 USD" in one and "1016.00" not in one


@pytest.mark.django_db
def test_another_traders_round_trips_stay_hidden(client, other_trader, es_round_trip_and_open_nq):
    client.force_login(other_trader)
    assert "No round trips yet" in client.get("/trades/round-trips/").content.decode()
    es = RoundTrip.objects.get(symbol="ESZ6")
    assert client.get(f"/trades/round-trips/{es.pk}/fills/").status_code == 404
    assert "1016.00" not in client.get("/trades/calendar/?month=2026-03").content.decode()


@pytest.mark.django_db
def test_the_positions_page_values_a_position_at_the_broker_s_price_or_says_unknown(
    trader, trader_client, es_round_trip_and_open_nq
):
    page = trader_client.get("/trades/positions/").content.decode()
    assert ">unknown<" in page
    detail = {
        "ACC-1": {
            "imported": 3,
            "skipped": 0,
            "marks": {"NQZ6": {"price": "21010", "as_of": "2026-03-02T00:00:00+00:00"}},
        }
    }
    at = SUNDAY_EVENING + timedelta(hours=1)
    SyncLog.objects.create(
        connection=es_round_trip_and_open_nq.connection, status="SUCCESS", started_at=at, detail=detail
    )
    page = trader_client.get("/trades/positions/").content.decode()
    # Short 1 NQ from 21000, now 21010: 10 points × $20 against the trader.
    assert "-200.00" in page and "21010" in page and ">unknown<" not in page


@pytest.mark.django_db
def test_the_trades_page_suggests_each_symbol_the_trader_traded_and_no_one_else_s(
    client, trader, other_trader, es_round_trip_and_open_nq
):
    account_with(other_trader, [fill(9, "BUY", 1, "180.5", SUNDAY_EVENING, symbol="AAPL", asset_class="STK")])
    client.force_login(trader)
    page = client.get("/trades/").content.decode()
    suggested = re.findall(
        r'<option value="([^"]+)">', page.split('<datalist id="symbols">', 1)[1].split("</datalist>")[0]
    )
    assert suggested == ["ESZ6", "NQZ6"]
