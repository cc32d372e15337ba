"""After each sync the journal's positions are compared with the broker's (the demo broker, the loopback Tradovate)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from brokers.models import SyncLog
from brokers.providers import ratelimit
from brokers.providers.demo import DemoProvider
from brokers.providers.types import BrokerPosition
from journal.models import Trade
from journal.reconciling import broker_marks, position_differences
from sync.runs import run_inline
from tests import factories
from tests.e2e.broker_conditions import tradovate_connection
from tests.factories import SUNDAY_EVENING, account_with, fill
from tests.fakes.ibkr_flex import FakeFlex
from tests.fakes.tradovate import FakeTradovate
from tests.sync.file_imports import flex_connection


@pytest.fixture
def demo(trader):
    return factories.connection(trader, sync_enabled=False)


@pytest.fixture
def tradovate(settings):
    with FakeTradovate({"alice": 2}, fills_per_account=4) as fake:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "tradovate": fake.url}
        yield fake


@pytest.mark.django_db
def test_a_sync_finds_the_journal_and_the_demo_broker_in_agreement_and_says_so(trader_client, demo):
    log = run_inline(demo.pk)
    assert log.status == SyncLog.Status.SUCCESS
    assert all(account["differences"] == [] for account in log.detail.values())
    page = trader_client.get("/brokers/").content.decode()
    assert "the journal's open positions match Demo broker (simulated)'s" in page


@pytest.mark.django_db
def test_a_fill_the_broker_did_not_send_shows_on_the_card_and_clears_once_it_arrives(trader_client, demo, monkeypatch):
    lost = factories.recent_demo_fill()
    reads_fills = DemoProvider.get_trades

    def without_the_lost_fill(self, auth, account, since, until):
        return (t for t in reads_fills(self, auth, account, since, until) if t.broker_trade_id != lost.broker_trade_id)

    monkeypatch.setattr(DemoProvider, "get_trades", without_the_lost_fill)
    run_inline(demo.pk)
    page = trader_client.get("/brokers/").content.decode()
    assert f" {lost.symbol} · Demo broker (simulated): " in page
    assert "a fill may be missing or doubled" in page and "What to do:" in page
    assert "Positions differ from the broker" in trader_client.get("/trades/calendar/").content.decode()
    # A later read of the history brings it (the cursor moved back, as a backfill does): the difference is gone.
    monkeypatch.setattr(DemoProvider, "get_trades", reads_fills)
    demo.accounts.update(sync_cursor=None)
    run_inline(demo.pk)
    assert Trade.objects.filter(broker_trade_id=lost.broker_trade_id).count() == 1
    page = trader_client.get("/brokers/").content.decode()
    assert "a fill may be missing or doubled" not in page
    assert "open positions match Demo broker" in page
    assert "Positions differ from the broker" not in trader_client.get("/trades/calendar/").content.decode()


@pytest.mark.django_db
def test_a_deleted_fill_counts_as_missing_and_no_fill_is_invented(demo):
    run_inline(demo.pk)
    fill = Trade.objects.get(broker_trade_id=factories.recent_demo_fill().broker_trade_id)
    Trade.objects.filter(pk=fill.pk).update(deleted_at=timezone.now())
    count = Trade.objects.count()
    log = run_inline(demo.pk)
    differences = [d for account in log.detail.values() for d in account["differences"]]
    assert [d["instrument"] for d in differences] == [fill.symbol]
    assert Trade.objects.count() == count  # the tombstone stays; nothing was added to match the broker


@pytest.mark.django_db
def test_a_position_report_that_lags_is_compared_with_the_journal_at_its_own_moment(trader):
    account = account_with(
        trader,
        [fill(1, "BUY", 3, "5900", SUNDAY_EVENING), fill(2, "SELL", 1, "5905", SUNDAY_EVENING + timedelta(hours=2))],
    )
    # A statement as of an hour after the buy: long 3 then, though the journal holds 2 now.
    statement = [BrokerPosition("ESZ6", Decimal(3), as_of=SUNDAY_EVENING + timedelta(hours=1))]
    assert position_differences(account.pk, statement, read_at=SUNDAY_EVENING + timedelta(hours=3)) == []
    # The same figure read as current is a real difference.
    current = [BrokerPosition("ESZ6", Decimal(3))]
    assert position_differences(account.pk, current, read_at=SUNDAY_EVENING + timedelta(hours=3)) == [
        {"instrument": "ESZ6", "journal": "2", "broker": "3"}
    ]


@pytest.mark.django_db
def test_a_crypto_pair_reported_without_its_slash_is_the_same_instrument(trader):
    account = account_with(trader, [fill(1, "BUY", 2, "90000", SUNDAY_EVENING, "BTC/USD", "CRYPTO", "1")])
    reported = [BrokerPosition("BTCUSD", Decimal(2))]
    assert position_differences(account.pk, reported, read_at=SUNDAY_EVENING + timedelta(hours=1)) == []


@pytest.mark.django_db
def test_a_sync_agrees_with_tradovate_and_a_deleted_fill_is_flagged_by_the_next(trader, tradovate):
    connection = tradovate_connection(trader, tradovate)
    log = run_inline(connection.pk)
    assert log.status == SyncLog.Status.SUCCESS
    assert all(account["differences"] == [] for account in log.detail.values())
    deleted = Trade.objects.order_by("executed_at").first()
    Trade.objects.filter(pk=deleted.pk).update(deleted_at=timezone.now())
    log = run_inline(connection.pk)
    differences = [d for account in log.detail.values() for d in account["differences"]]
    assert [d["instrument"] for d in differences] == [deleted.symbol]


@pytest.mark.django_db
def test_a_fill_tradovate_busts_leaves_the_journal_and_its_positions_as_it_leaves_tradovate_s(trader, tradovate):
    connection = tradovate_connection(trader, tradovate)
    run_inline(connection.pk)
    busted = Trade.objects.order_by("executed_at").first()
    tradovate.bust(int(busted.broker_trade_id))
    log = run_inline(connection.pk)
    assert sum(account.get("busted", 0) for account in log.detail.values()) == 1
    assert all(account["differences"] == [] for account in log.detail.values())
    busted.refresh_from_db()
    assert busted.deleted_at is not None and not busted.round_trips.exists()


@pytest.fixture
def flex(settings, monkeypatch):
    settings.IBKR_FLEX_POLL_PAUSE_S = 0
    # Room for the limiter's one Flex call in 2 s to sleep between the run's few calls.
    monkeypatch.setattr(ratelimit.get_limiter(), "max_sleep_s", 2.5)
    with FakeFlex({"U1111111": "USD"}, executions_per_account=4, polls_before_ready=0) as fake:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "ibkr_flex": fake.url}
        yield fake


@pytest.mark.django_db
def test_a_sync_agrees_with_the_flex_statement_s_open_positions_without_asking_for_another_statement(trader, flex):
    connection = flex_connection(trader)
    log = run_inline(connection.pk)
    assert log.status == SyncLog.Status.SUCCESS, log.error_message
    assert log.detail["U1111111"]["differences"] == []
    # The statement's mark prices are kept with the run, to value the open positions.
    assert log.detail["U1111111"]["marks"]["AAPL"]["price"] == "230.5"
    # The week's report (accounts and positions) and the year's (the first sync's fills): no third.
    assert len(flex.send_requests) == 2
    deleted = Trade.objects.filter(asset_class="STK").first()
    Trade.objects.filter(pk=deleted.pk).update(deleted_at=timezone.now())
    log = run_inline(connection.pk)
    assert [d["instrument"] for d in log.detail["U1111111"]["differences"]] == ["AAPL"]


@pytest.mark.django_db
def test_a_flex_query_without_open_positions_compares_nothing_and_says_how_to_get_the_check(trader, flex):
    flex.open_positions = False
    connection = flex_connection(trader)
    log = run_inline(connection.pk)
    assert log.status == SyncLog.Status.SUCCESS, log.error_message
    assert "differences" not in log.detail["U1111111"]
    assert "Open Positions" in log.detail["U1111111"]["note"]


def test_the_broker_s_prices_are_kept_per_instrument_named_as_the_differences_name_it():
    at = SUNDAY_EVENING + timedelta(hours=1)
    reported = [
        BrokerPosition("ESZ6", Decimal(2), mark_price=Decimal("5912.25")),
        BrokerPosition("AAPL", Decimal(-1), expiry=SUNDAY_EVENING.date(), strike=Decimal("250.0"), option_right="C"),
        BrokerPosition("BTC/USD", Decimal("0.5"), mark_price=Decimal("90000.10"), as_of=SUNDAY_EVENING),
    ]
    assert broker_marks(reported, read_at=at) == {
        "ESZ6": {"price": "5912.25", "as_of": at.isoformat()},
        "BTCUSD": {"price": "90000.1", "as_of": SUNDAY_EVENING.isoformat()},
    }
