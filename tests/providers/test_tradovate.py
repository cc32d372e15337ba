"""Tradovate on the shared contract, plus its quirks: errorText logins, penalty tickets, lockouts, orphan fills."""

import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from brokers.providers import firms, tradovate
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, BrokerConfigurationError, BrokerRateLimitError
from brokers.providers.ratelimit import get_limiter, scope_for
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import BUY, SELL, AuthResult, BrokerAccountInfo, BrokerCredentials
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract

USERNAME = "jdoe"
ACCOUNT_ID = 101
OTHER_ACCOUNT_ID = 202
ES, MNQ = 3001, 3002


def base() -> str:
    return get_broker_provider("tradovate", "demo").base_url()


def url(path: str) -> str:
    return base() + path


def credentials() -> BrokerCredentials:
    return BrokerCredentials(
        values={
            "username": USERNAME,
            "password": f"pw-{SECRET_MARK}",
            "app_id": "TradeJournal",
            "app_version": "1.0",
            "cid": "4321",
            "sec": f"sec-{SECRET_MARK}",
        },
        environment="demo",
    )


def session(token: str = "token-1") -> AuthResult:
    return AuthResult(
        token=token,
        expires_at=datetime.now(UTC) + timedelta(minutes=80),
        extra={"limit_scope": scope_for(USERNAME), "userId": 77},
    )


def login_body(token: str = "token-1", expires: str = "2026-11-10T15:40:30.056Z") -> dict:
    return {
        "accessToken": token,
        "mdAccessToken": f"md-{token}",
        "expirationTime": expires,
        "userStatus": "Active",
        "userId": 77,
        "name": USERNAME,
        "hasLive": False,
    }


class FakeTradovate:
    """Tradovate's entity endpoints over an in-memory data set, in the documented formats."""

    def __init__(self):
        self.fills: list[dict] = []
        self.entities: dict[str, dict[int, dict]] = {
            "order": {},
            "contract": {
                ES: {"id": ES, "name": "ESZ6", "contractMaturityId": 51},
                MNQ: {"id": MNQ, "name": "MNQH7", "contractMaturityId": 52},
            },
            "contractMaturity": {
                51: {"id": 51, "productId": 61, "expirationMonth": 202612, "isFront": True},
                52: {"id": 52, "productId": 62, "expirationMonth": 202703, "isFront": False},
            },
            "product": {
                61: {"id": 61, "name": "ES", "valuePerPoint": 50, "tickSize": 0.25, "currencyId": 1},
                62: {"id": 62, "name": "MNQ", "valuePerPoint": 2, "tickSize": 0.25, "currencyId": 1},
            },
            "fillFee": {},
        }

    def add_fill(
        self,
        fill_id,
        *,
        account_id=ACCOUNT_ID,
        contract_id=ES,
        at=None,
        action="Buy",
        qty=1,
        price=5901.25,
        active=True,
        fees=None,
    ):
        at = at or SINCE + timedelta(minutes=fill_id % 10_000)
        order_id = 900_000 + fill_id
        self.entities["order"][order_id] = {
            "id": order_id,
            "accountId": account_id,
            "contractId": contract_id,
            "action": action,
            "ordStatus": "Filled",
            "admin": False,
        }
        self.fills.append(
            {
                "id": fill_id,
                "orderId": order_id,
                "contractId": contract_id,
                "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "tradeDate": {"year": at.year, "month": at.month, "day": at.day},
                "action": action,
                "qty": qty,
                "price": price,
                "active": active,
                "finallyPaired": 0,
            }
        )
        self.entities["fillFee"][fill_id] = {
            "id": fill_id,
            "commission": 0.59,
            "clearingFee": 0.19,
            "exchangeFee": 1.38,
            "nfaFee": 0.02,
            "brokerageFee": None,
            "ipFee": None,
            "orderRoutingFee": None,
            **(fees or {}),
        }

    def register(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.GET, url("/fill/list"), callback=lambda r: (200, {}, json.dumps(self.fills)))
        rsps.add_callback(responses.GET, re.compile(re.escape(base()) + r"/(\w+)/items"), callback=self._items)

    def _items(self, request):
        entity = urlparse(request.url).path.rsplit("/", 2)[-2]
        ids = [int(i) for i in parse_qs(urlparse(request.url).query)["ids"][0].split(",")]
        store = self.entities[entity]
        return 200, {}, json.dumps([store[i] for i in ids if i in store])


