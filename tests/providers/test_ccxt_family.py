"""The ccxt family on the shared contract (Kraken, Binance, OKX), plus its own rules."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings

from brokers.providers import ratelimit
from brokers.providers.ccxt.transport import call
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, BrokerRateLimitError, BrokerUnavailableError
from brokers.providers.ratelimit import scope_for
from brokers.providers.registry import get_broker_provider, provider_classes
from brokers.providers.types import BUY, SELL, AuthResult, BrokerAccountInfo, BrokerCredentials
from journal.reconciling import position_differences
from tests.factories import account_with
from tests.providers.ccxt_exchanges import (
    API_KEY,
    OKX_SPOT,
    OKX_SWAP,
    PASSPHRASE,
    SECRET,
    Binance,
    Bybit,
    Coinbase,
    Kraken,
    Okx,
    coinbase_secret,
    okx_fill,
    query,
    spread,
)
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract

FIXTURES = Path(__file__).with_name("peer_fixtures")


@pytest.fixture(autouse=True)
def hundredfold_pace(monkeypatch):
    """The exchanges' real pace (Kraken: one trades page per 7.5 s) with time shrunk 100 times.

    test_pacing_follows_the_endpoint_cost checks the shipped numbers themselves.
    """
    limiter = ratelimit.get_limiter()
    faster = {
        broker: tuple(replace(b, limit=b.limit * 100) for b in buckets) if broker.startswith("ccxt_") else buckets
        for broker, buckets in limiter.limits.items()
    }
    monkeypatch.setattr(limiter, "limits", faster)


class CcxtContract(ProviderContract):
    """The contract for one ccxt exchange, answered by a fake in its documented formats."""

    fake_class: type
    fills = 120

    def fake(self):
        return self.fake_class(spread(self.fills))

    def keys(self) -> dict[str, str]:
        return {"apiKey": API_KEY, "secret": SECRET}

    def stub_credentials(self):
        return BrokerCredentials(values=self.keys(), environment=self.environment)

    def auth(self):
        return AuthResult(token=json.dumps(self.keys()))

    def account(self):
        return BrokerAccountInfo(external_id="spot", name="spot")

    def stub_login_ok(self, rsps):
        fake = self.fake()
        fake.stub_markets(rsps)
        fake.stub_balance(rsps)

    def stub_login_refused(self, rsps):
        fake = self.fake()
        fake.stub_markets(rsps)
        fake.stub_balance(rsps, **fake.refused())

    def stub_accounts(self, rsps):
        self.stub_login_ok(rsps)
        return ["spot"]

    def stub_trades(self, rsps, account):
        fake = self.fake()
        fake.stub_markets(rsps)
        fake.stub_balance(rsps)
        fake.stub_trades(rsps)
        return self.expected_trades()

    def expected_trades(self) -> int:
        return self.fills

    def stub_server_error(self, rsps):
        fake = self.fake()
        fake.stub_markets(rsps)
        fake.stub_balance(rsps, **fake.server_error())

    def stub_rate_limited(self, rsps, retry_after):
        fake = self.fake()
        fake.stub_markets(rsps)
        fake.stub_balance(rsps, **fake.rate_limited())

    def limiter_scope(self):
        return scope_for(API_KEY)

    def test_maintenance_is_unavailable_not_an_error_of_ours(self, provider, rsps):
        fake = self.fake()
        fake.stub_markets(rsps)
        fake.stub_balance(rsps, **fake.maintenance())
        with pytest.raises(BrokerUnavailableError) as info:
            provider.get_accounts(self.auth())
        assert info.value.transient and SECRET_MARK not in str(info.value)

    def test_no_secret_in_any_log_line_even_at_debug(self, provider, rsps, caplog):
        self.stub_trades(rsps, self.account())
        with caplog.at_level("DEBUG"):
            provider.authenticate(self.stub_credentials())
            list(provider.get_trades(self.auth(), self.account(), SINCE, UNTIL))
        assert "broker_http" in caplog.text
        for secret in self.keys().values():
            assert secret not in caplog.text
        assert SECRET_MARK not in caplog.text

    def test_requests_carry_our_user_agent_and_book_the_endpoint_cost(self, provider, rsps):
        self.stub_accounts(rsps)
        provider.get_accounts(self.auth())
        assert {c.request.headers["User-Agent"] for c in rsps.calls} == {settings.BROKER_HTTP_USER_AGENT}
        booked = redis.Redis.from_url(settings.REDIS_URL).zcard(
            f"rl:{self.provider_key}:requests:{self.limiter_scope()}"
        )
        # Every request took at least one slot; costs above one took more.
        assert booked >= len(rsps.calls) > 0


class TestKraken(CcxtContract):
    provider_key = "ccxt_kraken"
    fake_class = Kraken


class TestBinance(CcxtContract):
    """Binance lists trades per symbol only: the sync asks for each market the balances hold."""

    provider_key = "ccxt_binance"
    environment = "live"
    fake_class = Binance
    fills = 600  # more than Binance's 500 a page

    def expected_trades(self):
        return 2 * self.fills  # BTC/USDT and ETH/USDT are held; SOL (zero balance) is not asked for


class TestOkx(CcxtContract):
    provider_key = "ccxt_okx"
    environment = "live"
    fake_class = Okx

    def keys(self):
        return {"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE}


class TestBybit(CcxtContract):
    provider_key = "ccxt_bybit"
    environment = "live"
    fake_class = Bybit


class TestCoinbaseAdvanced(CcxtContract):
    """Coinbase Advanced Trade: a CDP key name and its EC private key; ccxt signs a JWT per request."""

    provider_key = "ccxt_coinbase"
    fake_class = Coinbase
    pem = coinbase_secret()

    def keys(self):
        return {"apiKey": f"organizations/{SECRET_MARK}/apiKeys/k1", "secret": self.pem}

    def limiter_scope(self):
        return scope_for(self.keys()["apiKey"])


def test_kraken_fills_are_exact_with_fee_currency_side_and_utc(rsps):
    fake = Kraken(spread(3))
    fake.stub_markets(rsps)
    fake.stub_trades(rsps)
    provider = get_broker_provider("ccxt_kraken")
    trades = list(
        provider.get_trades(
            AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET})),
            BrokerAccountInfo("spot", "spot"),
            SINCE,
            UNTIL,
        )
    )
    newest = trades[0]
    raw = fake.fills[-1]
    assert newest.symbol == "BTC/USD" and newest.currency == "USD" and newest.asset_class == "CRYPTO"
    assert newest.price == Decimal("30010.1") and newest.quantity == Decimal("0.02")
    assert newest.fees == Decimal("0.96032") and newest.fee_currency == "USD"
    assert newest.side == (BUY if raw["type"] == "buy" else SELL)
    assert newest.executed_at.timestamp() == pytest.approx(raw["time"], abs=0.001)
    assert newest.order_id == raw["ordertxid"] and newest.raw["takerOrMaker"] in ("maker", "taker")


def test_binance_asks_only_for_held_markets_and_keeps_per_symbol_ids_apart(rsps):
    fake = Binance(spread(3))
    fake.stub_markets(rsps)
    fake.stub_balance(rsps)
    fake.stub_trades(rsps)
    provider = get_broker_provider("ccxt_binance", "live")
    auth = AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET}))
    trades = list(provider.get_trades(auth, BrokerAccountInfo("spot", "spot"), SINCE, UNTIL))
    asked = {c.request.params.get("symbol") for c in rsps.calls if "/myTrades" in c.request.url}
    assert asked == {"BTCUSDT", "ETHUSDT"}
    assert len({t.broker_trade_id for t in trades}) == 6, "the same id on two symbols is two trades"
    assert {t.fee_currency for t in trades} == {"BNB"} and all(t.fees == Decimal("10.1") for t in trades)


def test_markets_are_fetched_once_for_every_worker(rsps):
    fake = Kraken(spread(2))
    fake.stub_markets(rsps)
    fake.stub_balance(rsps)
    auth = AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET}))
    for _ in range(3):
        get_broker_provider("ccxt_kraken").get_accounts(auth)
    assert sum("AssetPairs" in c.request.url for c in rsps.calls) == 1


def test_a_429_blocks_the_key_on_every_worker_and_keeps_other_keys_going(rsps):
    fake = Binance(spread(2))
    fake.stub_markets(rsps)
    fake.stub_balance(rsps, **fake.rate_limited())
    provider = get_broker_provider("ccxt_binance", "live")
    with pytest.raises(BrokerRateLimitError) as info:
        provider.get_accounts(AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET})))
    assert info.value.retry_after == 120
    limiter = ratelimit.get_limiter()
    assert limiter.try_acquire("ccxt_binance", scope=scope_for(API_KEY)) > 100
    assert limiter.try_acquire("ccxt_binance", scope=scope_for("another key")) == 0


def test_refused_key_says_what_to_check_without_the_key(rsps):
    fake = Okx(spread(1))
    fake.stub_markets(rsps)
    fake.stub_balance(rsps, **fake.refused())
    with pytest.raises(BrokerAuthError) as info:
        get_broker_provider("ccxt_okx", "live").authenticate(
            BrokerCredentials({"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE})
        )
    assert "passphrase" in str(info.value) and SECRET_MARK not in str(info.value)


def test_the_family_declares_each_exchange_in_the_trader_s_words():
    classes = provider_classes()
    okx, kraken, binance = classes["ccxt_okx"], classes["ccxt_kraken"], classes["ccxt_binance"]
    assert [f.label for f in okx.credential_fields] == ["API key", "API secret", "API passphrase"]
    assert "not your login password" in okx.credential_fields[2].help_text
    assert kraken.display_name == "Kraken" and kraken.environments == ()
    assert dict(binance.environments) == {"live": "Live", "sandbox": "Sandbox"}
    assert sum(key.startswith("ccxt_") for key in classes) == 93
    assert "ccxt_derive" not in classes and "ccxt_pacifica" not in classes  # see ccxt_catalog.NOT_OFFERED


def test_pacing_follows_the_endpoint_cost(monkeypatch, rsps):
    """With the shipped numbers: Kraken's TradesHistory costs 6 in ccxt (6 s at its 1 s pace), so a
    second page within 10 s would exceed 80 % of that pace and the run pauses instead of sending it."""
    monkeypatch.setattr(ratelimit.get_limiter(), "limits", ratelimit.load_limits())
    fake = Kraken(spread(120))
    fake.stub_markets(rsps)
    fake.stub_trades(rsps)
    auth = AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET}))
    trades = get_broker_provider("ccxt_kraken").get_trades(auth, BrokerAccountInfo("spot", "spot"), SINCE, UNTIL)
    with pytest.raises(BrokerRateLimitError) as info:
        list(trades)
    assert sum("TradesHistory" in c.request.url for c in rsps.calls) == 1
    assert 9 < info.value.retry_after <= 10


def test_a_fill_of_a_market_ccxt_does_not_list_is_left_out_and_counted_not_fatal(rsps):
    fake = Okx(spread(2))
    fake.fills[0] = {**fake.fills[0], "instId": "ETH-USDT-SWAP", "instType": "SWAP"}
    fake.stub_markets(rsps)
    fake.stub_trades(rsps)
    provider = get_broker_provider("ccxt_okx", "live")
    auth = AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE}))
    spot = list(provider.get_trades(auth, BrokerAccountInfo("spot", "spot"), SINCE, UNTIL))
    assert [t.symbol for t in spot] == ["BTC/USDT"]
    (reason,) = provider.unreadable_rows
    assert reason.endswith("of market ETH-USDT-SWAP, which OKX no longer lists")


def test_a_fill_we_cannot_read_is_left_out_and_counted_and_the_others_kept(rsps):
    fake = Okx(spread(3))
    fake.fills[1] = {**fake.fills[1], "side": ""}
    fake.stub_markets(rsps)
    fake.stub_trades(rsps)
    provider = get_broker_provider("ccxt_okx", "live")
    auth = AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE}))
    spot = list(provider.get_trades(auth, BrokerAccountInfo("spot", "spot"), SINCE, UNTIL))
    assert len(spot) == 2
    trade_id = fake.fills[1]["tradeId"]
    assert provider.unreadable_rows == [f"trade {trade_id}: no side, amount, price, time or fee we can read"]


def test_an_exchange_without_until_is_paged_oldest_first_from_since(monkeypatch, rsps):
    """The other half of the catalog's exchanges (pages_by_until false) page forward by `since`."""
    binance = provider_classes()["ccxt_binance"]
    monkeypatch.setattr(binance, "pages_by_until", False)
    fake = Binance(spread(1200))
    fake.stub_markets(rsps)
    fake.stub_balance(rsps)
    fake.stub_trades(rsps)
    auth = AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET}))
    trades = list(
        get_broker_provider("ccxt_binance", "live").get_trades(auth, BrokerAccountInfo("spot", "spot"), SINCE, UNTIL)
    )
    pages = [c.request.params for c in rsps.calls if "/myTrades" in c.request.url]
    assert len(trades) == 2400 and len({t.broker_trade_id for t in trades}) == 2400
    btc = [t.executed_at for t in trades if t.symbol == "BTC/USDT"]
    assert btc == sorted(btc), "oldest first within each market"
    assert not binance.trades_ascending, "market after market is not oldest first for the whole account"
    assert provider_classes()["ccxt_kucoin"].trades_ascending, "one listing, oldest first: progress is saved"
    # Per symbol: 500 from since, 499 and 201 new from the newest time seen, then a page of only that one.
    assert all("startTime" in p and "endTime" not in p for p in pages) and len(pages) == 8


