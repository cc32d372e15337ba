"""Stored round trips and open positions follow the fills: recomputed on import, late fills and deletions included."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.providers.demo import DemoProvider
from brokers.providers.types import BrokerTrade, Fee
from journal.importing import import_trades
from journal.models import RoundTrip, Trade
from journal.positions import ChangedInstruments, positions_recompute, positions_recompute_account
from sync.runs import run_inline
from tests import factories

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
D = Decimal


@pytest.fixture
def account(trader):
    connection = factories.connection(trader, label="Positions", sync_enabled=False)
    return connection.accounts.create(external_id="ACC-1", name="Futures")


def es(n, side, qty, price, minute):
    return BrokerTrade(
        broker_trade_id=f"ES-{n}",
        account_external_id="ACC-1",
        symbol="ESZ6",
        side=side,
        quantity=D(qty),
        price=D(price),
        fees=D("2.25") * qty,
        executed_at=T0 + timedelta(minutes=minute),
        asset_class="FUT",
        multiplier=D(50),
    )


def stored(trips):
    return sorted(
        ((t.opened_at, t.closed_at, t.side, t.size, t.gross_pnl, t.fees, t.open_quantity) for t in trips), key=str
    )


def imported(account, trades):
    """As a sync imports: what each batch changed is recomputed."""
    changes = ChangedInstruments(account.pk)
    import_trades(account.pk, trades, on_batch_committed=lambda batch, voided, last: changes.add(batch, voided))
    positions_recompute(changed=changes.since)


@pytest.mark.django_db
def test_a_fill_that_arrives_late_and_out_of_order_is_placed_where_it_happened(account):
    imported(account, [es(1, "BUY", 1, "5900", 0), es(3, "SELL", 2, "5910", 30)])
    # Without the middle fill the sale of 2 reversed the position: long 1 closed, short 1 open.
    assert RoundTrip.objects.filter(account=account).count() == 2
    imported(account, [es(2, "BUY", 1, "5905", 10)])
    (trip,) = RoundTrip.objects.filter(account=account)
    assert (trip.side, trip.size, trip.closed_at, trip.fill_count) == ("LONG", 2, T0 + timedelta(minutes=30), 3)
    # (5910 - 5900 + 5910 - 5905) points × $50, less 4 fills' fees of $2.25.
    assert (trip.gross_pnl, trip.net_pnl) == (D("750"), D("741"))
    assert trip.trading_day.isoformat() == "2026-03-02"


@pytest.mark.django_db
def test_a_fill_deleted_in_the_admin_leaves_the_round_trips_and_no_sync_brings_it_back(account, admin_client):
    imported(account, [es(1, "BUY", 2, "5900", 0), es(2, "SELL", 2, "5910", 30)])
    sale = Trade.objects.get(broker_trade_id="ES-2")
    assert admin_client.post(f"/admin/journal/trade/{sale.pk}/delete/", {"post": "yes"}).status_code == 302
    (still_open,) = RoundTrip.objects.filter(account=account)
    assert (still_open.closed_at, still_open.open_quantity, still_open.fill_count) == (None, 2, 1)
    imported(account, [es(2, "SELL", 2, "5910", 30)])
    assert RoundTrip.objects.get(account=account).closed_at is None
    assert Trade.objects.get(broker_trade_id="ES-2").deleted_at is not None


@pytest.mark.django_db
def test_a_busted_fill_leaves_the_round_trips_from_its_own_moment_whenever_the_bust_arrives(account):
    imported(account, [es(1, "BUY", 2, "5900", 0), es(2, "SELL", 2, "5910", 30), es(3, "BUY", 1, "5920", 40)])
    assert RoundTrip.objects.filter(account=account).count() == 2
    # The broker voids the sale a day later; its bust record carries the day it was made.
    imported(account, [replace(es(2, "SELL", 2, "5910", 24 * 60), busted=True)])
    (still_open,) = RoundTrip.objects.filter(account=account)
    assert (still_open.closed_at, still_open.open_quantity, still_open.fill_count) == (None, 3, 2)
    assert not Trade.objects.get(broker_trade_id="ES-2").round_trips.exists()
    # A broker repeats its busts on every read: nothing more is voided or recomputed.
    trip_id = still_open.pk
    imported(account, [replace(es(2, "SELL", 2, "5910", 24 * 60), busted=True)])
    assert RoundTrip.objects.get(account=account).pk == trip_id


@pytest.mark.django_db
def test_a_bust_a_sync_reads_takes_its_fill_out_of_the_round_trips(account, monkeypatch):
    connection = account.connection
    run_inline(connection.pk)
    voided = factories.recent_demo_fill()
    reads = DemoProvider.get_trades

    def with_the_bust(self, auth, broker_account, since, until):
        yield from reads(self, auth, broker_account, since, until)
        if broker_account.external_id == voided.account_external_id:
            yield replace(voided, busted=True)

    monkeypatch.setattr(DemoProvider, "get_trades", with_the_bust)
    log = run_inline(connection.pk)
    fill = Trade.objects.get(account__connection=connection, broker_trade_id=voided.broker_trade_id)
    assert fill.deleted_at is not None and not fill.round_trips.exists()
    assert sum(a.get("busted", 0) for a in log.detail.values()) == 1
    synced = stored(RoundTrip.objects.filter(account=fill.account))
    positions_recompute_account(account_id=fill.account_id)
    assert synced == stored(RoundTrip.objects.filter(account=fill.account))


@pytest.mark.django_db
def test_fees_in_every_currency_reach_the_round_trip_and_only_the_instruments_own_reduce_its_net(account):
    def btc(n, side, minute, **fees):
        return BrokerTrade(
            broker_trade_id=f"BTC-{n}",
            account_external_id="ACC-1",
            symbol="BTC/USDT",
            side=side,
            quantity=D("0.5"),
            price=D("90000") + minute,
            executed_at=T0 + timedelta(minutes=minute),
            asset_class="CRYPTO",
            currency="USDT",
            **fees,
        )

    imported(
        account,
        [
            btc(1, "BUY", 0, fees=D("9"), other_fees=(Fee("GT", D("2.2")), Fee("USDT", D("0.5")))),
            btc(2, "SELL", 10, fees=D("0.0001"), fee_currency="BTC", other_fees=(Fee("POINT", D("3")),)),
        ],
    )
    (trip,) = RoundTrip.objects.filter(account=account)
    assert (trip.gross_pnl, trip.fees, trip.net_pnl) == (D("5"), D("9.5"), D("-4.5"))
    assert trip.other_fees == {"GT": "2.2", "BTC": "0.0001", "POINT": "3"}


@pytest.mark.django_db
def test_options_of_different_strikes_are_different_instruments(account):
    def call(n, strike, side):
        return BrokerTrade(
            broker_trade_id=f"C-{n}",
            account_external_id="ACC-1",
            symbol="SPY",
            side=side,
            quantity=D(1),
            price=D("2.00"),
            executed_at=T0 + timedelta(minutes=n),
            asset_class="OPT",
            multiplier=D(100),
            expiry=datetime(2026, 3, 20).date(),
            strike=D(strike),
            option_right="C",
        )

    imported(account, [call(1, "600", "BUY"), call(2, "605", "SELL")])
    trips = RoundTrip.objects.filter(account=account).order_by("strike")
    assert [(t.strike, t.open_quantity) for t in trips] == [(600, 1), (605, -1)]


@pytest.mark.django_db
def test_a_sync_recomputes_the_positions_of_what_it_imported(account):
    connection = account.connection
    run_inline(connection.pk)
    for row in connection.accounts.exclude(pk=account.pk):
        fills = Trade.objects.filter(account=row)
        assert fills.exists()
        for symbol in fills.values_list("symbol", flat=True).distinct():
            mine = fills.filter(symbol=symbol)
            bought = mine.filter(side="BUY").aggregate(q=Sum("quantity"))["q"] or 0
            sold = mine.filter(side="SELL").aggregate(q=Sum("quantity"))["q"] or 0
            open_trip = RoundTrip.objects.filter(account=row, symbol=symbol, closed_at__isnull=True).first()
            assert (open_trip.open_quantity if open_trip else 0) == bought - sold
        assert RoundTrip.objects.filter(account=row).aggregate(n=Sum("fill_count"))["n"] >= fills.count()


@pytest.mark.django_db
def test_the_command_builds_round_trips_for_fills_imported_before_they_existed(account):
    import_trades(account.pk, [es(1, "BUY", 1, "5900", 0), es(2, "SELL", 1, "5901", 5)])
    assert not RoundTrip.objects.exists()
    out = StringIO()
    call_command("recompute_positions", stdout=out)
    assert RoundTrip.objects.get(account=account).net_pnl == D("45.50")
    assert "ACC-1: 1 round trip" in out.getvalue()


fill_rows = st.lists(
    st.tuples(st.integers(0, 40), st.sampled_from(["BUY", "SELL"]), st.integers(1, 4), st.integers(5890, 5910)),
    min_size=1,
    max_size=25,
)


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=fill_rows, batch=st.integers(1, 6), data=st.data())
def test_fills_arriving_in_any_order_and_batches_give_the_round_trips_of_one_whole_computation(
    account, rows, batch, data
):
    Trade.objects.all().delete()
    RoundTrip.objects.all().delete()
    fills = [es(n, side, qty, str(price), minute) for n, (minute, side, qty, price) in enumerate(rows)]
    arrival = data.draw(st.permutations(fills))
    for start in range(0, len(arrival), batch):
        imported(account, arrival[start : start + batch])

    incremental = stored(RoundTrip.objects.filter(account=account))
    positions_recompute_account(account_id=account.pk)
    assert incremental == stored(RoundTrip.objects.filter(account=account))