def stub_accounts(rsps):
    rsps.add(
        responses.GET,
        url("/account/list"),
        json=[
            {
                "id": ACCOUNT_ID,
                "name": "DEMO90001",
                "userId": 77,
                "accountType": "Customer",
                "active": True,
                "closed": False,
                "timestamp": "2026-01-05T10:00:00Z",
            },
            {
                "id": 102,
                "name": "DEMO90002",
                "userId": 77,
                "accountType": "Customer",
                "active": True,
                "closed": True,
                "timestamp": "2026-01-05T10:00:00Z",
            },
            {
                "id": 103,
                "name": "DEMO90003",
                "userId": 77,
                "accountType": "Customer",
                "active": False,
                "closed": False,
                "timestamp": "2026-01-05T10:00:00Z",
            },
            {
                "id": OTHER_ACCOUNT_ID,
                "name": "DEMO90004",
                "userId": 77,
                "accountType": "Customer",
                "active": True,
                "closed": False,
                "timestamp": "2026-01-05T10:00:00Z",
            },
        ],
    )
    return [str(ACCOUNT_ID), str(OTHER_ACCOUNT_ID)]


def account() -> BrokerAccountInfo:
    return BrokerAccountInfo(external_id=str(ACCOUNT_ID), name="DEMO90001")


@pytest.fixture
def provider():
    return get_broker_provider("tradovate", "demo")


@pytest.fixture
def fake(rsps):
    server = FakeTradovate()
    server.register(rsps)
    return server


@pytest.fixture
def block_spy(monkeypatch):
    limiter = get_limiter()
    calls = []
    original = limiter.block

    def spy(broker, seconds, *, scope="", reason=""):
        calls.append((broker, seconds, scope))
        original(broker, seconds, scope=scope, reason=reason)

    monkeypatch.setattr(limiter, "block", spy)
    return calls


class TestTradovateContract(ProviderContract):
    provider_key = "tradovate"
    environment = "demo"

    @pytest.fixture(autouse=True)
    def small_batches(self, monkeypatch):
        monkeypatch.setattr(tradovate, "BATCH_SIZE", 3)

    def stub_credentials(self):
        return credentials()

    def stub_login_ok(self, rsps):
        rsps.add(responses.POST, url("/auth/accesstokenrequest"), json=login_body())
        rsps.add(responses.GET, url("/auth/renewaccesstoken"), json=login_body("token-2"))

    def stub_login_refused(self, rsps):
        rsps.add(
            responses.POST,
            url("/auth/accesstokenrequest"),
            json={"errorText": "Incorrect username or password. Please try again."},
        )

    def auth(self):
        return session()

    def stub_accounts(self, rsps):
        return stub_accounts(rsps)

    def stub_trades(self, rsps, account):
        fake = FakeTradovate()
        fake.register(rsps)
        for n in range(1, 9):
            fake.add_fill(n, contract_id=ES if n % 2 else MNQ, action="Buy" if n % 3 else "Sell")
        fake.add_fill(9, account_id=OTHER_ACCOUNT_ID)
        fake.add_fill(10, active=False)
        return 9  # eight fills and the bust of the tenth

    def stub_server_error(self, rsps):
        rsps.add(responses.GET, url("/account/list"), status=500)

    def stub_rate_limited(self, rsps, retry_after):
        # Tradovate's "wait" is a penalty ticket in a 200 answer, not a Retry-After header.
        rsps.add(responses.GET, url("/account/list"), json={"p-ticket": "tk-contract", "p-time": retry_after})

    def account(self):
        return account()

    def limiter_scope(self):
        return scope_for(USERNAME)


class TestTradovateSigninContract(TestTradovateContract):
    """Tradovate by OAuth sign-in: the same calls; renewal through /auth/renewaccesstoken."""

    provider_key = "tradovate_signin"

    def stub_credentials(self):
        return BrokerCredentials(values={}, environment="demo")


# --- login and session ---------------------------------------------------------------------


def test_login_sends_the_documented_body_and_keeps_the_session(provider, rsps):
    rsps.add(responses.POST, url("/auth/accesstokenrequest"), json=login_body())
    auth = provider.authenticate(credentials())
    body = json.loads(rsps.calls[0].request.body)
    assert body["name"] == USERNAME and body["cid"] == 4321 and body["appId"] == "TradeJournal"
    assert body["deviceId"] and "Authorization" not in rsps.calls[0].request.headers
    assert auth.token == "token-1"
    assert auth.expires_at == datetime(2026, 11, 10, 15, 40, 30, 56000, tzinfo=UTC)
    assert auth.extra["userId"] == 77 and auth.extra["limit_scope"] == scope_for(USERNAME)
    assert "md-token-1" not in repr(auth), "the market-data token is a secret too"
    provider.authenticate(credentials())
    assert json.loads(rsps.calls[1].request.body)["deviceId"] == body["deviceId"], "one stable device id"


