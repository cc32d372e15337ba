"""The lot engine (journal.lots): properties over random fills, and worked examples checked by hand."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from journal.lots import LONG, SHORT, Fill, round_trips, trading_day

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
D = Decimal


def fill(n, side, qty, price, *, minutes=None, mult="1", fees="0", fx=None, other_fees=()):
    return Fill(
        id=n,
        broker_trade_id=f"F{n:04d}",
        executed_at=T0 + timedelta(minutes=n if minutes is None else minutes),
        side=side,
        quantity=D(qty),
        price=D(price),
        multiplier=D(mult),
        fees=D(fees),
        other_fees=other_fees,
        fx_rate_to_base=None if fx is None else D(fx),
    )


fills_strategy = st.lists(
    st.builds(
        lambda minute, side, qty, cents, fee_cents: (minute, side, qty, cents, fee_cents),
        st.integers(0, 30),
        st.sampled_from(["BUY", "SELL"]),
        st.integers(1, 7),
        st.integers(1, 500_000),
        st.integers(0, 500),
    ),
    max_size=40,
)


def as_fills(rows, mult="50"):
    return [
        fill(n, side, qty, D(cents) / 100, minutes=minute, mult=mult, fees=D(fee) / 100)
        for n, (minute, side, qty, cents, fee) in enumerate(rows)
    ]


@settings(max_examples=300, deadline=None)
@given(fills_strategy)
def test_the_position_is_the_signed_sum_of_the_fills_and_only_the_last_round_trip_may_be_open(rows):
    fills = as_fills(rows)
    trips = round_trips(fills)
    position = sum((f.signed_quantity for f in fills), D(0))
    assert all(t.closed_at is not None for t in trips[:-1])
    still_open = trips[-1].open_quantity if trips and trips[-1].closed_at is None else D(0)
    assert still_open == position
    assert sum((t.fees for t in trips), D(0)) == sum((f.fees for f in fills), D(0))


@settings(max_examples=300, deadline=None)
@given(fills_strategy, st.integers(1, 500_000))
def test_realised_plus_unrealised_pnl_is_the_cash_flow_at_a_mark_price(rows, mark_cents):
    fills = as_fills(rows)
    mark = D(mark_cents) / 100
    trips = round_trips(fills)
    position = sum((f.signed_quantity for f in fills), D(0))
    cash = sum((-f.signed_quantity * f.price * f.multiplier for f in fills), D(0)) + position * mark * D(50)
    realised = sum((t.gross for t in trips), D(0))
    unrealised = trips[-1].unrealised(mark, D(50)) if trips and trips[-1].closed_at is None else D(0)
    assert realised + unrealised == cash
    fees = sum((f.fees for f in fills), D(0))
    assert sum((t.net for t in trips), D(0)) + unrealised == cash - fees


@settings(max_examples=200, deadline=None)
@given(fills_strategy, st.randoms(use_true_random=False))
def test_the_order_fills_arrive_in_does_not_change_the_result(rows, rnd):
    fills = as_fills(rows)
    shuffled = list(fills)
    rnd.shuffle(shuffled)

    def summary(trips):
        return [(t.side, t.opened_at, t.closed_at, t.size, t.gross, t.fees, t.fill_ids, t.open_quantity) for t in trips]

    assert summary(round_trips(shuffled)) == summary(round_trips(fills))


def test_an_es_round_trip_with_fees_counts_fifty_dollars_a_point():
    # Buy 2 ESZ6 at 5900.00, sell 2 at 5910.25: 10.25 points × 2 × $50 = $1,025; fees 4 × $2.25.
    (trip,) = round_trips(
        [fill(1, "BUY", 2, "5900.00", mult=50, fees="4.50"), fill(2, "SELL", 2, "5910.25", mult=50, fees="4.50")]
    )
    assert (trip.side, trip.size, trip.entry_average, trip.exit_average) == (LONG, 2, D("5900"), D("5910.25"))
    assert (trip.gross, trip.fees, trip.net) == (D("1025.00"), D("9.00"), D("1016.00"))
    assert trip.closed_at - trip.opened_at == timedelta(minutes=1)
    assert trip.fill_ids == [1, 2]


def test_a_short_mnq_scaled_out_in_three_fills_is_one_round_trip():
    # Short 3 at 21000.00; cover at 20990.00 (+10), 20980.50 (+19.5), 21005.00 (-5): 24.5 points × $2.
    trips = round_trips(
        [
            fill(1, "SELL", 3, "21000.00", mult=2, fees="2.22"),
            fill(2, "BUY", 1, "20990.00", mult=2, fees="0.74"),
            fill(3, "BUY", 1, "20980.50", mult=2, fees="0.74"),
            fill(4, "BUY", 1, "21005.00", mult=2, fees="0.74"),
        ]
    )
    assert len(trips) == 1
    trip = trips[0]
    assert (trip.side, trip.size, trip.gross, trip.fees, trip.net) == (SHORT, 3, D("49.00"), D("4.44"), D("44.56"))
    assert round(trip.exit_average, 4) == D("20991.8333")
    assert trip.closed_at == T0 + timedelta(minutes=4)


def test_an_option_expiring_worthless_closes_at_zero_when_the_broker_reports_the_expiry():
    bought = fill(1, "BUY", 2, "3.50", mult=100, fees="1.30")
    (expired,) = round_trips([bought, fill(2, "SELL", 2, "0", mult=100)])
    assert (expired.gross, expired.net, expired.closed_at is not None) == (D("-700.00"), D("-701.30"), True)
    # Without the broker's expiry record the journal does not invent one: the position stays open.
    (still_open,) = round_trips([bought])
    assert (still_open.closed_at, still_open.open_quantity, still_open.open_average) == (None, 2, D("3.50"))


def test_a_short_option_expiring_worthless_keeps_the_whole_premium_times_100():
    written = fill(1, "SELL", 2, "3.50", mult=100, fees="1.30")
    (open_,) = round_trips([written])
    # Before expiry, at a mark of 1.20: 2.30 × 2 × 100 not yet realised.
    assert (open_.open_quantity, open_.unrealised(D("1.20"), D(100))) == (-2, D("460.00"))
    (expired,) = round_trips([written, fill(2, "BUY", 2, "0", mult=100)])
    assert (expired.side, expired.gross, expired.net, expired.exit_average) == (SHORT, D("700.00"), D("698.70"), 0)
    assert expired.open_quantity == 0 and expired.closed_at is not None


def test_a_fill_that_reverses_the_position_closes_one_round_trip_and_opens_the_next():
    # Long 2 at 5900, then sell 5 at 5905: 2 close (+5 points × 2 × $50), 3 open a short; fees by quantity.
    first, second = round_trips(
        [fill(1, "BUY", 2, "5900", mult=50, fees="4.50"), fill(2, "SELL", 5, "5905", mult=50, fees="11.25")]
    )
    assert (first.side, first.gross, first.fees, first.net) == (LONG, D("500"), D("9.00"), D("491.00"))
    assert (second.side, second.size, second.open_quantity, second.fees) == (SHORT, 3, -3, D("6.75"))
    assert second.closed_at is None and second.opened_at == first.closed_at
    assert first.fill_ids == [1, 2] and second.fill_ids == [2]


def test_a_eur_stock_counts_pnl_in_euros_and_in_dollars_at_the_rates_the_broker_gave():
    # 10 SAP bought at €200 (1.10 $/€), sold at €210 (1.20): €100 gross, €96 net;
    # in dollars the P&L converts at the closing rate, each fee at its own fill's rate.
    (trip,) = round_trips(
        [fill(1, "BUY", 10, "200", fees="2", fx="1.10"), fill(2, "SELL", 10, "210", fees="2", fx="1.20")]
    )
    assert (trip.gross, trip.net) == (D("100"), D("96"))
    assert (trip.gross_base, trip.fees_base, trip.net_base) == (D("120.00"), D("4.60"), D("115.40"))
    (no_rate,) = round_trips([fill(1, "BUY", 10, "200", fx="1.10"), fill(2, "SELL", 10, "210")])
    assert no_rate.gross_base is None and no_rate.net_base is None


def test_fees_in_another_currency_are_kept_apart_from_the_pnl():
    (trip,) = round_trips(
        [
            fill(1, "BUY", 1, "100", fees="0.10", other_fees=(("BNB", D("0.002")),)),
            fill(2, "SELL", 1, "110", other_fees=(("BNB", D("0.003")),)),
        ]
    )
    assert (trip.net, trip.other_fees) == (D("9.90"), {"BNB": D("0.005")})


def test_fills_at_the_same_moment_are_read_in_broker_id_order():
    same = T0
    a = Fill(1, "B", same, "SELL", D(1), D(10))
    b = Fill(2, "A", same, "BUY", D(1), D(9))
    (trip,) = round_trips([a, b])
    assert trip.side == LONG and trip.gross == D(1)


def test_a_futures_session_that_starts_on_sunday_evening_is_mondays_trading_day():
    sunday_evening = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)  # 17:30 in Chicago
    assert trading_day(sunday_evening, "FUT").isoformat() == "2026-03-02"
    assert trading_day(sunday_evening, "STK").isoformat() == "2026-03-01"
    assert trading_day(sunday_evening, "CRYPTO").isoformat() == "2026-03-01"
    monday_afternoon = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # 14:00 in Chicago
    assert trading_day(monday_afternoon, "FUT").isoformat() == "2026-03-02"


def test_a_partial_close_matches_the_oldest_lot_first():
    # Bought at 100 then 110; selling one realises against 100 (FIFO), the lot at 110 stays open.
    (trip,) = round_trips([fill(1, "BUY", 1, "100"), fill(2, "BUY", 1, "110"), fill(3, "SELL", 1, "120")])
    assert (trip.gross, trip.open_quantity, trip.open_average, trip.closed_at) == (D("20"), 1, D("110"), None)
    assert trip.unrealised(D("120"), D(1)) == D("10")