def test_ccxt_s_request_log_stays_silent_after_logging_is_configured_again(caplog):
    """A dictConfig (Django's set-up, a worker's) re-enables registered loggers; ccxt's is not one."""
    import logging.config

    from brokers.providers.ccxt.transport import SILENT_LOGGER

    logging.config.dictConfig(settings.LOGGING)
    with caplog.at_level("DEBUG"):
        SILENT_LOGGER.debug("POST https://api.kraken.com Request: {'API-Key': 'key-S3CRET-MARK'}")
    assert "S3CRET" not in caplog.text


class Hyperliquid:
    """Hyperliquid's /info answers for loading markets (a HIP-3 dex settling in USDH) and the recorded fills."""

    url = "https://api.hyperliquid.xyz/info"
    tokens = [
        {"name": "USDC", "index": 0, "szDecimals": 8, "weiDecimals": 8},
        {"name": "USDH", "index": 360, "szDecimals": 2, "weiDecimals": 8},
    ]

    def __init__(self):
        recorded = json.loads((FIXTURES / "ccxt" / "hyperliquid.json").read_text())
        self.fills = recorded["entries"][0]["httpResponse"]
        self.asked: list[str] = []

    def answer(self, request):
        body = json.loads(request.body)
        self.asked.append(body["type"])
        answers = {
            "spotMeta": {"universe": [], "tokens": self.tokens},
            "spotMetaAndAssetCtxs": [{"universe": [], "tokens": self.tokens}, []],
            "perpDexs": [None, {"name": "flx"}],
            "userFills": self.fills,
            "userFillsByTime": self.fills,
        }
        if body["type"] == "metaAndAssetCtxs" and body.get("dex") == "flx":
            universe = [{"name": "flx:CRCL", "szDecimals": 2, "maxLeverage": 10}]
            return 200, {}, json.dumps([{"universe": universe, "collateralToken": 360}, [{"midPx": "55.9"}]])
        if body["type"] == "metaAndAssetCtxs":
            universe = [{"name": "HYPE", "szDecimals": 2, "maxLeverage": 10}]
            return 200, {}, json.dumps([{"universe": universe}, [{"midPx": "33.2"}]])
        return 200, {}, json.dumps(answers[body["type"]])


