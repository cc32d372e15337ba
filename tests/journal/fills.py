"""Hand-made fills imported into a trader's account, with their round trips computed, for the journal's tests."""

from datetime import UTC, datetime
from decimal import Decimal

from brokers import services
from brokers.providers.types import BrokerTrade
from journal.importing import import_trades
from journal.positions import changed_by, positions_recompute

D = Decimal
# Sunday 1 March 2026, 23:30 UTC: 17:30 in Chicago, so CME's session of Monday the 2nd.
SUNDAY_EVENING = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


def fill(n, side, qty, price, at, symbol="ESZ6", asset_class="FUT", multiplier="50"):
    return BrokerTrade(
        broker_trade_id=f"{symbol}-{n}",
        account_external_id="ACC-1",
        symbol=symbol,
        side=side,
        quantity=D(qty),
        price=D(price),
        fees=D("2.25") * qty,
        executed_at=at,
        asset_class=asset_class,
        multiplier=D(multiplier),
    )


def account_with(owner, fills, external_id="ACC-1"):
    connection = services.connection_create(
        owner=owner, broker_type="demo", label=f"Pages {external_id}", credentials={"api_key": "k"}, sync_enabled=False
    )
    account = connection.accounts.create(external_id=external_id, name=f"Account {external_id}")
    import_trades(account.pk, fills)
    positions_recompute(changed=changed_by(account.pk, fills))
    return account
