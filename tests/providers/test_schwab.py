"""Charles Schwab on the shared contract, plus its windows, fee lines, options and token renewal."""

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from responses import matchers

from brokers.providers import schwab
from brokers.providers.errors import BrokerAPIError, BrokerAuthError
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import SELL, AuthResult, BrokerAccountInfo, BrokerCredentials
from journal.reconciling import position_differences
from tests.factories import account_with
from tests.fakes.schwab import ACCOUNTS, SchwabSim, configure_app, equity_trade, option_trade
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract

# Outside the contract class, a stub a test never reaches fails it (tests/conftest.py's rsps).
RSPS_ALL_FIRED = True
API = "https://api.schwabapi.com/trader/v1"
TOKEN_URL = "https://api.schwabapi.com/v1/oauth/token"
HASH = "E5B8F2A6C1D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F9"
ACCESS = f"access-{SECRET_MARK}"
REFRESH = f"refresh-{SECRET_MARK}"


@pytest.fixture(autouse=True)
def schwab_app(settings):
    settings.BROKER_OAUTH_APPS = {"schwab": {"client_id": "app-id", "client_secret": f"app-{SECRET_MARK}"}}
    settings.OAUTH_CALLBACK_URL = "https://journal.example.com/brokers/oauth/callback/"


def make_auth(**overrides):
    now = datetime.now(UTC)
    values = dict(
        token=ACCESS,
        expires_at=now + timedelta(minutes=30),
        issued_at=now,
        refresh_token=REFRESH,
        refresh_expires_at=now + timedelta(days=7),
    )
    return AuthResult(**(values | overrides))


def make_account():
    return BrokerAccountInfo(external_id=HASH, name="Schwab ····5678")


def transactions_url(account=HASH):
    return f"{API}/accounts/{account}/transactions"


def token_answer(access="new-access", refresh=REFRESH):
    return {"expires_in": 1800, "token_type": "Bearer", "refresh_token": refresh, "access_token": access}


class TestSchwabContract(ProviderContract):
    provider_key = "schwab"

    def stub_credentials(self):
        return BrokerCredentials(values={})

    def stub_login_ok(self, rsps):
        rsps.post(TOKEN_URL, json=token_answer())

    def stub_login_refused(self, rsps):
        pass

    def auth(self):
        return make_auth()

    def stub_accounts(self, rsps):
        rsps.get(
            f"{API}/accounts/accountNumbers",
            json=[{"accountNumber": "12345678", "hashValue": HASH}, {"accountNumber": "87654321", "hashValue": "H2"}],
        )
        return [HASH, "H2"]

    def account(self):
        return make_account()

    def stub_trades(self, rsps, account):
        # SINCE..UNTIL fits one window; the windows of a longer range are tested below.
        rsps.get(transactions_url(), json=[equity_trade(1), equity_trade(2, amount=-5), option_trade(3)])
        return 3

    def stub_server_error(self, rsps):
        rsps.get(f"{API}/accounts/accountNumbers", status=500)

    def stub_rate_limited(self, rsps, retry_after):
        rsps.get(f"{API}/accounts/accountNumbers", status=429, headers={"Retry-After": str(retry_after)})


@pytest.fixture
def provider():
    return get_broker_provider("schwab")


def test_accounts_are_called_by_hash_and_named_by_the_last_four_digits_only(provider, rsps):
    rsps.get(f"{API}/accounts/accountNumbers", json=[{"accountNumber": "12345678", "hashValue": HASH}])
    [account] = provider.get_accounts(make_auth())
    assert account.external_id == HASH
    assert account.name == "Schwab ····5678" and "1234" not in account.name
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS}"


def test_fee_lines_are_summed_into_one_trade_and_never_become_trades(provider, rsps):
    rsps.get(transactions_url(), json=[equity_trade(7, amount=-5, price=100.0)])
    [trade] = provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)
    assert (trade.symbol, trade.side, trade.quantity, trade.price) == ("AAPL", SELL, Decimal("5"), Decimal("100.0"))
    assert trade.fees == Decimal("0.67")  # commission 0.65 + SEC fee 0.02
    assert trade.executed_at == datetime(2026, 11, 3, 14, 30, tzinfo=UTC)
    assert trade.order_id == "900007" and trade.asset_class == "STK" and trade.multiplier == 1


def test_an_option_carries_underlying_expiry_strike_right_and_multiplier(provider, rsps):
    rsps.get(transactions_url(), json=[option_trade(9)])
    [trade] = provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)
    assert (trade.symbol, trade.asset_class, trade.side) == ("AAPL", "OPT", SELL)
    assert (trade.expiry, trade.strike, trade.option_right) == (date(2026, 11, 20), Decimal("230.0"), "C")
    assert trade.multiplier == Decimal("100") and trade.fees == Decimal("0.68")


def test_a_long_range_is_asked_for_in_windows_within_the_maximum(provider, rsps):
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    rsps.get(transactions_url(), json=[])
    list(provider.get_trades(make_auth(), make_account(), since, until))
    windows = []
    for call in rsps.calls:
        params = {k: v[0] for k, v in parse_qs(urlparse(call.request.url).query).items()}
        assert params["types"] == "TRADE"
        start = datetime.fromisoformat(params["startDate"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(params["endDate"].replace("Z", "+00:00"))
        assert end - start <= schwab.WINDOW
        windows.append((start, end))
    assert windows[0][0] == since and windows[-1][1] == until and len(windows) == 4
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False)), "windows leave no gap"