def test_hyperliquid_fills_read_the_same_from_cached_markets_as_from_a_fresh_load(rsps):
    """Loading Hyperliquid's markets records which collateral each HIP-3 market settles in; a
    cache that kept only the market list would name a flx:CRCL fill FLX-CRCL/USDC:USDC, in
    USDC, under another trade id."""
    fake = Hyperliquid()
    rsps.add_callback("POST", fake.url, callback=fake.answer)
    auth = AuthResult(token=json.dumps({"privateKey": "0x" + "11" * 32, "walletAddress": "0x" + "ab" * 20}))
    account = BrokerAccountInfo("swap", "perpetuals")
    since, until = SINCE.replace(year=2026, month=1, day=1), UNTIL.replace(year=2026, month=3, day=1)

    def read():
        trades = get_broker_provider("ccxt_hyperliquid").get_trades(auth, account, since, until)
        return sorted((t.broker_trade_id, t.symbol, t.currency, t.fee_currency) for t in trades)

    fresh = read()
    loads = fake.asked.count("spotMeta")
    cached = read()
    assert loads == 1 and fake.asked.count("spotMeta") == 1, "the second read must come from the cache"
    assert cached == fresh
    crcl = [t for t in fresh if "CRCL" in t[1]]
    assert crcl == [
        ("FLX-CRCL/USDH:USDH|1019408913364172", "FLX-CRCL/USDH:USDH", "USDH", "USDH"),
        ("FLX-CRCL/USDH:USDH|202031760494687", "FLX-CRCL/USDH:USDH", "USDH", "USDH"),
    ]


