"""Connections, accounts and their fills as the product makes them, with defaults a test overrides."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from brokers import services
from brokers.models import BrokerAccount, BrokerConnection
from brokers.providers.demo import DemoProvider
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerTrade
from journal.importing import import_trades
from journal.positions import ChangedInstruments, positions_recompute

# Sunday 1 March 2026, 23:30 UTC: 17:30 in Chicago, so CME's session of Monday the 2nd.
SUNDAY_EVENING = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


def connection(owner, **fields) -> BrokerConnection:
    """A demo connection unless told otherwise; with auto-sync on, its first sync is queued on commit."""
    defaults = {"broker_type": "demo", "label": "Demo", "credentials": {"api_key": "k"}}
    return services.connection_create(owner=owner, **{**defaults, **fields})


def alpaca_connection(owner, key_id: str, secret_key: str, **fields) -> BrokerConnection:
    """A paper-trading Alpaca connection with this key pair."""
    credentials = {"key_id": key_id, "secret_key": secret_key}
    return connection(owner, broker_type="alpaca", environment="paper", credentials=credentials, **fields)


def fill(n, side, qty, price, at, symbol="ESZ6", asset_class="FUT", multiplier="50", **fields) -> BrokerTrade:
    """A futures fill (an E-mini unless told) of account ACC-1, with $2.25 of fees a contract."""
    defaults = {"fees": Decimal("2.25") * qty, "asset_class": asset_class, "multiplier": Decimal(multiplier)}
    return BrokerTrade(
        broker_trade_id=f"{symbol}-{n}",
        account_external_id="ACC-1",
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        price=Decimal(price),
        executed_at=at,
        **{**defaults, **fields},
    )


def account_with(owner, fills, external_id="ACC-1") -> BrokerAccount:
    """An account of a connection without auto-sync holding these fills, imported and their round trips computed."""
    connection_ = connection(owner, label=f"Pages {external_id}", sync_enabled=False)
    account = connection_.accounts.create(external_id=external_id, name=f"Account {external_id}")
    changes = ChangedInstruments(account.pk)
    import_trades(account.pk, fills, on_batch_committed=lambda batch, voided, last: changes.add(batch, voided))
    positions_recompute(changed=changes.since)
    return account


def recent_demo_fill() -> BrokerTrade:
    """A demo futures fill of the last hours, as a sync of the demo broker reads it: whether its position is
    still open or closed since, the journal differs from the broker without it (the hour-end close counts it)."""
    now = timezone.now()
    account = BrokerAccountInfo("DEMO-FUT-1", "f")
    return next(DemoProvider().get_trades(AuthResult(token="t"), account, now - timedelta(hours=2), now))
