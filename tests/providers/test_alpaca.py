"""Alpaca on the shared contract, plus its paging, fill parsing, rate-limit and environment rules."""

import json
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
import responses
from django.conf import settings
from django.test import override_settings
from responses import matchers

from brokers.providers import ratelimit
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, BrokerRateLimitError
from brokers.providers.ratelimit import scope_for
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import BUY, SELL, AuthResult, BrokerAccountInfo, BrokerCredentials
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract

PAPER = "https://paper-api.alpaca.markets"
LIVE = "https://api.alpaca.markets"
KEY_ID = f"PKTEST{SECRET_MARK}"
SECRET_KEY = f"secret-{SECRET_MARK}"
ACCOUNT_NUMBER = "PA3T8N36NVJK"
ACCOUNT_UUID = "904837e3-3b76-47ec-b432-046db621571b"
FILLS_URL = f"{PAPER}/v2/account/activities/FILL"
FIRST_PAGE = {
    "after": "2026-11-02T00:00:00.000000Z",
    "until": "2026-11-20T00:00:00.000000Z",
    "direction": "asc",
    "page_size": "100",
}


def account_payload(**overrides):
    return {
        "id": ACCOUNT_UUID,
        "account_number": ACCOUNT_NUMBER,
        "status": "ACTIVE",
        "currency": "USD",
        "cash": "100000.00",
        **overrides,
    }


def fill(n, **overrides):
    """One FILL activity as Alpaca documents it: numbers are strings, ids are '<time>::<uuid>'."""
    return {
        "id": f"20261103143000{n:06d}::8e7c4f3a-0000-4000-8000-{n:012d}",
        "activity_type": "FILL",
        "transaction_time": f"2026-11-03T14:30:00.{n:06d}Z",
        "type": "fill",
        "price": "231.45",
        "qty": "10",
        "side": "buy",
        "symbol": "AAPL",
        "leaves_qty": "0",
        "order_id": f"c6a1d3b0-0000-4000-8000-{n:012d}",
        "cum_qty": "10",
        "order_status": "filled",
    }


def stub_fill_pages(rsps, pages, base=PAPER):
    """Register each page under the query that must ask for it: page N+1 carries page N's last id."""
    query = dict(FIRST_PAGE)
    for page in pages:
        rsps.get(
            f"{base}/v2/account/activities/FILL",
            json=page,
            match=[matchers.query_param_matcher(dict(query))],
        )
        if page:
            query["page_token"] = page[-1]["id"]


def make_auth():
    return AuthResult(token=json.dumps({"key_id": KEY_ID, "secret_key": SECRET_KEY}))


def make_account():
    return BrokerAccountInfo(external_id=ACCOUNT_NUMBER, name=f"Alpaca Paper trading {ACCOUNT_NUMBER}")


class TestAlpacaContract(ProviderContract):
    provider_key = "alpaca"
    environment = "paper"

    def stub_credentials(self):
        return BrokerCredentials(values={"key_id": KEY_ID, "secret_key": SECRET_KEY}, environment="paper")

    def stub_login_ok(self, rsps):
        rsps.get(f"{PAPER}/v2/account", json=account_payload())

    def stub_login_refused(self, rsps):
        rsps.get(f"{PAPER}/v2/account", status=401, json={"code": 40110000, "message": "request is not authorized"})

    def auth(self):
        return make_auth()

    def stub_accounts(self, rsps):
        rsps.get(f"{PAPER}/v2/account", json=account_payload())
        return [ACCOUNT_NUMBER]

    def account(self):
        return make_account()

    def stub_trades(self, rsps, account):
        stub_fill_pages(rsps, [[fill(n) for n in range(100)], [fill(n) for n in range(100, 105)]])
        return 105

    def stub_server_error(self, rsps):
        rsps.get(f"{PAPER}/v2/account", status=500, json={"message": "internal server error"})

    def stub_rate_limited(self, rsps, retry_after):
        reset = str(int(time.time()) + retry_after)
        rsps.get(
            f"{PAPER}/v2/account",
            status=429,
            body="too many requests.",
            headers={"X-Ratelimit-Limit": "200", "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": reset},
        )

    def limiter_scope(self):
        return scope_for(KEY_ID)


@pytest.fixture
def paper():
    return get_broker_provider("alpaca", "paper")


