"""ProjectX on the shared contract, plus its rules: firm hosts, the success:false envelope, day-long
tokens reused and renewed, windowed trade search, contracts resolved once, and voided fills removed."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import responses
from django.core import mail

from brokers import governance, services
from brokers.models import BrokerConnection, KnownProvider, SyncLog
from brokers.providers import projectx, ratelimit
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, BrokerConfigurationError, BrokerRateLimitError
from brokers.providers.ratelimit import get_limiter, scope_for
from brokers.providers.registry import get_broker_provider, provider_classes
from brokers.providers.types import BUY, SELL, AuthResult, BrokerAccountInfo, BrokerCredentials
from journal.models import Trade
from journal.selectors import trades_visible_to
from sync import runs, sessions
from tests.fakes.projectx import API_KEY, ProjectXSim, configure, stamp
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract

USERNAME = "trader1"
TOPSTEP = "https://api.topstepx.com"


@pytest.fixture(autouse=True)
def fresh_contract_cache():
    projectx._CONTRACTS.clear()
    yield
    projectx._CONTRACTS.clear()


def credentials(firm: str = "topstep", api_key: str = f"key-{SECRET_MARK}") -> BrokerCredentials:
    return BrokerCredentials(values={"firm": firm, "username": USERNAME, "api_key": api_key})


def session(token: str = "token-1", firm: str = "topstep") -> AuthResult:
    return AuthResult(
        token=token,
        expires_at=datetime.now(UTC) + timedelta(hours=24),
        extra={"firm": firm, "limit_scope": scope_for(f"{firm}:{USERNAME}")},
    )


def envelope(**body) -> dict:
    return {**body, "success": True, "errorCode": 0, "errorMessage": None}


class TestProjectXContract(ProviderContract):
    provider_key = "projectx"

    def stub_credentials(self):
        return credentials()

    def stub_login_ok(self, rsps):
        rsps.post(f"{TOPSTEP}/api/Auth/loginKey", json=envelope(token="token-1"))
        rsps.post(f"{TOPSTEP}/api/Auth/validate", json=envelope(newToken="token-2"))

    def stub_login_refused(self, rsps):
        rsps.post(
            f"{TOPSTEP}/api/Auth/loginKey",
            json={"token": None, "success": False, "errorCode": 3, "errorMessage": "Invalid credentials."},
        )

    def auth(self):
        return session()

    def stub_accounts(self, rsps):
        accounts = [
            {"id": 536, "name": "50KTC-V2-1234-01", "balance": 50120.0, "canTrade": True, "isVisible": True},
            # An evaluation that ended: no longer tradable, its history still the trader's.
            {"id": 412, "name": "150KTC-V2-1234-07", "balance": 146000.0, "canTrade": False, "isVisible": True},
        ]
        rsps.post(f"{TOPSTEP}/api/Account/search", json=envelope(accounts=accounts))
        return ["536", "412"]

    def account(self):
        return BrokerAccountInfo(external_id="536", name="50KTC-V2-1234-01")

    def stub_trades(self, rsps, account):
        fills = [
            {
                "id": 8600000 + n,
                "accountId": 536,
                "contractId": "CON.F.US.EP.Z26",
                "creationTimestamp": stamp(SINCE + timedelta(days=n, hours=15, microseconds=523293)),
                "price": 6064.25,
                "profitAndLoss": None if n % 2 == 0 else 50.0,
                "fees": 1.4,
                "side": n % 2,
                "size": 1,
                "voided": False,
                "orderId": 990 + n,
            }
            for n in range(6)
        ]

        def search(request):
            body = json.loads(request.body)
            start, end = (datetime.fromisoformat(body[k]) for k in ("startTimestamp", "endTimestamp"))
            found = [f for f in fills if start <= datetime.fromisoformat(f["creationTimestamp"]) <= end]
            return 200, {}, json.dumps(envelope(trades=found))

        rsps.add_callback(responses.POST, f"{TOPSTEP}/api/Trade/search", callback=search)
        contract = {"id": "CON.F.US.EP.Z26", "name": "ESZ6", "tickSize": 0.25, "tickValue": 12.5}
        rsps.post(f"{TOPSTEP}/api/Contract/searchById", json=envelope(contract=contract))
        return len(fills)

    def stub_server_error(self, rsps):
        rsps.post(f"{TOPSTEP}/api/Account/search", status=500)

    def stub_rate_limited(self, rsps, retry_after):
        rsps.post(f"{TOPSTEP}/api/Account/search", status=429, headers={"Retry-After": str(retry_after)})

    def limiter_scope(self):
        return scope_for(f"topstep:{USERNAME}")


# --- against the loopback simulator ---------------------------------------------------------
@pytest.fixture
def sim(settings):
    with ProjectXSim() as server:
        configure(settings, server)
        server.add_user(USERNAME)
        server.add_account(USERNAME, 536, "50KTC-V2-1234-01")
        server.add_account(USERNAME, 412, "150KTC-V2-1234-07 (failed)", active=False)
        yield server


@pytest.fixture
def provider():
    return get_broker_provider("projectx")


def sim_credentials(firm: str = "topstep") -> BrokerCredentials:
    return credentials(firm=firm, api_key=API_KEY)


ACCOUNT = BrokerAccountInfo(external_id="536", name="50KTC-V2-1234-01")


def test_login_sends_username_and_key_in_the_documented_fields_and_the_token_lives_a_day(sim, provider):
    auth = provider.authenticate(sim_credentials())
    assert sim.bodies("/api/Auth/loginKey") == [{"userName": USERNAME, "apiKey": API_KEY}]
    # The JWT's own exp (24 h) is the session's end, read from the token.
    assert timedelta(hours=23, minutes=59) < auth.expires_at - datetime.now(UTC) <= timedelta(hours=24)
    assert auth.extra == {"firm": "topstep", "limit_scope": scope_for(f"topstep:{USERNAME}")}


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (3, "refused the username or API key"),
        (7, "accept its agreements"),
        (9, "no ProjectX API subscription"),
        (10, "has not enabled API access"),
    ],
)
def test_each_login_refusal_says_what_the_trader_must_do(sim, provider, code, words):
    sim.refuse_login(USERNAME, code, "refused")
    with pytest.raises(BrokerAuthError) as info:
        provider.authenticate(sim_credentials())
    assert words in str(info.value) and "Topstep (TopstepX)" in str(info.value)


def test_an_unknown_refusal_is_quoted_without_the_key(sim, provider):
    sim.refuse_login(USERNAME, 5, f"Key {API_KEY} is locked")
    with pytest.raises(BrokerAuthError) as info:
        provider.authenticate(sim_credentials())
    assert "ProjectX error 5" in str(info.value) and API_KEY not in str(info.value)


def test_renewal_uses_validate_and_returns_the_new_token(sim, provider):
    auth = provider.authenticate(sim_credentials())
    renewed = provider.refresh_token(auth)
    assert sim.renewals == 1 and sim.logins == [USERNAME]
    assert renewed.token != auth.token and renewed.extra == auth.extra


def test_a_dead_token_is_not_renewed_but_refused_so_the_engine_logs_in(sim, provider):
    auth = provider.authenticate(sim_credentials())
    sim.expire_tokens()
    with pytest.raises(BrokerAuthError):
        provider.refresh_token(auth)
    with pytest.raises(BrokerAuthError):
        provider.get_accounts(auth)


def test_accounts_include_ended_evaluations(sim, provider):
    accounts = provider.get_accounts(provider.authenticate(sim_credentials()))
    assert [a.external_id for a in accounts] == ["536", "412"]
    assert sim.bodies("/api/Account/search") == [{"onlyActiveAccounts": False}]


def test_a_success_false_answer_is_an_error_that_names_the_call(sim, provider):
    auth = provider.authenticate(sim_credentials())
    sim.fail_envelope("/api/Account/search", 1, "Service is busy.")
    with pytest.raises(BrokerAPIError) as info:
        provider.get_accounts(auth)
    assert "account list" in str(info.value) and "Service is busy." in str(info.value)


def test_an_account_the_firm_no_longer_finds_says_so(sim, provider):
    auth = provider.authenticate(sim_credentials())
    with pytest.raises(BrokerAPIError, match="no longer finds account 999"):
        list(provider.get_trades(auth, BrokerAccountInfo("777", "999"), SINCE, UNTIL))


def test_trades_are_searched_day_by_day_with_the_documented_fields_oldest_first(sim, provider):
    sim.add_fills(536, 10, start=SINCE + timedelta(hours=14), step=timedelta(hours=9))
    trades = list(
        provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, SINCE + timedelta(days=4))
    )
    assert {t.broker_trade_id for t in trades} == sim.expected_ids(536)
    assert [t.executed_at for t in trades] == sorted(t.executed_at for t in trades)
    searches = sim.bodies("/api/Trade/search")
    assert len(searches) == 4
    for body in searches:
        assert set(body) == {"accountId", "startTimestamp", "endTimestamp"} and body["accountId"] == 536
        start, end = (datetime.fromisoformat(body[k]) for k in ("startTimestamp", "endTimestamp"))
        assert end - start <= timedelta(days=1)
    assert searches[0]["startTimestamp"] == "2026-11-02T00:00:00.000Z"


def test_a_fill_keeps_microseconds_side_size_fees_and_the_point_value(sim, provider):
    opening, closing = sim.add_fills(536, 2, start=datetime(2026, 11, 3, 14, 30, 5, 167760, UTC), step=timedelta(0))
    assert opening["creationTimestamp"] == "2026-11-03T14:30:05.16776+00:00"  # the fraction as a real account sends it
    trades = list(provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, UNTIL))
    first, second = trades
    assert first.executed_at == datetime(2026, 11, 3, 14, 30, 5, 167760, UTC)
    # The opening fill (profitAndLoss null, a half-turn) is a fill like the closing one.
    assert opening["profitAndLoss"] is None and first.broker_trade_id == str(opening["id"])
    assert (first.side, second.side) == (BUY, SELL)
    assert (first.symbol, first.asset_class, first.multiplier) == ("ESZ6", "FUT", Decimal(50))
    assert first.fees == Decimal("1.4") and first.quantity == Decimal(1) and second.quantity == Decimal(2)
    assert first.price == Decimal("6064.25") and first.order_id == str(opening["orderId"])


def test_commissions_are_added_to_fees(sim, provider):
    (fill,) = sim.add_fills(536, 1, start=SINCE + timedelta(hours=1), step=timedelta(0))
    fill["commissions"] = 0.5
    (trade,) = provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, UNTIL)
    assert trade.fees == Decimal("1.9")


def test_a_micro_contract_is_valued_at_its_own_point_value(sim, provider):
    sim.add_fills(536, 2, start=SINCE + timedelta(hours=1), step=timedelta(minutes=1), contract="CON.F.US.MNQ.Z26")
    trades = list(provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, UNTIL))
    assert {(t.symbol, t.multiplier) for t in trades} == {("MNQZ6", Decimal(2))}


def test_each_contract_is_resolved_once_across_windows_and_syncs(sim, provider):
    for contract in ("CON.F.US.EP.Z26", "CON.F.US.ENQ.Z26"):
        sim.add_fills(536, 6, start=SINCE + timedelta(hours=2), step=timedelta(hours=11), contract=contract)
    auth = provider.authenticate(sim_credentials())
    list(provider.get_trades(auth, ACCOUNT, SINCE, UNTIL))
    list(get_broker_provider("projectx").get_trades(auth, ACCOUNT, SINCE, UNTIL))
    assert sorted(b["contractId"] for b in sim.bodies("/api/Contract/searchById")) == [
        "CON.F.US.ENQ.Z26",
        "CON.F.US.EP.Z26",
    ]


def test_a_contract_the_api_cannot_find_falls_back_to_the_root_table(sim, provider):
    sim.add_fills(536, 1, start=SINCE + timedelta(hours=1), step=timedelta(0))
    sim.forget_contract("CON.F.US.EP.Z26")
    (trade,) = provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, UNTIL)
    assert (trade.symbol, trade.multiplier) == ("ESZ6", Decimal(50))


def test_a_contract_nobody_can_name_stops_with_a_clear_error(sim, provider):
    (fill,) = sim.add_fills(536, 1, start=SINCE + timedelta(hours=1), step=timedelta(0))
    fill["contractId"] = "CON.F.US.ZZZ.Z26"
    with pytest.raises(BrokerAPIError, match="what contract CON.F.US.ZZZ.Z26 is"):
        list(provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, UNTIL))


def test_a_voided_fill_comes_as_a_bust_not_a_trade(sim, provider):
    fills = sim.add_fills(536, 3, start=SINCE + timedelta(hours=1), step=timedelta(minutes=5))
    sim.void(fills[1]["id"])
    out = list(provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, UNTIL))
    assert [t.busted for t in out] == [False, True, False]
    assert out[1].broker_trade_id == str(fills[1]["id"])


def test_open_positions_are_signed_by_their_type_and_named_as_the_fills_are(sim, provider):
    sim.add_fills(536, 3, start=SINCE + timedelta(hours=1), step=timedelta(minutes=5))
    sim.add_fills(536, 2, start=SINCE + timedelta(hours=2), step=timedelta(minutes=5), contract="CON.F.US.MNQ.Z26")
    auth = provider.authenticate(sim_credentials())
    held = {}
    for t in provider.get_trades(auth, ACCOUNT, SINCE, UNTIL):
        held[t.symbol] = held.get(t.symbol, 0) + (t.quantity if t.side == "BUY" else -t.quantity)
    positions = provider.get_positions(auth, ACCOUNT)
    assert {p.symbol: p.quantity for p in positions} == held == {"ESZ6": 2, "MNQZ6": -1}
    assert sim.bodies("/api/Position/searchOpen") == [{"accountId": 536}]


def test_a_window_that_may_be_cut_short_is_asked_again_in_halves(sim, provider, monkeypatch):
    monkeypatch.setattr(projectx, "SUSPECT_TRUNCATED", 4)
    sim.add_fills(536, 6, start=SINCE + timedelta(hours=1), step=timedelta(hours=3))
    trades = list(
        provider.get_trades(provider.authenticate(sim_credentials()), ACCOUNT, SINCE, SINCE + timedelta(days=1))
    )
    assert sorted(t.broker_trade_id for t in trades) == sorted(sim.expected_ids(536))
    assert len(sim.bodies("/api/Trade/search")) > 1


def test_429_pauses_this_user_only(sim, provider):
    sim.limit = 1
    with pytest.raises(BrokerRateLimitError) as info:
        provider.get_accounts(provider.authenticate(sim_credentials()))
    assert info.value.retry_after == 60  # no Retry-After is documented: the HTTP layer's default
    assert get_limiter().try_acquire("projectx", scope=scope_for(f"topstep:{USERNAME}")) > 30
    assert get_limiter().try_acquire("projectx", scope=scope_for("topstep:someone-else")) == 0


# --- firms ------------------------------------------------------------------------------------
def test_the_firm_chooses_the_host(provider):
    with responses.RequestsMock() as rsps:
        rsps.post("https://api.bulenox.projectx.com/api/Auth/loginKey", json=envelope(token="t"))
        auth = provider.authenticate(credentials(firm="bulenox"))
    assert auth.extra["firm"] == "bulenox"


def test_the_form_offers_every_firm_of_the_table_by_name():
    (firm,) = [f for f in provider_classes()["projectx"].credential_fields if f.name == "firm"]
    offered = dict(firm.choices)
    assert offered["topstep"] == "Topstep (TopstepX)" and offered["e8"] == "E8 Futures (E8X)"
    assert len(offered) == len(projectx.load_firms()) >= 19


def test_an_operator_file_adds_and_corrects_firms(tmp_path):
    extra = tmp_path / "firms.toml"
    extra.write_text(
        '[newfirm]\nname = "New Firm"\nhost = "api.newfirm.projectx.com"\n\n'
        '[alphaticks]\nname = "Alpha Futures"\nhost = "api.alphafutures.projectx.com"\n'
    )
    firms = projectx.load_firms(str(extra))
    assert firms["newfirm"]["host"] == "api.newfirm.projectx.com"
    assert firms["alphaticks"]["host"] == "api.alphafutures.projectx.com"
    assert firms["topstep"]["host"] == "api.topstepx.com"


def test_an_operator_file_with_a_url_instead_of_a_host_names_the_setting(tmp_path):
    extra = tmp_path / "firms.toml"
    extra.write_text('[evil]\nname = "Evil"\nhost = "https://evil.example/steal"\n')
    with pytest.raises(BrokerConfigurationError, match="PROJECTX_FIRMS_FILE.*firm \\[evil\\]"):
        projectx.load_firms(str(extra))


# --- through the sync engine ------------------------------------------------------------------
@pytest.fixture
def roomy_limits(settings):
    """A first sync reads 90 days per account, more than one minute's budget: no real pause in a test."""
    settings.BROKER_RATE_LIMITS = {"projectx": {"requests": {"limit": 10_000}}}
    # The limiter is built once per process from the settings: rebuild it with these, then without.
    ratelimit.get_limiter.cache_clear()
    yield
    ratelimit.get_limiter.cache_clear()