def test_error_text_on_200_is_an_auth_error_that_tells_what_to_do(provider, rsps):
    echoed = f"Access is denied for sec-{SECRET_MARK}"
    rsps.add(responses.POST, url("/auth/accesstokenrequest"), json={"errorText": echoed})
    with pytest.raises(BrokerAuthError) as info:
        provider.authenticate(credentials())
    assert "Access is denied" in info.value.message and "save the connection again" in info.value.message
    assert SECRET_MARK not in info.value.message


def test_token_renewal_extends_the_same_session(provider, rsps):
    rsps.add(responses.GET, url("/auth/renewaccesstoken"), json=login_body("token-2", expires="2026-11-10T17:10:00Z"))
    renewed = provider.refresh_token(session("token-1"))
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer token-1"
    assert renewed.token == "token-2"
    assert renewed.expires_at == datetime(2026, 11, 10, 17, 10, tzinfo=UTC)
    assert renewed.extra["limit_scope"] == scope_for(USERNAME)


def test_expired_token_renewal_is_an_auth_error_so_the_engine_logs_in_again(provider, rsps):
    rsps.add(responses.GET, url("/auth/renewaccesstoken"), status=401)
    with pytest.raises(BrokerAuthError):
        provider.refresh_token(session())


def test_cid_must_be_a_number():
    values = {f.name: "x" for f in tradovate.TradovateProvider.credential_fields if f.required}
    problems = tradovate.TradovateProvider.validate_credentials(values, "demo")
    assert set(problems) == {"cid"}
    assert tradovate.TradovateProvider.validate_credentials({**values, "cid": "4321"}, "demo") == {}


# --- penalty tickets and lockouts ------------------------------------------------------------


def test_short_penalty_ticket_waits_then_resends_the_login_with_the_ticket(provider, rsps, block_spy):
    rsps.add(responses.POST, url("/auth/accesstokenrequest"), json={"p-ticket": "tk-42", "p-time": 0.3})
    rsps.add(responses.POST, url("/auth/accesstokenrequest"), json=login_body())
    started = time.monotonic()
    auth = provider.authenticate(credentials())
    assert time.monotonic() - started >= 0.3
    assert auth.token == "token-1"
    first, second = (json.loads(c.request.body) for c in rsps.calls)
    assert "p-ticket" not in first and second["p-ticket"] == "tk-42"
    assert block_spy == [("tradovate", 0.3, "")], "every worker backs off, not just this one"


def test_penalty_ticket_on_a_get_is_resent_with_the_ticket(provider, rsps):
    rsps.add(responses.GET, url("/account/list"), json={"p-ticket": "tk-7", "p-time": 0.1})
    stub_accounts(rsps)
    assert [a.external_id for a in provider.get_accounts(session())] == [str(ACCOUNT_ID), str(OTHER_ACCOUNT_ID)]
    assert parse_qs(urlparse(rsps.calls[1].request.url).query)["p-ticket"] == ["tk-7"]


def test_long_penalty_ticket_raises_and_blocks_everyone(provider, rsps):
    rsps.add(responses.POST, url("/auth/accesstokenrequest"), json={"p-ticket": "tk-9", "p-time": 45})
    with pytest.raises(BrokerRateLimitError) as info:
        provider.authenticate(credentials())
    assert info.value.retry_after == 45 and len(rsps.calls) == 1
    assert "tk-9" not in info.value.message
    assert get_limiter().try_acquire("tradovate") > 40


def test_endless_penalty_tickets_stop_after_a_few_resends(provider, rsps):
    rsps.add(responses.GET, url("/account/list"), json={"p-ticket": "tk", "p-time": 0})
    with pytest.raises(BrokerRateLimitError):
        provider.get_accounts(session())
    assert len(rsps.calls) == tradovate.MAX_PENALTY_RESENDS + 1