def test_an_account_type_whose_trades_ccxt_cannot_read_is_not_created():
    zebpay = get_broker_provider("ccxt_zebpay")
    assert "spot" not in zebpay.account_types  # ccxt raises NotSupported for ZebPay spot trades
    listed = SimpleNamespace(markets={"BTC/INR": {"type": "spot"}, "BTC/INR:INR": {"type": "swap"}})
    assert zebpay._account_types(listed) == ["swap"]


@pytest.mark.parametrize(
    ("raised", "transient", "words"),
    [
        ("ArgumentsRequired", False, "needs a value the journal's connection form does not ask for"),
        ("NotSupported", False, "does not let its API read the trades of this account type"),
        ("InvalidNonce", True, "refused the request's timestamp"),
        ("BadSymbol", True, "no longer lists a market we asked about"),
    ],
)
def test_ccxt_errors_become_ours_with_words_a_trader_can_act_on(raised, transient, words):
    ccxt = importlib.import_module("ccxt")

    def fails():
        raise getattr(ccxt, raised)(f"kraken GET https://api.kraken.com/0?key={SECRET_MARK}")

    with pytest.raises(BrokerAPIError) as info:
        call("ccxt_kraken", "Kraken", "", fails)
    assert info.value.transient is transient
    assert str(info.value).startswith(f"Kraken {words}") and SECRET_MARK not in str(info.value)