def connect(trader) -> BrokerConnection:
    return services.connection_create(
        owner=trader,
        broker_type="projectx",
        label="TopstepX",
        sync_enabled=False,
        credentials={"firm": "topstep", "username": USERNAME, "api_key": API_KEY},
    )


@pytest.mark.django_db
def test_a_voided_fill_leaves_the_journal_and_the_sync_log_counts_it(sim, trader, roomy_limits):
    fills = sim.add_fills(536, 4, start=datetime.now(UTC) - timedelta(hours=3), step=timedelta(minutes=20))
    connection = connect(trader)
    first = runs.run_inline(connection.pk)
    assert first.status == SyncLog.Status.SUCCESS and first.trades_imported == 4
    sim.void(fills[2]["id"])
    second = runs.run_inline(connection.pk)
    assert second.trades_imported == 0
    assert second.detail["536"] == {"imported": 0, "skipped": 3, "busted": 1, "differences": []}
    assert {t.broker_trade_id for t in trades_visible_to(trader)} == sim.expected_ids(536)
    busted = Trade.objects.get(broker_trade_id=str(fills[2]["id"]))
    assert busted.deleted_at is not None and busted.raw["voided"] is True
    third = runs.run_inline(connection.pk)
    assert "busted" not in third.detail["536"], "a bust is counted once"