def test_captcha_ticket_stops_for_an_hour(provider, rsps, block_spy):
    rsps.add(
        responses.POST, url("/auth/accesstokenrequest"), json={"p-ticket": "tk-c", "p-time": 15, "p-captcha": True}
    )
    with pytest.raises(BrokerRateLimitError) as info:
        provider.authenticate(credentials())
    assert 3000 <= info.value.retry_after <= 3700
    assert "captcha" in info.value.message and "hour" in info.value.message
    assert block_spy == [("tradovate", tradovate.CAPTCHA_WAIT_S, "")]
    assert get_limiter().try_acquire("tradovate") > 3000
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("status", [429, 423])
def test_lockout_without_retry_after_waits_an_hour_for_that_user_only(provider, rsps, status):
    rsps.add(responses.GET, url("/account/list"), status=status, body="")
    with pytest.raises(BrokerRateLimitError) as info:
        provider.get_accounts(session())
    assert 3000 <= info.value.retry_after <= 3700 and info.value.status_code == status
    assert get_limiter().try_acquire("tradovate", scope=scope_for(USERNAME)) > 3000
    assert get_limiter().try_acquire("tradovate", scope=scope_for("someone-else")) == 0


# --- accounts and fills ----------------------------------------------------------------------


def test_closed_and_inactive_accounts_are_skipped(provider, rsps):
    stub_accounts(rsps)
    accounts = provider.get_accounts(session())
    assert [(a.external_id, a.name) for a in accounts] == [("101", "DEMO90001"), ("202", "DEMO90004")]
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer token-1"


def test_a_fill_becomes_a_typed_trade(provider, fake):
    fake.add_fill(
        5, contract_id=ES, action="Sell", qty=3, price=5901.25, at=datetime(2026, 11, 10, 14, 30, 1, 123000, tzinfo=UTC)
    )
    (trade,) = provider.get_trades(session(), account(), SINCE, UNTIL)
    assert trade.broker_trade_id == "5" and trade.order_id == "900005"
    assert trade.symbol == "ESZ6" and trade.side == SELL and trade.asset_class == "FUT"
    assert trade.quantity == Decimal(3) and trade.price == Decimal("5901.25")
    assert trade.multiplier == Decimal(50) and trade.currency == "USD"
    assert trade.executed_at == datetime(2026, 11, 10, 14, 30, 1, 123000, tzinfo=UTC)
    assert trade.raw["id"] == 5


def test_fees_are_summed_and_nulls_count_as_zero(provider, fake):
    fake.add_fill(1)
    fake.add_fill(2, fees={"commission": None, "clearingFee": None, "exchangeFee": None, "nfaFee": None})
    fake.add_fill(3, fees={"brokerageFee": 0.1, "ipFee": 0.05, "orderRoutingFee": 0.01})
    fees = {t.broker_trade_id: t.fees for t in provider.get_trades(session(), account(), SINCE, UNTIL)}
    assert fees == {"1": Decimal("2.18"), "2": Decimal(0), "3": Decimal("2.34")}


def test_a_busted_fill_comes_as_a_bust_and_other_accounts_fills_are_left_out(provider, fake, rsps):
    fake.add_fill(1)
    fake.add_fill(2, active=False)
    fake.add_fill(3, account_id=OTHER_ACCOUNT_ID)
    fake.add_fill(4, action="Buy")
    trades = list(provider.get_trades(session(), account(), SINCE, UNTIL))
    assert [(t.broker_trade_id, t.side, t.busted) for t in trades] == [
        ("1", BUY, False),
        ("2", BUY, True),
        ("4", BUY, False),
    ]
    fee_lookups = [c.request.url for c in rsps.calls if "/fillFee/items" in c.request.url]
    assert all("2" not in parse_qs(urlparse(url).query)["ids"][0].split(",") for url in fee_lookups)


def test_positions_are_the_accounts_own_named_like_its_fills_without_the_flat_rows(provider, fake, rsps):
    rsps.get(
        url("/position/list"),
        json=[
            {"id": 1, "accountId": ACCOUNT_ID, "contractId": ES, "netPos": 2, "netPrice": 5901.25},
            {"id": 2, "accountId": ACCOUNT_ID, "contractId": MNQ, "netPos": 0, "netPrice": None},
            {"id": 3, "accountId": OTHER_ACCOUNT_ID, "contractId": MNQ, "netPos": -1, "netPrice": 21000.5},
        ],
    )
    positions = provider.get_positions(session(), account())
    assert [(p.symbol, p.quantity, p.average_price) for p in positions] == [("ESZ6", Decimal(2), Decimal("5901.25"))]


