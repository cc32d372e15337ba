"""The contract every provider passes. A provider's test module subclasses ProviderContract.

Subclasses mock only the broker's HTTP (with `responses`, payloads in the documented
formats) through the stub_* hooks; the tests here then hold every provider to the same
behaviour: types, paging, stable ids, time zones, Decimal money, errors and rate limits.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import responses

from brokers.providers import ratelimit
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError, BrokerError, BrokerRateLimitError
from brokers.providers.registry import get_broker_provider, provider_classes
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerCredentials, BrokerTrade

# Every stub_credentials() must contain this text in its secret values, so that the
# tests can prove no secret leaks into errors or reprs.
SECRET_MARK = "S3CRET-MARK"
SINCE = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


class ProviderContract:
    provider_key: str
    environment: str = ""
    # The broker's HTTP is stubbed for these tests; a provider without HTTP (demo) sets False.
    uses_http: bool = True
    # The contract stubs whole conversations some of its tests end early (tests/conftest.py's rsps).
    RSPS_ALL_FIRED = False

    # --- hooks a provider's test class implements ----------------------------------------
    def stub_credentials(self) -> BrokerCredentials:
        raise NotImplementedError

    def stub_login_ok(self, rsps: responses.RequestsMock) -> None:
        """Register what a successful authenticate() needs."""

    def stub_login_refused(self, rsps: responses.RequestsMock) -> None:
        raise NotImplementedError

    def auth(self) -> AuthResult:
        """A session as authenticate() would return it, for calls after login."""
        raise NotImplementedError

    def stub_accounts(self, rsps: responses.RequestsMock) -> list[str]:
        """Register the accounts listing; return the external ids expected (closed ones left out)."""
        raise NotImplementedError

    def stub_trades(self, rsps: responses.RequestsMock, account: BrokerAccountInfo) -> int:
        """Register at least two pages (or batches) of fills; return how many trades get_trades yields."""
        raise NotImplementedError

    def stub_server_error(self, rsps: responses.RequestsMock) -> None:
        """Make the accounts call fail with an HTTP 5xx."""
        raise NotImplementedError

    def stub_rate_limited(self, rsps: responses.RequestsMock, retry_after: int) -> None:
        """Make the accounts call answer the broker's 'too many requests' with a wait of retry_after s."""
        raise NotImplementedError

    def account(self) -> BrokerAccountInfo:
        raise NotImplementedError

    # --- the contract --------------------------------------------------------------------
    @pytest.fixture
    def provider(self) -> BrokerProvider:
        return get_broker_provider(self.provider_key, self.environment)

    def test_is_registered_with_declarations(self, provider):
        cls = provider_classes()[self.provider_key]
        assert cls.key == self.provider_key and isinstance(provider, cls)
        assert cls.display_name
        if not cls.signs_in_at_broker():
            assert cls.credential_fields, "a provider declares the fields its form asks for"
            assert any(f.secret for f in cls.credential_fields)
        else:
            if cls.oauth is not None:
                assert cls.oauth.authorize_url.startswith("https://") and cls.oauth.token_url.startswith("https://")
            assert not cls.credential_fields, "a trader signs in at the broker and types nothing here"
        assert cls.sync_overlap > timedelta(0)
        assert cls.max_history > timedelta(0)
        with open(ratelimit.LIMITS_FILE, "rb") as fh:
            assert (cls.limits_key or cls.key) in tomllib.load(fh), "every provider has an entry in rate_limits.toml"

    def test_validate_credentials_names_missing_fields(self, provider):
        problems = type(provider).validate_credentials({}, self.environment)
        required = [f.name for f in type(provider).credential_fields if f.required]
        assert set(required) <= set(problems)

    def test_authenticate_returns_a_session(self, provider, rsps):
        if type(provider).signs_in_at_broker():
            pytest.skip("OAuth or portal: the session comes from the callback; authenticate() asks to reconnect")
        self.stub_login_ok(rsps)
        auth = provider.authenticate(self.stub_credentials())
        assert isinstance(auth, AuthResult) and auth.token
        assert auth.expires_at is None or auth.expires_at.tzinfo is not None
        assert SECRET_MARK not in repr(auth)

    def test_refused_login_is_an_auth_error_without_secrets(self, provider, rsps):
        self.stub_login_refused(rsps)
        with pytest.raises(BrokerAuthError) as info:
            provider.authenticate(self.stub_credentials())
        assert SECRET_MARK not in str(info.value)
        assert SECRET_MARK not in repr(info.value.args)

    def test_refresh_token_returns_a_session(self, provider, rsps):
        self.stub_login_ok(rsps)
        renewed = provider.refresh_token(self.auth())
        assert isinstance(renewed, AuthResult) and renewed.token

    def test_accounts(self, provider, rsps):
        expected = self.stub_accounts(rsps)
        accounts = provider.get_accounts(self.auth())
        assert [a.external_id for a in accounts] == expected
        assert all(isinstance(a, BrokerAccountInfo) and a.currency for a in accounts)

    def test_trades_are_typed_paged_and_stable(self, provider, rsps):
        account = self.account()
        expected = self.stub_trades(rsps, account)
        first = list(provider.get_trades(self.auth(), account, SINCE, UNTIL))
        second = list(provider.get_trades(self.auth(), account, SINCE, UNTIL))
        assert len(first) == expected > 1
        ids = [t.broker_trade_id for t in first]
        assert len(set(ids)) == len(ids), "trade ids are unique"
        assert ids == [t.broker_trade_id for t in second], "the same fills get the same ids on every call"
        for trade in first:
            assert isinstance(trade, BrokerTrade)
            assert trade.executed_at.utcoffset() == timedelta(0)
            assert all(isinstance(v, Decimal) for v in (trade.quantity, trade.price, trade.fees, trade.multiplier))
            assert trade.quantity > 0 and trade.fees >= 0 and trade.price > 0
            assert trade.account_external_id == account.external_id

    def test_server_error_is_transient(self, provider, rsps):
        if not self.uses_http:
            pytest.skip("no HTTP: the demo broker simulates outages through its scenario field")
        self.stub_server_error(rsps)
        with pytest.raises(BrokerError) as info:
            provider.get_accounts(self.auth())
        assert info.value.transient and not isinstance(info.value, BrokerAuthError)

    def test_rate_limit_answer_raises_and_blocks_every_worker(self, provider, rsps):
        if not self.uses_http:
            pytest.skip("no HTTP: the demo broker has no rate-limit answer to map")
        self.stub_rate_limited(rsps, retry_after=120)
        with pytest.raises(BrokerRateLimitError) as info:
            provider.get_accounts(self.auth())
        assert 60 <= info.value.retry_after <= 3700
        # Every later call, from any worker, now waits instead of hammering the broker.
        cls = type(provider)
        wait = ratelimit.get_limiter().try_acquire(cls.limits_key or cls.key, scope=self.limiter_scope())
        assert wait > 30

    def limiter_scope(self) -> str:
        """The scope the provider uses for per-credential buckets of this test's credentials."""
        return ""
