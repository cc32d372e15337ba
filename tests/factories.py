"""Connections as the product makes them, through the service, with defaults a test overrides."""

from brokers import services
from brokers.models import BrokerConnection


def connection(owner, **fields) -> BrokerConnection:
    """A demo connection unless told otherwise; with auto-sync on, its first sync is queued on commit."""
    defaults = {"broker_type": "demo", "label": "Demo", "credentials": {"api_key": "k"}}
    return services.connection_create(owner=owner, **{**defaults, **fields})


def alpaca_connection(owner, key_id: str, secret_key: str, **fields) -> BrokerConnection:
    """A paper-trading Alpaca connection with this key pair."""
    credentials = {"key_id": key_id, "secret_key": secret_key}
    return connection(owner, broker_type="alpaca", environment="paper", credentials=credentials, **fields)