# --- positions -------------------------------------------------------------------------------
def okx_position(inst_id: str, pos: str, avg: str = "51858", pos_side: str = "net") -> dict:
    """One row of OKX's GET /api/v5/account/positions (contracts, signed in net mode)."""
    return {
        "adl": "1",
        "availPos": "",
        "avgPx": avg,
        "cTime": "1700000000000",
        "ccy": "USDT",
        "instId": inst_id,
        "instType": "SWAP",
        "lever": "10",
        "liqPx": "",
        "margin": "",
        "markPx": "51900",
        "mgnMode": "cross",
        "mgnRatio": "",
        "notionalUsd": "1557",
        "pos": pos,
        "posCcy": "",
        "posId": f"pos-{inst_id}-{pos_side}",
        "posSide": pos_side,
        "upl": "1.26",
        "uTime": "1700000000000",
    }


def okx_with_perpetuals(rsps, positions: list[dict], fills: list[dict]) -> None:
    def markets(request):
        kind = query(request)["instType"]
        data = {"SPOT": [OKX_SPOT], "SWAP": [OKX_SWAP]}.get(kind, [])
        return 200, {}, json.dumps({"code": "0", "msg": "", "data": data})

    def trades(request):
        end = int(query(request).get("end", 10**15))
        older = sorted((f for f in fills if int(f["ts"]) <= end), key=lambda f: int(f["ts"]), reverse=True)
        return 200, {}, json.dumps({"code": "0", "msg": "", "data": older})

    base = re.escape(Okx.base)
    rsps.add_callback("GET", re.compile(rf"{base}/public/instruments\b.*"), callback=markets)
    rsps.add_callback("GET", re.compile(rf"{base}/trade/fills-history\b.*"), callback=trades)
    rsps.get(re.compile(rf"{base}/account/positions\b.*"), json={"code": "0", "msg": "", "data": positions})


