"""The journal's import: exact counts, even when two runs import the same fills at the same moment."""

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection as db_connection
from django.db.migrations.executor import MigrationExecutor

from brokers import services
from brokers.providers.types import BUY, BrokerTrade
from journal.importing import import_trades, trades_correct
from journal.models import Trade

START = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def trades(n):
    return [
        BrokerTrade(
            broker_trade_id=f"fill-{i}",
            account_external_id="A",
            symbol="MESZ6",
            side=BUY,
            quantity=Decimal("2"),
            price=Decimal("5901.25"),
            fees=Decimal("1.24"),
            executed_at=START + timedelta(seconds=i),
            asset_class="FUT",
            multiplier=Decimal("5"),
            raw={"id": i},
        )
        for i in range(n)
    ]


@pytest.fixture
def account(trader, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        connection = services.connection_create(
            owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
        )
    return connection.accounts.create(external_id="A", name="A")


@pytest.mark.django_db
def test_values_arrive_exactly_and_a_second_import_skips_all(account, settings):
    settings.SYNC_IMPORT_BATCH_SIZE = 7
    first = import_trades(account.pk, trades(20))
    assert (first.imported, first.skipped) == (20, 0)
    again = import_trades(account.pk, trades(25))
    assert (again.imported, again.skipped) == (5, 20)
    t = Trade.objects.get(broker_trade_id="fill-3")
    assert (t.quantity, t.price, t.fees, t.multiplier) == (Decimal("2"), Decimal("5901.25"), Decimal("1.24"), 5)
    assert t.executed_at == START + timedelta(seconds=3) and t.raw == {"id": 3}


@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_of_the_same_fills_count_each_once(account, settings):
    settings.SYNC_IMPORT_BATCH_SIZE = 50
    fills = trades(600)
    results, errors = [], []

    def worker():
        try:
            results.append(import_trades(account.pk, fills))
        except Exception as exc:  # surfaced in the assertion below
            errors.append(exc)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.imported for r in results) == 600 == Trade.objects.count()
    assert sum(r.skipped for r in results) == 2 * 600


@pytest.mark.django_db
def test_option_fields_and_the_fx_rate_are_stored_for_p_and_l(account):
    from datetime import date

    option = BrokerTrade(
        broker_trade_id="opt-1",
        account_external_id="A",
        symbol="AAPL  261218C00200000",
        side=BUY,
        quantity=Decimal("2"),
        price=Decimal("3.15"),
        executed_at=START,
        currency="EUR",
        asset_class="OPT",
        multiplier=Decimal("100"),
        expiry=date(2026, 12, 18),
        strike=Decimal("200"),
        option_right="C",
        fx_rate_to_base=Decimal("1.0842"),
    )
    assert import_trades(account.pk, [option, *trades(1)]).imported == 2
    stored = Trade.objects.get(broker_trade_id="opt-1")
    assert (stored.asset_class, stored.multiplier, stored.expiry, stored.strike, stored.option_right) == (
        "OPT",
        Decimal("100"),
        date(2026, 12, 18),
        Decimal("200"),
        "C",
    )
    assert stored.fx_rate_to_base == Decimal("1.0842")
    plain = Trade.objects.get(broker_trade_id="fill-0")
    assert (plain.expiry, plain.strike, plain.option_right, plain.fx_rate_to_base) == (None, None, "", None)


@pytest.mark.django_db
def test_amounts_keep_every_digit_to_18_decimals(account):
    crypto = BrokerTrade(
        broker_trade_id="kucoin-1",
        account_external_id="A",
        symbol="PEPE/USDT",
        side=BUY,
        quantity=Decimal("1220.123456789"),
        price=Decimal("0.000000012345678901"),
        fees=Decimal("0.000732004"),
        executed_at=START,
        currency="USDT",
        asset_class="CRYPTO",
        multiplier=Decimal("0.0001"),
        strike=Decimal("0.000000000000000001"),
    )
    import_trades(account.pk, [crypto])
    stored = Trade.objects.get(broker_trade_id="kucoin-1")
    assert (stored.quantity, stored.price, stored.fees, stored.multiplier, stored.strike) == (
        Decimal("1220.123456789"),
        Decimal("0.000000012345678901"),
        Decimal("0.000732004"),
        Decimal("0.0001"),
        Decimal("0.000000000000000001"),
    )


@pytest.mark.django_db(transaction=True)
def test_the_18_decimal_migration_keeps_existing_trades(account):
    executor = MigrationExecutor(db_connection)
    before, after = [("journal", "0004_trade_fee_currency")], [("journal", "0005_trade_amounts_keep_18_decimals")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("journal", "Trade")
    old.objects.create(
        account_id=account.pk,
        broker_trade_id="old-1",
        symbol="MESZ6",
        side=BUY,
        quantity=Decimal("1234567.12345678"),
        price=Decimal("5901.25"),
        fees=Decimal("0.00073200"),
        multiplier=Decimal("5"),
        strike=Decimal("6000.5"),
        executed_at=START,
        imported_at=START,
    )
    executor = MigrationExecutor(db_connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps.get_model("journal", "Trade")
    stored = new.objects.get(broker_trade_id="old-1")
    assert (stored.quantity, stored.price, stored.fees, stored.multiplier, stored.strike) == (
        Decimal("1234567.12345678"),
        Decimal("5901.25"),
        Decimal("0.000732"),
        Decimal("5"),
        Decimal("6000.5"),
    )
    executor = MigrationExecutor(db_connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert Trade.objects.get(broker_trade_id="old-1").other_fees == []


@pytest.mark.django_db
@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="SQLite keeps 15 significant digits (its REAL)")
def test_postgresql_keeps_twenty_integer_digits_and_eighteen_decimals(account):
    huge = Decimal("12345678901234567890.123456789012345678")
    (trade,) = trades(1)
    import_trades(account.pk, [replace(trade, broker_trade_id="huge", quantity=huge, price=huge)])
    stored = Trade.objects.get(broker_trade_id="huge")
    assert (stored.quantity, stored.price) == (huge, huge)


@pytest.mark.django_db
def test_a_correction_rewrites_what_the_broker_reported_differently_and_leaves_tombstones_and_file_rows(account):
    stored = trades(4)
    import_trades(account.pk, [replace(t, order_id="") for t in stored])
    Trade.objects.filter(broker_trade_id="fill-1").update(deleted_at=START)  # the trader deleted it
    Trade.objects.filter(broker_trade_id="fill-2").update(raw={"file": {"sha256": "ab", "row": 2}})
    read_again = [replace(t, order_id=f"order-{i}") for i, t in enumerate(stored)]

    corrected = trades_correct(account.pk, read_again)

    assert sorted(after.broker_trade_id for _, after in corrected) == ["fill-0", "fill-3"]
    assert dict(Trade.objects.values_list("broker_trade_id", "order_id")) == {
        "fill-0": "order-0",
        "fill-1": "",
        "fill-2": "",
        "fill-3": "order-3",
    }
    # Read the same way once more, nothing differs: price digits past the column's places are no difference.
    assert trades_correct(account.pk, [replace(t, price=t.price + Decimal("1e-20")) for t in read_again]) == []