@pytest.mark.django_db
def test_the_day_long_token_is_stored_and_reused_and_a_dead_one_replaced(sim, trader, roomy_limits):
    connection = connect(trader)
    runs.run_inline(connection.pk)
    runs.run_inline(connection.pk)
    assert sim.logins == [USERNAME], "one login serves every sync of the day"
    sim.expire_tokens()
    log = runs.run_inline(connection.pk)
    assert log.status == SyncLog.Status.SUCCESS and sim.logins == [USERNAME, USERNAME]


@pytest.mark.django_db
def test_a_token_twenty_hours_old_is_renewed_not_logged_in_again(sim, trader, roomy_limits):
    connection = connect(trader)
    runs.run_inline(connection.pk)
    connection.refresh_from_db()
    old = connection.auth
    ageing = AuthResult(
        token=old.token,
        expires_at=datetime.now(UTC) + timedelta(hours=3),
        extra=old.extra,
        issued_at=datetime.now(UTC) - timedelta(hours=21),
    )
    sessions.store(connection, ageing)
    auth, _ = sessions.session(connection, get_broker_provider("projectx"))
    assert sim.renewals == 1 and sim.logins == [USERNAME] and auth.token != old.token


@pytest.mark.django_db
def test_a_refused_key_asks_the_trader_to_act_and_nothing_secret_is_logged(sim, trader, roomy_limits, caplog):
    sim.refuse_login(USERNAME, 10, "API key authentication is disabled.")
    connection = connect(trader)
    with caplog.at_level("INFO"):
        log = runs.run_inline(connection.pk)
    connection.refresh_from_db()
    assert log.status == SyncLog.Status.FAILED and log.error_kind == "auth"
    assert "has not enabled API access" in log.error_message and connection.credentials_rejected
    assert "broker_http" in caplog.text and API_KEY not in caplog.text and API_KEY not in log.error_message


@pytest.mark.django_db
def test_the_product_manager_hears_of_projectx_once(settings):
    settings.MANAGERS = [("PM", "pm@example.com")]
    for key in provider_classes():
        KnownProvider.objects.get_or_create(key=key)
    KnownProvider.objects.filter(key="projectx").delete()
    assert governance.announce_new_providers() == ["ProjectX (futures prop firms) (projectx)"]
    assert governance.announce_new_providers() == []
    assert [m.subject for m in mail.outbox] == [
        f"{settings.EMAIL_SUBJECT_PREFIX}New broker available: ProjectX (futures prop firms) (projectx)"
    ]