def test_a_full_answer_is_fetched_again_in_halves(provider, rsps, monkeypatch):
    monkeypatch.setattr(schwab, "MAX_TRANSACTIONS_PER_ANSWER", 2)
    full = [equity_trade(1), equity_trade(2)]
    rsps.get(transactions_url(), json=full)  # the whole window: full, so split
    rsps.get(transactions_url(), json=[equity_trade(1)])
    rsps.get(transactions_url(), json=[equity_trade(2)])
    trades = list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert [t.broker_trade_id for t in trades] == ["1", "2"] and len(rsps.calls) == 3


def test_refresh_keeps_the_hard_end_from_the_sign_in(provider, rsps):
    auth = make_auth(expires_at=datetime.now(UTC) + timedelta(minutes=5))
    rsps.post(
        TOKEN_URL,
        json=token_answer(),
        match=[matchers.urlencoded_params_matcher({"grant_type": "refresh_token", "refresh_token": REFRESH})],
    )
    renewed = provider.refresh_token(auth)
    assert renewed.token == "new-access" and renewed.refresh_token == REFRESH
    assert renewed.refresh_expires_at == auth.refresh_expires_at
    assert timedelta(minutes=29) < renewed.expires_at - datetime.now(UTC) <= timedelta(minutes=30)
    assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_a_link_past_its_hard_end_asks_to_reconnect_without_calling_schwab(provider, rsps):
    auth = make_auth(refresh_expires_at=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(BrokerAuthError, match="Press Reconnect"):
        provider.refresh_token(auth)
    assert len(rsps.calls) == 0


def test_a_refused_refresh_asks_to_reconnect_without_secrets(provider, rsps):
    rsps.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})
    with pytest.raises(BrokerAuthError, match="Press Reconnect") as info:
        provider.refresh_token(make_auth())
    assert SECRET_MARK not in str(info.value)


def test_a_refused_access_token_is_an_auth_error(provider, rsps):
    rsps.get(f"{API}/accounts/accountNumbers", status=401)
    with pytest.raises(BrokerAuthError):
        provider.get_accounts(make_auth())


def positions_answer(*positions):
    return {"securitiesAccount": {"type": "MARGIN", "accountNumber": "12345678", "positions": list(positions)}}


def held(instrument, long=0.0, short=0.0, **fields):
    return {"instrument": instrument, "longQuantity": long, "shortQuantity": short, **fields}


OPTION = {
    "assetType": "OPTION",
    "cusip": "0AAPL.KK60230000",
    "symbol": "AAPL  261120C00230000",
    "putCall": "CALL",
    "underlyingSymbol": "AAPL",
    "type": "VANILLA",
}


def test_positions_are_long_less_short_with_options_named_as_their_fills(provider, rsps):
    rsps.get(
        f"{API}/accounts/{HASH}",
        match=[matchers.query_param_matcher({"fields": "positions"})],
        json=positions_answer(
            held({"assetType": "EQUITY", "symbol": "AAPL", "cusip": "037833100"}, long=10, averageLongPrice=231.45),
            held({"assetType": "EQUITY", "symbol": "TSLA"}, short=3, averageShortPrice=250.5, averagePrice=250.4),
            held(OPTION, short=1, averagePrice=2.5),
            held({"assetType": "EQUITY", "symbol": "MSFT"}),
            held({"assetType": "CASH_EQUIVALENT", "symbol": "MMDA1"}, long=1520.33),
        ),
    )
    positions = provider.get_positions(make_auth(), make_account())
    assert [(p.symbol, p.quantity, p.average_price) for p in positions] == [
        ("AAPL", Decimal(10), Decimal("231.45")),
        ("TSLA", Decimal(-3), Decimal("250.5")),
        ("AAPL", Decimal(-1), Decimal("2.5")),
    ]
    option = positions[2]
    assert (option.expiry, option.strike, option.option_right) == (date(2026, 11, 20), Decimal(230), "C")
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS}"


def test_an_account_without_positions_is_flat(provider, rsps):
    rsps.get(f"{API}/accounts/{HASH}", json={"securitiesAccount": {"type": "CASH", "accountNumber": "12345678"}})
    assert provider.get_positions(make_auth(), make_account()) == []


def test_a_position_we_cannot_read_skips_the_comparison_with_an_error(provider, rsps):
    rsps.get(f"{API}/accounts/{HASH}", json=positions_answer(held({**OPTION, "symbol": "AAPL CALL"}, long=1)))
    with pytest.raises(BrokerAPIError, match="position"):
        provider.get_positions(make_auth(), make_account())


@pytest.mark.django_db
def test_the_loopback_schwab_s_positions_agree_with_its_fills_in_the_journal(settings, trader):
    with SchwabSim() as sim:
        configure_app(settings, sim, "https://journal.example.com/brokers/oauth/callback/")
        first = ACCOUNTS[0][1]
        sim.transactions[first] = [equity_trade(1), equity_trade(2, amount=-4, price=232.0), option_trade(3)]
        token = "sim-access-token"
        sim.access[token] = time.time() + 600
        auth, account = make_auth(token=token), BrokerAccountInfo(external_id=first, name="Schwab ····5678")
        provider = get_broker_provider("schwab")
        fills = list(provider.get_trades(auth, account, SINCE - timedelta(days=400), datetime.now(UTC)))
        positions = provider.get_positions(auth, account)
    journal = account_with(trader, fills, external_id=first)
    assert [(p.symbol, p.quantity) for p in positions] == [("AAPL", Decimal(6)), ("AAPL", Decimal(-1))]
    assert position_differences(journal.pk, positions, read_at=datetime.now(UTC)) == []
