"""The demo broker on the shared contract, plus its own promises: determinism and new fills over time."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from brokers.providers import demo
from brokers.providers.errors import BrokerAuthError, BrokerUnavailableError
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerCredentials
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract


class TestDemoContract(ProviderContract):
    provider_key = "demo"
    uses_http = False

    def stub_credentials(self):
        return BrokerCredentials(values={"api_key": f"key-{SECRET_MARK}"})

    def stub_login_refused(self, rsps):
        self._scenario = "auth_error"

    def stub_credentials_for_scenario(self):
        return BrokerCredentials(values={"api_key": f"key-{SECRET_MARK}", "scenario": self._scenario})

    def test_refused_login_is_an_auth_error_without_secrets(self, provider, rsps):
        self.stub_login_refused(rsps)
        with pytest.raises(BrokerAuthError) as info:
            provider.authenticate(self.stub_credentials_for_scenario())
        assert SECRET_MARK not in str(info.value)

    def auth(self):
        return AuthResult(token="t", expires_at=datetime.now(UTC) + timedelta(hours=1))

    def stub_accounts(self, rsps):
        return ["DEMO-FUT-1", "DEMO-STK-1"]

    def account(self):
        return BrokerAccountInfo(external_id="DEMO-FUT-1", name="Demo futures")

    def stub_trades(self, rsps, account):
        provider = get_broker_provider("demo")
        return sum(1 for _ in provider.get_trades(self.auth(), account, SINCE, UNTIL))


def test_down_scenario_is_transient():
    provider = get_broker_provider("demo")
    with pytest.raises(BrokerUnavailableError) as info:
        provider.authenticate(BrokerCredentials(values={"api_key": "k", "scenario": "broker_down"}))
    assert info.value.transient


@override_settings(DEMO_FILL_EVERY_S=60)
def test_new_fills_appear_as_time_passes_and_history_does_not_change():
    provider = get_broker_provider("demo")
    account = BrokerAccountInfo(external_id="DEMO-STK-1", name="Demo stocks")
    auth = AuthResult(token="t")
    start = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    hour = list(provider.get_trades(auth, account, start, start + timedelta(hours=1)))
    two_hours = list(provider.get_trades(auth, account, start, start + timedelta(hours=2)))
    assert 20 < len(hour) < len(two_hours)
    assert two_hours[: len(hour)] == hour
    partial_orders = {t.order_id for t in two_hours if t.raw["partial"]}
    assert partial_orders, "some orders fill in several parts"
    assert {
        t.asset_class
        for t in provider.get_trades(auth, BrokerAccountInfo("DEMO-FUT-1", "f"), start, start + timedelta(hours=1))
    } == {"FUT"}


def test_no_fill_from_the_future():
    provider = get_broker_provider("demo")
    now = datetime.now(UTC)
    trades = list(
        provider.get_trades(
            AuthResult(token="t"),
            BrokerAccountInfo("DEMO-FUT-1", "f"),
            now - timedelta(hours=1),
            now + timedelta(days=1),
        )
    )
    assert trades and max(t.executed_at for t in trades) <= now


class _MidHour(datetime):
    """datetime whose now() is forty minutes into an hour: the demo broker then holds what the hour opened."""

    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 11, 5, 14, 40, tzinfo=UTC)


def test_demo_positions_carry_the_last_fill_s_price_so_make_run_shows_unrealised_pnl(monkeypatch):
    monkeypatch.setattr(demo, "datetime", _MidHour)
    provider = get_broker_provider("demo")
    auth = AuthResult(token="t")
    moment = _MidHour.now()
    positions = []
    for account in (BrokerAccountInfo("DEMO-FUT-1", "f"), BrokerAccountInfo("DEMO-STK-1", "s")):
        fills = list(provider.get_trades(auth, account, moment - timedelta(minutes=40), moment))
        last = {t.symbol: t.price for t in fills}
        held = provider.get_positions(auth, account)
        positions += held
        assert [p.mark_price for p in held] == [last[p.symbol] for p in held]
    assert positions, "forty minutes into the hour the demo broker holds something open"
