"""MetaTrader 4/5 through MetaApi: the shared contract (HTTP stubbed) and MetaApi's rules on the loopback simulator."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import responses
from django.core.exceptions import ValidationError

from brokers import governance, services
from brokers.models import BrokerAccount, BrokerConnection, KnownProvider
from brokers.providers import ratelimit
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, BrokerRateLimitError, BrokerSetupError
from brokers.providers.metaapi import PROVISIONING_URL
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerCredentials
from journal.importing import import_trades
from journal.models import Trade
from sync import runs
from tests.fakes.metaapi import OPERATOR_TOKEN, MetaApiSim, configure, stamp
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract

TOKEN = f"token-{SECRET_MARK}"
PASSWORD = f"investor-{SECRET_MARK}"
SERVER = "ICMarketsSC-Demo"
LOGIN = "5012345"
MT_ACCOUNT = f"{LOGIN}@{SERVER}"
ACCOUNT_ID = "f3a1c9e2"
CLIENT = "https://mt-client-api-v1.new-york.agiliumtrade.ai"


@pytest.fixture(autouse=True)
def quick(settings):
    settings.BROKER_HTTP_RETRY_BACKOFF_S = 0
    settings.METAAPI_TOKEN = ""
    settings.METAAPI_CLIENT_URL = ""
    settings.METAAPI_KEEP_DEPLOYED = False


def credentials(**changes) -> BrokerCredentials:
    values = {"platform": "mt5", "server": SERVER, "login": LOGIN, "investor_password": PASSWORD}
    return BrokerCredentials(values={**values, "metaapi_token": TOKEN, **changes})


def session(account_id: str = ACCOUNT_ID, platform: str = "mt5") -> AuthResult:
    extra = {"account_id": account_id, "own_token": True, "platform": platform, "type": "cloud-g2"}
    return AuthResult(token=TOKEN, extra=extra)


def mt_deal(n: int, *, type: str = "DEAL_TYPE_BUY", at: datetime | None = None, **fields) -> dict:
    moment = at or SINCE + timedelta(minutes=n)
    return {
        "id": str(70000 + n),
        "type": type,
        "entryType": "DEAL_ENTRY_IN",
        "symbol": "EURUSD",
        "time": stamp(moment),
        "brokerTime": "2026-11-02 02:00:00.000",
        "volume": 0.1,
        "price": 1.08512,
        "commission": -0.35,
        "swap": 0,
        "profit": 0,
        "positionId": str(n),
        "orderId": str(n),
        "platform": "mt5",
        **fields,
    }


class TestMetaTraderContract(ProviderContract):
    provider_key = "metatrader"

    def stub_credentials(self):
        return credentials()

    def stub_login_ok(self, rsps):
        rsps.get(f"{PROVISIONING_URL}/users/current/accounts", json=[])
        rsps.post(f"{PROVISIONING_URL}/users/current/accounts", json={"id": ACCOUNT_ID, "state": "UNDEPLOYED"})

    def stub_login_refused(self, rsps):
        rsps.get(f"{PROVISIONING_URL}/users/current/accounts", json=[])
        body = {"id": 1, "error": "ValidationError", "message": "Authentication failed", "details": "E_AUTH"}
        rsps.post(f"{PROVISIONING_URL}/users/current/accounts", status=400, json=body)

    def auth(self):
        return session()

    def stub_accounts(self, rsps):
        rsps.get(f"{PROVISIONING_URL}/users/current/accounts/{ACCOUNT_ID}", json=self._account())
        return [MT_ACCOUNT]

    def account(self):
        return BrokerAccountInfo(external_id=MT_ACCOUNT, name=f"MT5 {LOGIN}", currency="USD")

    def stub_trades(self, rsps, account):
        rsps.get(f"{PROVISIONING_URL}/users/current/accounts/{ACCOUNT_ID}", json=self._account())
        rsps.get(f"{PROVISIONING_URL}/users/current/servers/mt-client-api", json={"domain": "agiliumtrade.ai"})
        deals = [mt_deal(n) for n in range(1003)] + [mt_deal(2000, type="DEAL_TYPE_BALANCE", symbol="")]

        def page(request):
            offset, limit = int(request.params["offset"]), int(request.params["limit"])
            return 200, {}, json.dumps(deals[offset : offset + limit])

        history = re.compile(rf"{re.escape(CLIENT)}/users/current/accounts/{ACCOUNT_ID}/history-deals/time/.*")
        rsps.add_callback(responses.GET, history, callback=page)
        spec = {"symbol": "EURUSD", "contractSize": 100000, "profitCurrency": "USD"}
        rsps.get(f"{CLIENT}/users/current/accounts/{ACCOUNT_ID}/symbols/EURUSD/specification", json=spec)
        rsps.post(f"{PROVISIONING_URL}/users/current/accounts/{ACCOUNT_ID}/undeploy", status=204)
        return 1003

    def stub_server_error(self, rsps):
        rsps.get(f"{PROVISIONING_URL}/users/current/accounts/{ACCOUNT_ID}", status=500, json={"error": "InternalError"})

    def stub_rate_limited(self, rsps, retry_after):
        at = datetime.now(UTC) + timedelta(seconds=retry_after)
        body = {"error": "TooManyRequestsError", "metadata": {"recommendedRetryTime": stamp(at)}}
        url = f"{PROVISIONING_URL}/users/current/accounts/{ACCOUNT_ID}"
        rsps.get(url, status=429, json=body, headers={"Retry-After": str(retry_after)})

    def limiter_scope(self):
        return ratelimit.scope_for(TOKEN)

    @staticmethod
    def _account(state="DEPLOYED", status="CONNECTED"):
        return {
            "_id": ACCOUNT_ID,
            "login": LOGIN,
            "server": SERVER,
            "platform": "mt5",
            "region": "new-york",
            "state": state,
            "connectionStatus": status,
            "tags": ["trading-journal"],
        }


# --- MetaApi's own rules, on the simulator --------------------------------------------------
@pytest.fixture
def sim(settings):
    with MetaApiSim() as server:
        configure(settings, server)
        server.tokens.add(TOKEN)
        server.add_mt_account("mt5", SERVER, LOGIN, PASSWORD)
        yield server


@pytest.fixture
def provider():
    return get_broker_provider("metatrader")


def read(provider, auth, since=SINCE, until=UNTIL, account=None):
    account = account or BrokerAccountInfo(external_id=MT_ACCOUNT, name="MT5", currency="USD")
    return list(provider.get_trades(auth, account, since, until))


def read_when_ready(provider, auth, since=SINCE, until=UNTIL):
    return when_ready(lambda: read(provider, auth, since, until))


def when_ready(call):
    """Call as a run does: every wait the provider asks for is a pause, then the same call again."""
    waits = []
    for _ in range(50):
        try:
            return call(), waits
        except BrokerRateLimitError as exc:
            waits.append(exc.message)
            time.sleep(min(exc.retry_after, 1.0))
    raise AssertionError(f"never ready: {waits[-3:]}")


def test_a_new_connection_provisions_one_read_only_account_and_finds_it_again(sim, provider):
    first = provider.authenticate(credentials())
    again = provider.authenticate(credentials())
    [account] = sim.provisioned()
    assert first.extra["account_id"] == again.extra["account_id"] == account["_id"]
    assert (account["reliability"], account["type"], account["tags"]) == ("regular", "cloud-g2", ["trading-journal"])
    assert account["password"] == PASSWORD and sim.count("/users/current/accounts") == 3  # find, add, find


def test_an_account_the_trader_added_by_hand_is_never_taken_over(sim, provider):
    provider.authenticate(credentials())
    sim.provisioned()[0]["tags"] = []
    provider.authenticate(credentials())
    assert len(sim.provisioned()) == 2


def test_an_unknown_server_is_refused_on_the_server_field_with_suggestions(sim, provider):
    with pytest.raises(BrokerAuthError) as info:
        provider.authenticate(credentials(server="ICMarkets-Dem"))
    assert info.value.field == "server"
    assert "ICMarketsSC-Demo" in info.value.message and SECRET_MARK not in info.value.message
    assert sim.provisioned() == []


def test_a_refused_investor_password_is_not_sent_again_the_same_day(sim, provider):
    for _ in range(2):
        with pytest.raises(BrokerAuthError) as info:
            provider.authenticate(credentials(investor_password=f"wrong-{SECRET_MARK}"))
        assert info.value.field == "investor_password" and SECRET_MARK not in info.value.message
    assert sim.adds_refused == 1 and "refused earlier today" in info.value.message
    assert provider.authenticate(credentials()).extra["account_id"]


def test_a_server_whose_time_zone_metaapi_cannot_detect_is_a_setup_error(sim, provider):
    sim.timezone_unknown.add(SERVER)
    with pytest.raises(BrokerSetupError, match="provisioning profile"):
        provider.authenticate(credentials())


def test_settings_detection_is_a_wait_and_the_repeated_add_makes_one_account(sim, provider):
    sim.detection_202 = 1
    with pytest.raises(BrokerRateLimitError, match="detecting your broker's server settings"):
        provider.authenticate(credentials())
    provider.authenticate(credentials())
    assert len(sim.provisioned()) == 1


def test_a_refused_token_names_whose_token_to_replace(sim, provider, settings):
    with pytest.raises(BrokerAuthError) as own:
        provider.authenticate(credentials(metaapi_token=f"bad-{SECRET_MARK}"))
    assert own.value.field == "metaapi_token" and SECRET_MARK not in own.value.message
    settings.METAAPI_TOKEN = f"revoked-{SECRET_MARK}"
    with pytest.raises(BrokerSetupError, match="METAAPI_TOKEN") as operator:
        provider.authenticate(credentials(metaapi_token=""))
    assert SECRET_MARK not in operator.value.message


def test_the_form_asks_for_a_token_only_where_the_installation_has_none(settings):
    cls = type(get_broker_provider("metatrader"))
    values = {"platform": "mt5", "server": SERVER, "login": "12a", "investor_password": "x"}
    problems = cls.validate_credentials(values)
    assert set(problems) == {"login", "metaapi_token"}
    settings.METAAPI_TOKEN = OPERATOR_TOKEN
    assert set(cls.validate_credentials(values)) == {"login"}


def test_a_long_first_connect_is_a_pause_then_the_deals_are_read_and_the_terminal_undeployed(settings, provider):
    settings.METAAPI_CONNECT_POLL_S = 0.05
    with MetaApiSim(first_connect_s=0.5, connect_s=0.05) as sim:
        configure(settings, sim)
        sim.add_mt_account("mt5", SERVER, LOGIN, PASSWORD)
        sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=1))
        auth = provider.authenticate(credentials(metaapi_token=""))
        with pytest.raises(BrokerRateLimitError, match="first connection can take a few minutes"):
            read(provider, auth)
        trades, waits = read_when_ready(provider, auth)
        [account] = sim.provisioned()
        assert len(trades) == 1 and any("Waiting for your MetaTrader terminal" in w for w in waits)
        assert (account["state"], account["deploys"]) == ("UNDEPLOYED", 1)


def test_a_terminal_that_cannot_log_in_fails_with_advice_after_the_connect_timeout(settings, sim, provider):
    settings.METAAPI_CONNECT_TIMEOUT_S = 0.2
    auth = provider.authenticate(credentials())
    sim.brokers[("mt5", SERVER, LOGIN)] = "changed-by-the-trader"
    with pytest.raises(BrokerRateLimitError):
        read(provider, auth)
    time.sleep(0.3)
    with pytest.raises(BrokerAPIError, match="If you changed the investor password") as info:
        read(provider, auth)
    assert info.value.transient and sim.provisioned()[0]["state"] == "UNDEPLOYED"


def test_a_terminal_that_cannot_connect_for_the_positions_fails_the_deals_read_at_once(settings, sim, provider):
    settings.METAAPI_CONNECT_TIMEOUT_S = 0.2
    auth = provider.authenticate(credentials())
    account = BrokerAccountInfo(MT_ACCOUNT, "MT5")
    sim.brokers[("mt5", SERVER, LOGIN)] = "changed-by-the-trader"
    with pytest.raises(BrokerRateLimitError):
        provider.get_positions(auth, account)
    time.sleep(0.3)
    with pytest.raises(BrokerAPIError, match="If you changed the investor password"):
        provider.get_positions(auth, account)
    with pytest.raises(BrokerAPIError, match="If you changed the investor password"):
        read(provider, auth)
    [terminal] = sim.provisioned()
    assert (terminal["state"], terminal["deploys"]) == ("UNDEPLOYED", 1)


def test_open_positions_come_signed_in_the_fills_units_one_per_position_of_a_hedging_account(sim, provider):
    sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=1), volume=0.25, positionId="P1")
    sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=2), volume=0.1, positionId="P2")
    sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=3), type="DEAL_TYPE_SELL", symbol="XAUUSD+", positionId="P3")
    sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=4), type="DEAL_TYPE_SELL", volume=0.05, positionId="P2")
    auth = provider.authenticate(credentials())
    positions, _ = when_ready(lambda: provider.get_positions(auth, BrokerAccountInfo(MT_ACCOUNT, "MT5")))
    assert sorted((p.symbol, p.quantity, p.average_price) for p in positions) == [
        ("EURUSD", Decimal("5000"), Decimal("1.08512")),
        ("EURUSD", Decimal("25000"), Decimal("1.08512")),
        ("XAUUSD+", Decimal("-10"), Decimal("1.08512")),
    ]
    assert {p.mark_price for p in positions} == {Decimal("1.08512")}


def test_keep_deployed_leaves_the_terminal_running(settings, sim, provider):
    settings.METAAPI_KEEP_DEPLOYED = True
    auth = provider.authenticate(credentials())
    read_when_ready(provider, auth)
    assert (
        sim.provisioned()[0]["state"] == "DEPLOYED"
        and sim.count(f"/users/current/accounts/{auth.extra['account_id']}/undeploy") == 0
    )


def test_pages_of_a_thousand_are_read_until_a_short_one(sim, provider):
    for n in range(2345):
        sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(minutes=n))
    auth = provider.authenticate(credentials())
    trades, _ = read_when_ready(provider, auth)
    history = [r for r in sim.requests if "/history-deals/" in r.path]
    assert len(trades) == len({t.broker_trade_id for t in trades}) == 2345
    assert [r.query["offset"] for r in history] == ["0", "1000", "2000"]
    assert {r.query["limit"] for r in history} == {"1000"}


def test_a_synchronizing_page_is_a_pause_that_yields_nothing_of_its_window(sim, provider):
    for n in range(4):
        sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=n))
    sim.synchronizing_reads = 1  # the first read after the connect answers half the deals, marked partial
    auth = provider.authenticate(credentials())
    attempts = []  # (trades yielded, why it stopped) per attempt, as a run's retries see them
    while not attempts or attempts[-1][1]:
        yielded = []
        try:
            yielded.extend(provider.get_trades(auth, BrokerAccountInfo(MT_ACCOUNT, "MT5"), SINCE, UNTIL))
            attempts.append((yielded, ""))
        except BrokerRateLimitError as exc:
            attempts.append((yielded, exc.message))
            time.sleep(min(exc.retry_after, 1.0))
    partial = [a for a in attempts if "still loading this account's history" in a[1]]
    assert partial and all(yielded == [] for yielded, _ in partial)
    assert len(attempts[-1][0]) == 4


def test_deals_become_fills_in_units_with_lots_kept_fees_as_costs_and_utc_times(sim, provider):
    at = datetime(2026, 11, 3, 14, 30, 15, 123000, tzinfo=UTC)
    sim.add_deal(MT_ACCOUNT, at=at, volume=0.25, price=1.0842, commission=-1.75, swap=-0.6)
    sim.add_deal(
        MT_ACCOUNT,
        at=at + timedelta(hours=1),
        type="DEAL_TYPE_SELL",
        symbol="XAUUSD+",
        volume=0.1,
        price=2650.5,
        commission=0.4,
        swap=0,
    )
    for kind in ("DEAL_TYPE_BALANCE", "DEAL_TYPE_CREDIT", "DEAL_TYPE_COMMISSION", "DEAL_TYPE_INTEREST"):
        sim.add_deal(MT_ACCOUNT, at=at, type=kind, symbol="", volume=0, price=0, profit=100)
    auth = provider.authenticate(credentials())
    (buy, sell), _ = read_when_ready(provider, auth)
    assert (buy.side, buy.quantity, buy.price, buy.fees) == (
        "BUY",
        Decimal("25000.0"),
        Decimal("1.0842"),
        Decimal("2.35"),
    )
    assert buy.executed_at == at and buy.multiplier == 1 and buy.currency == "USD"
    assert (buy.raw["lots"], buy.raw["contractSize"], buy.raw["brokerTime"]) == (
        "0.25",
        "100000",
        buy.raw["brokerTime"],
    )
    assert (sell.side, sell.symbol, sell.quantity, sell.fees) == ("SELL", "XAUUSD+", Decimal("10.0"), Decimal("0"))
    assert sell.raw["commission"] == 0.4  # a rebate is no cost, and stays visible


def test_a_symbol_specification_is_fetched_once_and_a_delisted_symbol_stays_in_lots(sim, provider):
    for n in range(3):
        sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=n))
    sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=5), symbol="OLDCFD", volume=2)
    auth = provider.authenticate(credentials())
    first, _ = read_when_ready(provider, auth)
    read_when_ready(provider, auth)
    specs = [r.path for r in sim.requests if r.path.endswith("/specification")]
    assert len(specs) == len(set(specs)) == 2
    old = next(t for t in first if t.symbol == "OLDCFD")
    assert old.quantity == Decimal("2") and old.raw["contractSize"] is None


@pytest.mark.django_db
def test_a_cancelled_deal_tombstones_the_fill_it_cancelled(sim, provider, trader):
    deal = sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=1))
    sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=2), type="DEAL_TYPE_SELL")
    connection = BrokerConnection.objects.create(owner=trader, broker_type="metatrader", label="MT5")
    row = BrokerAccount.objects.create(connection=connection, external_id=MT_ACCOUNT, name="MT5")
    auth = provider.authenticate(credentials())
    first = import_trades(row.pk, read_when_ready(provider, auth)[0])
    sim.cancel_deal(MT_ACCOUNT, deal["id"])
    second = import_trades(row.pk, read_when_ready(provider, auth)[0])
    third = import_trades(row.pk, read_when_ready(provider, auth)[0])
    assert (first.imported, second.imported, second.busted, third.busted) == (2, 0, 1, 0)
    live = Trade.objects.filter(account=row, deleted_at__isnull=True)
    assert list(live.values_list("side", flat=True)) == ["SELL"]


def test_a_429_waits_until_metaapi_s_recommended_time_and_blocks_only_that_token(sim, provider):
    auth = provider.authenticate(credentials())
    sim.throttle, sim.throttle_retry_s = 1, 90
    with pytest.raises(BrokerRateLimitError) as info:
        provider.get_accounts(auth)
    assert 85 <= info.value.retry_after <= 91
    limiter = ratelimit.get_limiter()
    assert limiter.try_acquire("metatrader", scope=ratelimit.scope_for(TOKEN)) > 60
    assert limiter.try_acquire("metatrader", scope=ratelimit.scope_for(OPERATOR_TOKEN)) == 0


def test_a_first_mt5_sync_that_reaches_5000_deals_says_older_history_is_missing(sim, provider):
    for n in range(5000):
        sim.add_deal(MT_ACCOUNT, at=datetime.now(UTC) - timedelta(days=10, minutes=n))
    auth = provider.authenticate(credentials())
    until = datetime.now(UTC)
    read_when_ready(provider, auth, since=until - provider.max_history, until=until)
    assert "at most the last 5,000 deals" in " ".join(provider.notes)
    later = get_broker_provider("metatrader")
    read_when_ready(later, auth, since=until - timedelta(days=30), until=until)
    assert later.notes == []


def test_the_server_search_finds_a_broker_s_servers_and_asks_metaapi_once(sim, provider, settings):
    assert provider.suggestions("server", "ic mark", {"platform": "mt5"})[0] == ("ICMarketsSC-Demo", "Raw Trading Ltd")
    provider.suggestions("server", "IC  Mark", {"platform": "mt5"})
    assert sim.count("/known-mt-servers/5/search") == 1
    settings.METAAPI_TOKEN = ""
    assert provider.suggestions("server", "ic mark", {"platform": "mt5"}) == []


def test_nothing_secret_reaches_the_log(sim, provider, caplog):
    with caplog.at_level("DEBUG"):
        auth = provider.authenticate(credentials())
        sim.add_deal(MT_ACCOUNT, at=SINCE + timedelta(hours=1))
        read_when_ready(provider, auth)
        provider.forget(credentials(), auth)
    assert "broker_http" in caplog.text and SECRET_MARK not in caplog.text


# --- the connection's life: saved only once provisioned, removed with the connection ----------
@pytest.mark.django_db
def test_a_refused_password_is_a_form_error_and_saves_nothing(sim, trader):
    typed = dict(credentials(investor_password="wrong").values)
    with pytest.raises(ValidationError) as info:
        services.connection_create(owner=trader, broker_type="metatrader", label="MT5", credentials=typed)
    assert "investor_password" in info.value.message_dict
    assert not BrokerConnection.objects.exists() and sim.provisioned() == []


@pytest.mark.django_db
def test_a_saved_connection_keeps_its_session_and_deleting_it_removes_the_metaapi_account(sim, trader):
    typed = dict(credentials().values)
    connection = services.connection_create(
        owner=trader, broker_type="metatrader", label="MT5", credentials=typed, sync_enabled=False
    )
    [account] = sim.provisioned()
    assert connection.auth.extra["account_id"] == account["_id"]
    services.connection_delete(connection.pk)
    assert sim.provisioned() == [] and not BrokerConnection.objects.exists()


@pytest.mark.django_db
def test_the_add_page_shows_provisioning_errors_on_their_fields_and_offers_server_search(sim, client, trader):
    client.force_login(trader)
    page = client.get("/brokers/add/?broker=metatrader")
    assert b'hx-get="/brokers/metatrader/suggest/server/"' in page.content and b"<datalist" in page.content
    assert b"cred_investor_password" not in re.search(rb'hx-include="([^"]*)"', page.content).group(1)
    form = {"broker_type": "metatrader", "label": "MT5", "sync_interval_min": 15, "action": "save"}
    form |= {f"cred_{k}": v for k, v in credentials(server="NoSuchServer-1").values.items()}
    answer = client.post("/brokers/add/", form)
    assert answer.status_code == 200 and b"does not know the server" in answer.content
    assert SECRET_MARK.encode() not in answer.content and not BrokerConnection.objects.exists()
    found = client.get("/brokers/metatrader/suggest/server/", {"cred_server": "ic mark", "cred_platform": "mt5"})
    assert {"value": "ICMarketsSC-MT5", "label": "Raw Trading Ltd"} in found.json()["suggestions"]
    options = client.get("/brokers/metatrader/suggest/server/", {"cred_server": "pepper"}, HTTP_HX_REQUEST="true")
    assert b'<option value="Pepperstone-Demo">Pepperstone Group Limited</option>' in options.content


@pytest.mark.django_db
def test_a_new_investor_password_goes_to_the_same_metaapi_account(sim, trader):
    typed = dict(credentials().values)
    connection = services.connection_create(
        owner=trader, broker_type="metatrader", label="MT5", credentials=typed, sync_enabled=False
    )
    sim.brokers[("mt5", SERVER, LOGIN)] = "new-investor-pw"
    services.connection_update(connection.pk, credentials={**typed, "investor_password": "new-investor-pw"})
    [account] = sim.provisioned()
    assert account["password"] == "new-investor-pw"
    assert BrokerConnection.objects.get(pk=connection.pk).auth.extra["account_id"] == account["_id"]


@pytest.fixture
def production_waits(settings):
    """As in production, a burst of requests waits for the limiter in the worker (the tests' half-second
    would pause a first import after its read, and a resumed read is no first import any more)."""
    settings.BROKER_RATE_LIMIT_MAX_SLEEP_S = 2
    # The limiter is built once per process from the settings: rebuild it with these, then without.
    ratelimit.get_limiter.cache_clear()
    yield
    ratelimit.get_limiter.cache_clear()


@pytest.mark.django_db
def test_a_first_mt5_import_cut_at_5000_deals_says_so_on_the_card_after_later_syncs(
    sim, trader, client, settings, production_waits
):
    settings.METAAPI_CONNECT_POLL_S = 0.05
    for n in range(5000):
        sim.add_deal(MT_ACCOUNT, at=datetime.now(UTC) - timedelta(days=5, minutes=n))
    connection = services.connection_create(
        owner=trader, broker_type="metatrader", label="MT5", credentials=dict(credentials().values), sync_enabled=False
    )
    first = runs.run_inline(connection.pk)
    runs.run_inline(connection.pk)
    client.force_login(trader)
    card = client.get("/brokers/").content.decode()
    assert first.trades_imported == 5000 and "note" in first.detail[MT_ACCOUNT]
    assert "First import:" in card and "older trades are missing" in card


@pytest.mark.django_db
def test_the_product_manager_is_told_of_metatrader(mailoutbox, settings):
    settings.MANAGERS = [("PM", "pm@example.com")]
    KnownProvider.objects.filter(key="metatrader").delete()  # as on the deploy that brings it
    assert governance.announce_new_providers() == ["MetaTrader 4/5 (any broker, through MetaApi) (metatrader)"]
    assert "MetaTrader 4/5 (any broker, through MetaApi) (metatrader)" in mailoutbox[0].body


@pytest.mark.django_db
def test_saving_while_metaapi_detects_the_server_says_when_to_try_again_and_saves_nothing(sim, trader):
    sim.detection_202 = 1
    with pytest.raises(ValidationError) as info:
        services.connection_create(
            owner=trader, broker_type="metatrader", label="MT5", credentials=dict(credentials().values)
        )
    assert "Try again in 1 s." in " ".join(info.value.messages) and not BrokerConnection.objects.exists()


@pytest.mark.django_db
def test_a_connection_is_deleted_even_when_metaapi_cannot_remove_its_account(sim, trader, caplog):
    connection = services.connection_create(
        owner=trader, broker_type="metatrader", label="MT5", credentials=dict(credentials().values), sync_enabled=False
    )
    sim.fail_every(1, 500)
    with caplog.at_level("WARNING"):
        services.connection_delete(connection.pk)
    assert not BrokerConnection.objects.exists() and len(sim.provisioned()) == 1
    assert "broker_provision_not_removed" in caplog.text and SECRET_MARK not in caplog.text


def test_an_operator_s_session_follows_a_replaced_metaapi_token(sim, provider, settings):
    auth = provider.authenticate(credentials(metaapi_token=""))
    sim.tokens = {TOKEN, "the-new-operator-token"}
    settings.METAAPI_TOKEN = "the-new-operator-token"
    assert [a.external_id for a in provider.get_accounts(auth)] == [MT_ACCOUNT]


@pytest.mark.django_db
def test_deleting_a_connection_whose_session_was_dropped_still_finds_and_removes_its_account(sim, trader):
    connection = services.connection_create(
        owner=trader, broker_type="metatrader", label="MT5", credentials=dict(credentials().values), sync_enabled=False
    )
    BrokerConnection.objects.filter(pk=connection.pk).update(session_ciphertext="")  # as after a refused login
    services.connection_delete(connection.pk)
    assert sim.provisioned() == []


@pytest.mark.django_db
def test_test_connection_adds_the_account_and_lists_it_without_secrets(sim, client, trader):
    client.force_login(trader)
    form = {"broker_type": "metatrader", "label": "MT5", "sync_interval_min": 15, "action": "test"}
    form |= {f"cred_{k}": v for k, v in credentials().values.items()}
    answer = client.post("/brokers/add/", form, HTTP_HX_REQUEST="true")
    assert f"MT5 {LOGIN} · {SERVER}" in answer.content.decode() and SECRET_MARK not in answer.content.decode()
    assert len(sim.provisioned()) == 1 and not BrokerConnection.objects.exists()


def test_an_mt4_account_searches_mt4_servers_and_never_gets_the_mt5_history_note(sim, provider):
    sim.add_mt_account("mt4", "Pepperstone-Demo", "700111", PASSWORD)
    mt4 = provider.authenticate(credentials(platform="mt4", server="Pepperstone-Demo", login="700111"))
    for n in range(5000):
        sim.add_deal("700111@Pepperstone-Demo", at=datetime.now(UTC) - timedelta(days=3, minutes=n), platform="mt4")
    until = datetime.now(UTC)
    read_when_ready(provider, mt4, since=until - provider.max_history, until=until)
    assert provider.notes == []
    provider.suggestions("server", "pepper", {"platform": "mt4"})
    assert sim.count("/known-mt-servers/4/search") == 1