def test_login_sends_the_key_pair_and_keeps_it_as_the_session(paper, rsps):
    rsps.get(
        f"{PAPER}/v2/account",
        json=account_payload(),
        match=[matchers.header_matcher({"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET_KEY})],
    )
    auth = paper.authenticate(BrokerCredentials(values={"key_id": KEY_ID, "secret_key": SECRET_KEY}))
    assert auth.expires_at is None
    assert dict(auth.extra) == {"account_id": ACCOUNT_UUID, "account_number": ACCOUNT_NUMBER, "currency": "USD"}
    json.dumps(dict(auth.extra))  # the engine stores the session as JSON
    assert SECRET_MARK not in repr(auth)
    assert paper.refresh_token(auth) is auth
    # Later calls work from the stored session alone.
    assert [a.external_id for a in paper.get_accounts(auth)] == [ACCOUNT_NUMBER]


def test_refused_keys_name_paper_versus_live(paper, rsps):
    rsps.get(f"{PAPER}/v2/account", status=403, json={"message": "forbidden"})
    with pytest.raises(BrokerAuthError) as info:
        paper.authenticate(BrokerCredentials(values={"key_id": KEY_ID, "secret_key": SECRET_KEY}))
    message = str(info.value)
    assert "Paper and live" in message and "Paper trading" in message
    assert SECRET_MARK not in message and info.value.status_code == 403


def test_a_refused_stored_session_is_an_auth_error(paper, rsps):
    rsps.get(f"{PAPER}/v2/account", status=401, json={"message": "request is not authorized"})
    with pytest.raises(BrokerAuthError):
        paper.get_accounts(make_auth())


def test_account_falls_back_to_its_id_and_a_closed_one_is_left_out(paper, rsps):
    rsps.get(f"{PAPER}/v2/account", json=account_payload(account_number="", currency="USD"))
    assert [a.external_id for a in paper.get_accounts(make_auth())] == [ACCOUNT_UUID]
    rsps.replace(responses.GET, f"{PAPER}/v2/account", json=account_payload(status="ACCOUNT_CLOSED"))
    assert paper.get_accounts(make_auth()) == []


def test_paging_follows_page_token_and_stops_on_a_short_page(paper, rsps):
    first = [fill(n) for n in range(100)]
    second = [fill(n) for n in range(100, 137)]
    stub_fill_pages(rsps, [first, second])
    trades = list(paper.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert len(trades) == 137 and len(rsps.calls) == 2
    assert "page_token" not in rsps.calls[0].request.params
    assert rsps.calls[1].request.params["page_token"] == first[-1]["id"]
    assert [t.broker_trade_id for t in trades] == [f["id"] for f in first + second]


def test_a_full_last_page_costs_one_empty_page(paper, rsps):
    full = [fill(n) for n in range(100)]
    stub_fill_pages(rsps, [full, []])
    assert len(list(paper.get_trades(make_auth(), make_account(), SINCE, UNTIL))) == 100
    assert len(rsps.calls) == 2


def test_paging_is_lazy(paper, rsps):
    stub_fill_pages(rsps, [[fill(n) for n in range(100)], [fill(100)]])
    trades = paper.get_trades(make_auth(), make_account(), SINCE, UNTIL)
    assert len(rsps.calls) == 0
    next(trades)
    assert len(rsps.calls) == 1


def test_fill_fields_become_decimal_sides_and_utc(paper, rsps):
    items = [
        {**fill(1), "qty": "0.125", "price": "431.0075", "side": "buy", "type": "partial_fill"},
        {**fill(2), "qty": "3", "side": "sell_short", "transaction_time": "2026-11-03T09:31:02.123456789-05:00"},
        {**fill(3), "qty": "2.5", "side": "sell", "transaction_time": "2026-11-03T15:32:00+01:00"},
    ]
    stub_fill_pages(rsps, [items])
    first, second, third = paper.get_trades(make_auth(), make_account(), SINCE, UNTIL)

    assert first.quantity == Decimal("0.125") and first.price == Decimal("431.0075")
    assert isinstance(first.quantity, Decimal) and isinstance(first.price, Decimal)
    assert first.side == BUY and first.raw["type"] == "partial_fill"
    assert first.fees == Decimal("0") and first.currency == "USD"
    assert first.order_id == items[0]["order_id"] and first.raw == items[0]

    assert second.side == SELL and second.quantity == Decimal("3")
    assert second.executed_at == datetime(2026, 11, 3, 14, 31, 2, 123456, tzinfo=UTC)
    assert second.executed_at.tzinfo is UTC

    assert third.side == SELL and third.quantity == Decimal("2.5")
    assert third.executed_at == datetime(2026, 11, 3, 14, 32, tzinfo=UTC)


def test_an_unreadable_fill_is_left_out_and_counted_and_the_others_kept(paper, rsps):
    stub_fill_pages(rsps, [[{**fill(1), "side": "exercise"}, fill(2)]])
    trades = list(paper.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert [t.broker_trade_id for t in trades] == [fill(2)["id"]]
    assert paper.unreadable_rows == [f"fill {fill(1)['id']}: no side, quantity, price or time we can read"]


def test_429_waits_until_x_ratelimit_reset_for_this_key_only(paper, rsps):
    reset = int(time.time()) + 45
    rsps.get(
        FILLS_URL,
        status=429,
        body="too many requests.",
        headers={"X-Ratelimit-Limit": "200", "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": str(reset)},
    )
    with pytest.raises(BrokerRateLimitError) as info:
        next(paper.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert 40 <= info.value.retry_after <= 45
    limiter = ratelimit.get_limiter()
    assert limiter.try_acquire("alpaca", scope=scope_for(KEY_ID)) > 35
    assert limiter.try_acquire("alpaca", scope=scope_for("another-key")) == 0


def test_calls_count_against_the_key_s_own_bucket(paper, rsps):
    rsps.get(f"{PAPER}/v2/account", json=account_payload())
    paper.get_accounts(make_auth())
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert client.zcard(f"rl:alpaca:requests:{scope_for(KEY_ID)}") == 1
    assert not client.exists("rl:alpaca:requests")


@pytest.mark.parametrize(("environment", "base"), [("paper", PAPER), ("live", LIVE), ("", PAPER)])
def test_environment_chooses_the_host(environment, base, rsps):
    rsps.get(f"{base}/v2/account", json=account_payload())
    stub_fill_pages(rsps, [[fill(1)]], base=base)
    provider = get_broker_provider("alpaca", environment)
    assert provider.get_accounts(make_auth())
    assert len(list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))) == 1
    assert {c.request.url.split("/v2/")[0] for c in rsps.calls} == {base}


def test_base_url_setting_overrides_both_environments(rsps):
    rsps.get("http://alpaca.local:8080/v2/account", json=account_payload())
    with override_settings(BROKER_BASE_URLS={"alpaca": "http://alpaca.local:8080"}):
        provider = get_broker_provider("alpaca", "live")
        assert provider.get_accounts(make_auth())


def test_no_secret_reaches_the_log(paper, rsps, caplog):
    rsps.get(f"{PAPER}/v2/account", json=account_payload())
    rsps.get(FILLS_URL, status=429, headers={"X-Ratelimit-Reset": str(int(time.time()) + 30)})
    with caplog.at_level("INFO"):
        paper.authenticate(BrokerCredentials(values={"key_id": KEY_ID, "secret_key": SECRET_KEY}))
        with pytest.raises(BrokerRateLimitError):
            list(paper.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert "broker_http" in caplog.text and "rate_limit_block" in caplog.text
    assert SECRET_MARK not in caplog.text


def test_long_and_short_positions_come_back_signed_with_their_average_price(paper, rsps):
    rsps.get(
        f"{PAPER}/v2/positions",
        json=[
            {"symbol": "AAPL", "qty": "10", "side": "long", "avg_entry_price": "231.45", "current_price": "233.1"},
            {"symbol": "TSLA", "qty": "-5", "side": "short", "avg_entry_price": "250.10"},
        ],
    )
    positions = paper.get_positions(make_auth(), make_account())
    assert [(p.symbol, p.quantity, p.average_price) for p in positions] == [
        ("AAPL", Decimal("10"), Decimal("231.45")),
        ("TSLA", Decimal("-5"), Decimal("250.10")),
    ]
    # The broker's price values the open position (unrealised P&L); none given, none assumed.
    assert [p.mark_price for p in positions] == [Decimal("233.1"), None]


def test_a_position_we_cannot_read_is_an_error_a_retry_may_cure(paper, rsps):
    rsps.get(f"{PAPER}/v2/positions", json=[{"symbol": "AAPL", "qty": "ten"}])
    with pytest.raises(BrokerAPIError) as info:
        paper.get_positions(make_auth(), make_account())
    assert info.value.transient and "position" in str(info.value)


class TestAlpacaConnectContract(TestAlpacaContract):
    """Alpaca Connect: the same calls with the sign-in's Bearer token instead of the key pair."""

    provider_key = "alpaca_connect"
    connect_token = f"connect-{SECRET_MARK}"

    def stub_credentials(self):
        return BrokerCredentials(values={}, environment="paper")

    def auth(self):
        return AuthResult(token=self.connect_token)

    def stub_accounts(self, rsps):
        rsps.get(
            f"{PAPER}/v2/account",
            json=account_payload(),
            match=[matchers.header_matcher({"Authorization": f"Bearer {self.connect_token}"})],
        )
        return [ACCOUNT_NUMBER]

    def limiter_scope(self):
        return scope_for(self.connect_token)