def test_every_listed_fill_within_max_history_is_passed_on_not_just_those_since_the_cursor(provider, fake):
    fake.add_fill(1, at=UNTIL - provider.max_history - timedelta(seconds=1))  # beyond any first sync's reach
    fake.add_fill(2, at=SINCE - timedelta(days=2))  # reported late: older than the window asked for
    fake.add_fill(3, at=SINCE)
    fake.add_fill(4, at=UNTIL)
    fake.add_fill(5, at=UNTIL + timedelta(seconds=1))  # executed while this sync ran
    ids = [t.broker_trade_id for t in provider.get_trades(session(), account(), SINCE, UNTIL)]
    assert ids == ["2", "3", "4", "5"]


def _calls_for(provider, rsps, fake, count):
    for n in range(1, count + 1):
        fake.add_fill(n, contract_id=ES if n % 2 else MNQ)
    before = len(rsps.calls)
    trades = list(provider.get_trades(session(), account(), SINCE, UNTIL))
    assert len(trades) == count
    return len(rsps.calls) - before


def test_related_entities_are_fetched_in_batches_not_per_fill(provider, rsps):
    few, many = FakeTradovate(), FakeTradovate()
    few.register(rsps)
    # list, orders, fees, contracts, maturities, products: six calls whether 2 fills or 100.
    assert _calls_for(provider, rsps, few, 2) == 6
    rsps.reset()
    many.register(rsps)
    assert _calls_for(provider, rsps, many, tradovate.BATCH_SIZE) == 6
    rsps.reset()
    more = FakeTradovate()
    more.register(rsps)
    # 250 fills: three batches of orders and fees; contracts are already known after the first.
    assert _calls_for(provider, rsps, more, 250) == 1 + 3 + 3 + 3
    ids_per_call = [len(parse_qs(urlparse(c.request.url).query)["ids"][0].split(",")) for c in rsps.calls[1:]]
    assert max(ids_per_call) == tradovate.BATCH_SIZE


def test_error_text_on_a_data_call_is_an_api_error(provider, rsps):
    rsps.add(responses.GET, url("/fill/list"), json={"errorText": "Access denied"})
    with pytest.raises(BrokerAPIError) as info:
        list(provider.get_trades(session(), account(), SINCE, UNTIL))
    assert "Access denied" in info.value.message


def test_an_order_missing_from_the_answer_is_a_transient_error(provider, fake):
    fake.add_fill(1)
    fake.entities["order"].clear()
    with pytest.raises(BrokerAPIError) as info:
        list(provider.get_trades(session(), account(), SINCE, UNTIL))
    assert info.value.transient


# --- organisation hosts (tests/providers/test_tradovate_hosts.py runs them against the loopback) ---------------
def test_a_renewal_naming_hosts_replaces_the_stored_ones_and_one_without_keeps_them(provider, rsps):
    moved = "https://demo-acme.tradovateapi.com"
    renewal = rsps.get(url("/auth/renewaccesstoken"), json={**login_body("token-2"), "apiHosts": {"demo": moved}})
    renewed = provider.refresh_token(session())
    assert renewed.extra["api_hosts"] == {"demo": f"{moved}/v1"}
    rsps.get(f"{moved}/v1/account/list", json=[])
    assert provider.get_accounts(renewed) == []

    rsps.remove(renewal)
    rsps.get(f"{moved}/v1/auth/renewaccesstoken", json=login_body("token-3"))
    assert provider.refresh_token(renewed).extra["api_hosts"] == {"demo": f"{moved}/v1"}


# --- prop firms whose accounts are Tradovate accounts -----------------------------------------
def test_an_operator_file_adds_prop_firms_to_the_shipped_table(tmp_path):
    extra = tmp_path / "firms.toml"
    extra.write_text('[newfirm]\nname = "New Firm"\n\n[apex]\nname = "Apex"\n')
    found = firms.load_firms(tradovate.FIRMS_FILE, str(extra), "TRADOVATE_FIRMS_FILE")
    assert found["newfirm"] == {"name": "New Firm"} and found["apex"] == {"name": "Apex"}
    assert found["takeprofittrader"] == {"name": "Take Profit Trader"}
    assert tradovate.FIRMS == firms.load_firms(tradovate.FIRMS_FILE, "", "TRADOVATE_FIRMS_FILE")


def test_an_operator_file_with_a_nameless_firm_names_the_setting(tmp_path):
    extra = tmp_path / "firms.toml"
    extra.write_text('[nameless]\nname = "  "\n')
    with pytest.raises(BrokerConfigurationError, match="TRADOVATE_FIRMS_FILE.*firm \\[nameless\\] needs a name"):
        firms.load_firms(tradovate.FIRMS_FILE, str(extra), "TRADOVATE_FIRMS_FILE")
