"""Tradovate's positions (GET /position/list) against the journal, through syncs with the loopback simulator."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from brokers.models import SyncLog
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import BrokerAccountInfo, BrokerCredentials
from journal.models import Trade
from sync.runs import run_inline
from tests.broker_conditions import tradovate_connection
from tests.sim_tradovate import PASSWORD, FakeTradovate

LOGIN = {"username": "alice", "password": PASSWORD, "app_id": "TJ", "app_version": "1.0", "cid": "1", "sec": "s"}


@pytest.fixture
def tradovate():
    with FakeTradovate({"alice": 2}, fills_per_account=4) as fake:
        with override_settings(BROKER_BASE_URLS={"tradovate": fake.url}):
            yield fake


def test_positions_are_the_accounts_own_named_like_its_fills_without_the_flat_rows(tradovate):
    provider = get_broker_provider("tradovate", "demo")
    auth = provider.authenticate(BrokerCredentials(values=LOGIN, environment="demo"))
    account = provider.get_accounts(auth)[0]
    now = datetime.now(UTC)
    held = {}
    for t in provider.get_trades(auth, account, now - timedelta(days=1), now):
        held[t.symbol] = held.get(t.symbol, 0) + (t.quantity if t.side == "BUY" else -t.quantity)
    positions = provider.get_positions(auth, account)
    assert {p.symbol: p.quantity for p in positions} == {symbol: q for symbol, q in held.items() if q}
    assert provider.get_positions(auth, BrokerAccountInfo(external_id="999", name="not hers")) == []


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
