"""A trade's fields are described once (journal.models.REPORTED_FIELDS); everything that handles trades agrees."""

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from brokers import services
from brokers.providers.types import BrokerTrade, Fee
from journal.admin import TradeAdmin
from journal.api import TradeSerializer
from journal.importing import _COLUMNS, import_trades
from journal.models import REPORTED_FIELDS, Trade


def test_every_reported_field_is_a_model_field_and_a_field_of_what_providers_return():
    model_fields = {f.name for f in Trade._meta.get_fields()}
    provider_fields = {f.name for f in dataclasses.fields(BrokerTrade)}
    assert set(REPORTED_FIELDS) <= model_fields
    assert set(REPORTED_FIELDS) <= provider_fields


def test_the_import_the_api_and_the_admin_derive_from_the_description():
    assert _COLUMNS == ("account_id", *REPORTED_FIELDS, "imported_at")
    assert set(REPORTED_FIELDS) - {"raw"} <= set(TradeSerializer.Meta.fields)
    assert set(REPORTED_FIELDS) <= set(TradeAdmin.fields)


@pytest.mark.django_db
def test_a_stored_option_trade_keeps_every_reported_field(trader):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Fields", credentials={"api_key": "k"}, sync_enabled=False
    )
    account = connection.accounts.create(external_id="X-1", name="x")
    trade = BrokerTrade(
        broker_trade_id="T-1",
        account_external_id="X-1",
        symbol="SPY",
        side="BUY",
        quantity=Decimal("2"),
        price=Decimal("1.25"),
        executed_at=datetime(2026, 3, 4, 15, 30, 0, 123456, tzinfo=UTC),
        fees=Decimal("1.3"),
        currency="USD",
        fee_currency="USD",
        asset_class="OPT",
        multiplier=Decimal("100"),
        order_id="O-9",
        expiry=date(2026, 3, 20),
        strike=Decimal("510"),
        option_right="C",
        fx_rate_to_base=Decimal("1.0835"),
        other_fees=(Fee("GT", Decimal("0.5")),),
        raw={"id": "T-1"},
    )
    assert import_trades(account.pk, [trade]).imported == 1
    stored = Trade.objects.get()
    for name in REPORTED_FIELDS:
        if name != "other_fees":
            assert getattr(stored, name) == getattr(trade, name), name
    # Stored as JSON, each cost as exact text.
    assert stored.other_fees == [{"currency": "GT", "cost": "0.5"}]