OKX_AUTH = AuthResult(token=json.dumps({"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE}))


def test_perpetual_positions_come_signed_in_contracts_as_the_fills_and_spot_balances_are_not_positions(rsps):
    okx_with_perpetuals(rsps, [okx_position("BTC-USDT-SWAP", "-3"), okx_position("BTC-USDT-SWAP", "0")], [])
    provider = get_broker_provider("ccxt_okx", "live")
    (short,) = provider.get_positions(OKX_AUTH, BrokerAccountInfo("swap", "perpetuals"))
    assert (short.symbol, short.quantity, short.average_price) == ("BTC/USDT:USDT", Decimal(-3), Decimal(51858))
    assert short.mark_price == Decimal(51900)
    assert provider.get_positions(OKX_AUTH, BrokerAccountInfo("spot", "spot")) is None
    assert sum("/account/positions" in c.request.url for c in rsps.calls) == 1


def test_an_exchange_ccxt_reads_no_positions_for_reports_none(rsps, monkeypatch):
    okx_with_perpetuals(rsps, [], [])
    provider = get_broker_provider("ccxt_okx", "live")
    made = provider._exchange

    def without_positions(keys):
        exchange = made(keys)
        exchange.has = {**exchange.has, "fetchPositions": False}
        return exchange

    monkeypatch.setattr(provider, "_exchange", without_positions)
    assert provider.get_positions(OKX_AUTH, BrokerAccountInfo("swap", "perpetuals")) is None
    assert not any("/account/positions" in c.request.url for c in rsps.calls)


@pytest.mark.django_db
def test_perpetual_fills_and_positions_name_the_market_alike_so_they_agree(rsps, trader):
    fills = [okx_fill(i, t, "BTC-USDT-SWAP", "SWAP") for i, t in enumerate(spread(2))]
    fills[1] = {**fills[1], "side": "buy", "fillSz": "2"}
    okx_with_perpetuals(rsps, [okx_position("BTC-USDT-SWAP", "5")], fills)
    provider = get_broker_provider("ccxt_okx", "live")
    account = BrokerAccountInfo("swap", "perpetuals")
    trades = list(provider.get_trades(OKX_AUTH, account, SINCE, UNTIL))
    positions = provider.get_positions(OKX_AUTH, account)
    journal = account_with(trader, trades, external_id="swap")
    assert sorted((t.symbol, t.quantity, t.multiplier) for t in trades) == [
        ("BTC/USDT:USDT", Decimal(2), Decimal("0.01")),
        ("BTC/USDT:USDT", Decimal(3), Decimal("0.01")),
    ]
    assert position_differences(journal.pk, positions, read_at=UNTIL) == []
