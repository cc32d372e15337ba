"""SnapTrade on the shared contract, plus signing, the portal calls, activities and both 429 budgets.

Payloads follow SnapTrade's documented shapes (BrokerageAuthorization, Account,
PaginatedUniversalActivity, the 429 body and X-RateLimit-* headers).
"""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest

from brokers.models import SyncLog
from brokers.providers import ratelimit, snaptrade
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, BrokerRateLimitError, BrokerSetupError
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import BUY, SELL, BrokerAccountInfo, BrokerCredentials
from journal.models import Trade
from sync import runs
from tests.e2e.broker_conditions import snaptrade_link
from tests.fakes.snaptrade import SnapTradeSim, configure
from tests.providers.contract import SECRET_MARK, SINCE, UNTIL, ProviderContract

# Outside the contract class, a stub a test never reaches fails it (tests/conftest.py's rsps).
RSPS_ALL_FIRED = True
API = "https://api.snaptrade.com/api/v1"
CLIENT_ID = "JOURNALTEST"
CONSUMER_KEY = f"consumer-{SECRET_MARK}"
USER_SECRET = f"secret-{SECRET_MARK}"
AUTH_ID = "8b5f262d-4bb9-365d-888a-202bd3b15fa1"
ACCOUNT_ID = "917c8734-8470-4a3e-a18f-57c3f2ee6631"


@pytest.fixture(autouse=True)
def operator_key(settings):
    settings.SNAPTRADE_CLIENT_ID = CLIENT_ID
    settings.SNAPTRADE_CONSUMER_KEY = CONSUMER_KEY
    settings.SNAPTRADE_MANUAL_REFRESH_HOURS = 0


def authorization(disabled=False, freshness="delayed"):
    return {
        "id": AUTH_ID,
        "created_date": "2024-08-20T21:56:19.123935Z",
        "brokerage": {"id": "ebf91a5b", "slug": "ROBINHOOD", "name": "Robinhood", "display_name": "Robinhood"},
        "name": "Connection-1",
        "type": "read",
        "disabled": disabled,
        "disabled_date": "2024-09-01T10:00:00Z" if disabled else None,
        "data_freshness_mode": freshness,
        "meta": {},
    }


def account_row(account_id=ACCOUNT_ID, status="open"):
    return {
        "id": account_id,
        "brokerage_authorization": AUTH_ID,
        "name": "Robinhood Individual",
        "number": "Q6542138443",
        "institution_name": "Robinhood",
        "status": status,
        "balance": {"total": {"amount": 15363.23, "currency": "USD"}},
        "meta": {},
    }


def activity(n, *, kind="BUY", units=10, price=150.25, fee=0.5, when="2026-11-10T15:30:00Z", option=None, **extra):
    row = {
        "id": f"act-{n}",
        "symbol": None
        if option
        else {
            "id": "sym-1",
            "symbol": "AAPL",
            "raw_symbol": "AAPL",
            "description": "APPLE INC",
            "currency": {"id": "c1", "code": "USD", "name": "US Dollar"},
            "type": {"id": "t1", "code": "cs", "description": "Common Stock"},
        },
        "option_symbol": option,
        "price": price,
        "units": units,
        "amount": -units * price,
        "currency": {"id": "c1", "code": "USD", "name": "US Dollar"},
        "type": kind,
        "option_type": "",
        "description": "APPLE INC",
        "trade_date": when,
        "settlement_date": "2026-11-12T00:00:00Z",
        "fee": fee,
        "fx_rate": None,
        "institution": "Robinhood",
        "external_reference_id": f"order-{n}",
    }
    row.update(extra)
    return row


def page(rows, total=None, offset=0):
    return {
        "data": rows,
        "pagination": {"offset": offset, "limit": 1000, "total": len(rows) if total is None else total},
    }


def make_auth(personal=False):
    key = snaptrade.SnapTradeKey(CLIENT_ID, CONSUMER_KEY, personal=personal)
    return snaptrade.session(key, "journal-user-1", USER_SECRET, authorization())


def make_account():
    return BrokerAccountInfo(external_id=ACCOUNT_ID, name="Robinhood Individual ····8443")


def query(call) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(call.request.url).query).items()}


class TestSnapTradeContract(ProviderContract):
    provider_key = "snaptrade"

    def stub_credentials(self):
        return BrokerCredentials(values={"authorization_id": AUTH_ID, "brokerage": "Robinhood"})

    def stub_login_ok(self, rsps):
        pass  # a user secret needs no renewal

    def stub_login_refused(self, rsps):
        pass  # authenticate() never calls SnapTrade: only the portal can mend a link

    def auth(self):
        return make_auth()

    def stub_accounts(self, rsps):
        rsps.get(f"{API}/authorizations/{AUTH_ID}", json=authorization())
        rsps.get(
            f"{API}/authorizations/{AUTH_ID}/accounts",
            json=[account_row(), account_row("acc-2"), account_row("acc-closed", status="closed")],
        )
        return [ACCOUNT_ID, "acc-2"]

    def account(self):
        return make_account()

    def stub_trades(self, rsps, account):
        rsps.get(
            f"{API}/accounts/{account.external_id}/activities",
            json=page([activity(1), activity(2, kind="SELL", units=-4), activity(3, kind="DIVIDEND", units=0)]),
        )
        return 2

    def stub_server_error(self, rsps):
        rsps.get(f"{API}/authorizations/{AUTH_ID}", status=500, json={"detail": "Encountered an unexpected exception."})

    def stub_rate_limited(self, rsps, retry_after):
        rsps.get(
            f"{API}/authorizations/{AUTH_ID}",
            status=429,
            json={"detail": f"Request was throttled. Expected available in {retry_after} seconds.", "code": "0000"},
            headers={"X-RateLimit-Limit": "250", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(retry_after)},
        )

    def limiter_scope(self):
        return {"customer": ratelimit.scope_for(CLIENT_ID)}


@pytest.fixture
def provider():
    return get_broker_provider("snaptrade")


# --- signing -----------------------------------------------------------------------------------
def test_the_canonical_string_is_the_one_in_snaptrade_s_worked_example():
    # docs.snaptrade.com/docs/request-signatures: registerUser with clientId PASSIVTEST at 1635790389.
    assert snaptrade.canonical_content(
        {"userId": "new_user_123"}, "/api/v1/snapTrade/registerUser", "clientId=PASSIVTEST&timestamp=1635790389"
    ) == (
        '{"content":{"userId":"new_user_123"},"path":"/api/v1/snapTrade/registerUser",'
        '"query":"clientId=PASSIVTEST&timestamp=1635790389"}'
    )


def test_the_signature_of_snaptrade_s_published_test_key_and_payload():
    # SnapTrade's API reference (Signature schema) signs this payload with this shared test key;
    # the value is what HMAC-SHA256 + Base64 of that exact string gives.
    signed = snaptrade.signature(
        "UxrFb4cHdRWlmJKNuJjA6hoaN8uVa6jPGFVUl2UKHuKmurCnaU",
        {"userSecret": "CHRIS.P.BACON", "userId": "api@passiv.com"},
        "/api/v1/snapTrade/mockSignature",
        "clientId=PASSIVTEST&timestamp=1635790389",
    )
    assert signed == "ZNUcaf2UIvd1QHV7X6Dn6AbJq+nLRWRrqcLyW3Nq5vw="


def test_an_empty_body_is_signed_as_null():
    assert (
        snaptrade.canonical_content({}, "/api/v1/accounts", "a=1")
        == '{"content":null,"path":"/api/v1/accounts","query":"a=1"}'
    )


def test_every_request_carries_client_id_timestamp_and_a_signature_of_exactly_what_was_sent(provider, rsps):
    rsps.post(f"{API}/snapTrade/registerUser", json={"userId": "journal-u", "userSecret": USER_SECRET})
    key = snaptrade.SnapTradeKey(CLIENT_ID, CONSUMER_KEY)
    assert provider.register_user(key, "journal-u") == USER_SECRET
    sent = rsps.calls[0].request
    raw_query = urlparse(sent.url).query
    q = query(rsps.calls[0])
    assert q["clientId"] == CLIENT_ID and abs(int(q["timestamp"]) - datetime.now(UTC).timestamp()) < 5
    body = json.loads(sent.body)
    assert body == {"userId": "journal-u"}
    assert sent.headers["Signature"] == snaptrade.signature(
        CONSUMER_KEY, body, "/api/v1/snapTrade/registerUser", raw_query
    )


# --- the portal ----------------------------------------------------------------------------------
def test_the_portal_address_is_asked_for_read_only_with_our_callback_and_the_reconnect_target(provider, rsps):
    rsps.post(f"{API}/snapTrade/login", json={"redirectURI": "https://app.snaptrade.com/snapTrade/redeemToken?token=x"})
    key = snaptrade.SnapTradeKey(CLIENT_ID, CONSUMER_KEY)
    url = provider.portal_url(
        key,
        "journal-u",
        USER_SECRET,
        redirect="https://journal.example.com/cb?state=s",
        brokerage="SCHWAB",
        reconnect=AUTH_ID,
    )
    assert url.startswith("https://app.snaptrade.com/")
    body = json.loads(rsps.calls[0].request.body)
    assert body["customRedirect"] == "https://journal.example.com/cb?state=s"
    assert (body["broker"], body["reconnect"], body["connectionType"]) == ("SCHWAB", AUTH_ID, "read")


def test_a_portal_answer_without_an_address_is_an_error(provider, rsps):
    rsps.post(f"{API}/snapTrade/login", json={"redirectURI": "javascript:alert(1)"})
    with pytest.raises(BrokerAPIError):
        provider.portal_url(snaptrade.SnapTradeKey(CLIENT_ID, CONSUMER_KEY), "u", USER_SECRET, redirect="https://x/")


def test_authorizations_are_listed_for_the_user(provider, rsps):
    rsps.get(f"{API}/authorizations", json=[authorization(), authorization(disabled=True) | {"id": "other"}])
    rows = provider.authorizations(snaptrade.SnapTradeKey(CLIENT_ID, CONSUMER_KEY), "journal-u", USER_SECRET)
    assert [r["id"] for r in rows] == [AUTH_ID, "other"]
    assert query(rsps.calls[0])["userSecret"] == USER_SECRET


# --- accounts and trades -------------------------------------------------------------------------
def test_a_broken_authorisation_asks_to_reconnect_with_the_brokerage_named(provider, rsps):
    rsps.get(f"{API}/authorizations/{AUTH_ID}", json=authorization(disabled=True))
    with pytest.raises(BrokerAuthError) as info:
        provider.get_accounts(make_auth())
    assert "Robinhood" in info.value.message and "Reconnect" in info.value.message
    assert SECRET_MARK not in info.value.message


def test_a_refused_signature_is_a_setup_error_for_the_operator_not_the_trader(provider, rsps):
    rsps.get(
        f"{API}/authorizations/{AUTH_ID}",
        status=401,
        json={"detail": "Unable to verify signature sent", "status_code": 401, "code": "1076"},
    )
    with pytest.raises(BrokerSetupError) as info:
        provider.get_accounts(make_auth())
    assert "SNAPTRADE_CONSUMER_KEY" in info.value.message and not info.value.transient
    assert SECRET_MARK not in info.value.message


def test_a_personal_key_refused_tells_the_trader_to_enter_it_again(provider, rsps):
    rsps.get(
        f"{API}/authorizations/{AUTH_ID}",
        status=401,
        json={"detail": "Unable to verify signature sent", "code": "1076"},
    )
    with pytest.raises(BrokerSetupError) as info:
        provider.get_accounts(make_auth(personal=True))
    assert "Personal key" in info.value.message


def test_a_refused_user_secret_is_an_auth_error(provider, rsps):
    rsps.get(
        f"{API}/authorizations/{AUTH_ID}",
        status=401,
        json={"detail": "Invalid userID or userSecret provided", "code": "1083"},
    )
    with pytest.raises(BrokerAuthError):
        provider.get_accounts(make_auth())


def test_a_500_is_sent_again_before_it_fails_the_run(provider, rsps, settings):
    settings.BROKER_HTTP_RETRY_BACKOFF_S = 0.01
    rsps.get(f"{API}/authorizations/{AUTH_ID}", status=500, json={"detail": "Encountered an unexpected exception."})
    rsps.get(f"{API}/authorizations/{AUTH_ID}", json=authorization())
    rsps.get(f"{API}/authorizations/{AUTH_ID}/accounts", json=[account_row()])
    assert [a.external_id for a in provider.get_accounts(make_auth())] == [ACCOUNT_ID]
    assert provider.request_retries == 1


def test_accounts_show_only_the_last_four_digits(provider, rsps):
    rsps.get(f"{API}/authorizations/{AUTH_ID}", json=authorization())
    rsps.get(f"{API}/authorizations/{AUTH_ID}/accounts", json=[account_row()])
    (account,) = provider.get_accounts(make_auth())
    assert account.name == "Robinhood Individual ····8443" and "Q6542138443" not in account.name


def test_activities_are_asked_for_trade_types_and_paged_by_offset(provider, rsps, monkeypatch):
    monkeypatch.setattr(snaptrade, "PAGE_SIZE", 2)
    url = f"{API}/accounts/{ACCOUNT_ID}/activities"
    rsps.get(url, json=page([activity(1), activity(2)], total=3))
    rsps.get(url, json=page([activity(3)], total=3, offset=2))
    trades = list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert [t.raw["id"] for t in trades] == ["act-1", "act-2", "act-3"]
    first, second = query(rsps.calls[0]), query(rsps.calls[1])
    assert (first["offset"], second["offset"], first["limit"]) == ("0", "2", "2")
    assert first["type"] == "BUY,SELL"
    assert (first["startDate"], first["endDate"]) == (SINCE.date().isoformat(), UNTIL.date().isoformat())


def test_a_long_range_is_asked_for_in_yearly_windows_that_neither_overlap_nor_leave_gaps(provider, rsps):
    url = f"{API}/accounts/{ACCOUNT_ID}/activities"
    rsps.get(url, json=page([]))
    since, until = datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 12, 31, tzinfo=UTC)
    list(provider.get_trades(make_auth(), make_account(), since, until))
    windows = [(date.fromisoformat(query(c)["startDate"]), date.fromisoformat(query(c)["endDate"])) for c in rsps.calls]
    assert windows[0][0] == since.date() and windows[-1][1] == until.date()
    assert all(later[0] == earlier[1] + timedelta(days=1) for earlier, later in zip(windows, windows[1:], strict=False))
    assert all((end - start).days < 365 for start, end in windows)


def test_trades_come_oldest_first_although_snaptrade_answers_newest_first(provider, rsps):
    rows = [activity(3, when="2026-11-12T10:00:00Z"), activity(2, when="2026-11-11T10:00:00Z"), activity(1)]
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/activities", json=page(rows))
    trades = list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert [t.raw["id"] for t in trades] == ["act-1", "act-2", "act-3"]
    assert provider.trades_ascending


def test_a_trade_carries_units_price_fee_currency_order_and_utc_time(provider, rsps):
    rsps.get(
        f"{API}/accounts/{ACCOUNT_ID}/activities",
        json=page([activity(1, kind="SELL", units=-4, price=151.5, fee=1.25, when="2026-11-10T10:30:00-05:00")]),
    )
    (trade,) = provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)
    assert (trade.side, trade.quantity, trade.price, trade.fees) == (
        SELL,
        Decimal("4"),
        Decimal("151.5"),
        Decimal("1.25"),
    )
    assert trade.executed_at == datetime(2026, 11, 10, 15, 30, tzinfo=UTC)
    assert (trade.symbol, trade.currency, trade.order_id, trade.asset_class) == ("AAPL", "USD", "order-1", "STK")


def test_a_date_only_trade_is_midnight_utc(provider, rsps):
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/activities", json=page([activity(1, when="2026-11-10")]))
    (trade,) = provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)
    assert trade.executed_at == datetime(2026, 11, 10, tzinfo=UTC)


# An AAPL call as SnapTrade describes an option in activities and holdings alike.
OPTION = {
    "id": "opt-1",
    "ticker": "AAPL  261218C00240000",
    "option_type": "CALL",
    "strike_price": 240,
    "expiration_date": "2026-12-18",
    "is_mini_option": False,
    "underlying_symbol": {"id": "u1", "symbol": "AAPL", "description": "APPLE INC"},
}


def test_an_option_trade_carries_underlying_expiry_strike_right_and_multiplier(provider, rsps):
    option = OPTION
    mini = option | {"is_mini_option": True, "option_type": "PUT"}
    rsps.get(
        f"{API}/accounts/{ACCOUNT_ID}/activities",
        json=page(
            [
                activity(1, kind="BUY", units=2, price=3.1, option=option, option_type="BUY_TO_OPEN"),
                activity(2, kind="SELL", units=-1, price=2.0, option=mini, option_type="SELL_TO_CLOSE"),
            ]
        ),
    )
    opened, closed = provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)
    assert (opened.symbol, opened.asset_class, opened.side, opened.multiplier) == ("AAPL", "OPT", BUY, Decimal("100"))
    assert (opened.expiry, opened.strike, opened.option_right) == (date(2026, 12, 18), Decimal("240"), "C")
    assert (closed.side, closed.multiplier, closed.option_right) == (SELL, Decimal("10"), "P")


def test_dividends_transfers_and_fees_are_not_trades(provider, rsps):
    rows = [activity(1), activity(2, kind="DIVIDEND"), activity(3, kind="TRANSFER"), activity(4, kind="FEE")]
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/activities", json=page(rows))
    assert [t.raw["id"] for t in provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)] == ["act-1"]


def test_an_unreadable_trade_is_left_out_and_counted_naming_the_activity(provider, rsps):
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/activities", json=page([activity(7, units=0), activity(8)]))
    trades = list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert [t.raw["id"] for t in trades] == ["act-8"]
    assert provider.unreadable_rows == ["activity act-7: no symbol, units, price or date we can read"]


# --- the two budgets -----------------------------------------------------------------------------
def _throttled(customer_left: str, account_left: str | None, reset="30", account_reset="12"):
    headers = {"X-RateLimit-Limit": "250", "X-RateLimit-Remaining": customer_left, "X-RateLimit-Reset": reset}
    if account_left is not None:
        headers |= {
            "X-RateLimit-Account-Limit": "10",
            "X-RateLimit-Account-Remaining": account_left,
            "X-RateLimit-Account-Reset": account_reset,
        }
    body = {"detail": "Request was throttled. Expected available in 12 seconds.", "status_code": 429, "code": "0000"}
    return {"status": 429, "json": body, "headers": headers}


def _wait(scope):
    return ratelimit.get_limiter().try_acquire("snaptrade", scope=scope, buckets=("customer", "account"))


def test_an_account_429_waits_for_the_account_reset_and_holds_back_only_that_account(provider, rsps):
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/activities", **_throttled("180", "0"))
    with pytest.raises(BrokerRateLimitError) as info:
        list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert info.value.retry_after == 12 and "account" in info.value.message
    customer = ratelimit.scope_for(CLIENT_ID)
    assert _wait({"customer": customer, "account": ratelimit.scope_for(f"{CLIENT_ID}:{ACCOUNT_ID}")}) > 5
    assert _wait({"customer": customer, "account": ratelimit.scope_for(f"{CLIENT_ID}:acc-2")}) == 0


def test_a_customer_429_waits_for_the_key_s_reset_and_holds_back_every_account(provider, rsps):
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/activities", **_throttled("0", "6"))
    with pytest.raises(BrokerRateLimitError) as info:
        list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert info.value.retry_after == 30 and "API key" in info.value.message
    other = {"customer": ratelimit.scope_for(CLIENT_ID), "account": ratelimit.scope_for(f"{CLIENT_ID}:acc-2")}
    assert _wait(other) > 20
    another_key = {"customer": ratelimit.scope_for("OTHERKEY"), "account": ratelimit.scope_for("OTHERKEY:acc-2")}
    assert _wait(another_key) == 0


def test_a_429_without_headers_waits_as_long_as_its_body_says(provider, rsps):
    throttled = _throttled("5", None)
    throttled["headers"] = {}
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/activities", **throttled)
    with pytest.raises(BrokerRateLimitError) as info:
        list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert info.value.retry_after == 12


def test_account_calls_book_the_account_bucket_and_stop_at_its_limit(provider, rsps, settings):
    url = f"{API}/accounts/{ACCOUNT_ID}/activities"
    rsps.get(url, json=page([]))
    limiter = ratelimit.get_limiter()
    account_limit = next(b.limit for b in limiter.buckets_for("snaptrade") if b.name == "account")
    scope = {"customer": ratelimit.scope_for(CLIENT_ID), "account": ratelimit.scope_for(f"{CLIENT_ID}:{ACCOUNT_ID}")}
    for _ in range(account_limit):
        list(provider.get_trades(make_auth(), make_account(), SINCE, UNTIL))
    assert _wait(scope) > 0, "the account's tenth call in a minute waits"
    assert limiter.try_acquire("snaptrade", scope=scope, buckets=("customer",)) == 0, "the key still has room"


# --- manual refresh ------------------------------------------------------------------------------
def test_manual_refresh_is_off_by_default(provider, rsps):
    TestSnapTradeContract().stub_accounts(rsps)
    provider.get_accounts(make_auth())
    assert not [c for c in rsps.calls if c.request.url.split("?")[0].endswith("/refresh")]


def test_manual_refresh_when_allowed_runs_at_most_once_per_period_and_never_for_real_time(provider, rsps, settings):
    settings.SNAPTRADE_MANUAL_REFRESH_HOURS = 6
    refresh = rsps.post(f"{API}/authorizations/{AUTH_ID}/refresh", json={"detail": "scheduled"})
    rsps.get(f"{API}/authorizations/{AUTH_ID}/accounts", json=[account_row()])
    rsps.get(f"{API}/authorizations/{AUTH_ID}", json=authorization())
    provider.get_accounts(make_auth())
    provider.get_accounts(make_auth())
    assert refresh.call_count == 1


def test_a_refused_refresh_does_not_fail_the_sync(provider, rsps, settings):
    settings.SNAPTRADE_MANUAL_REFRESH_HOURS = 6
    rsps.post(
        f"{API}/authorizations/{AUTH_ID}/refresh", status=403, json={"detail": "Feature is not enabled", "code": "1141"}
    )
    TestSnapTradeContract().stub_accounts(rsps)
    assert len(provider.get_accounts(make_auth())) == 2


def test_a_real_time_connection_is_never_refreshed(provider, rsps, settings):
    settings.SNAPTRADE_MANUAL_REFRESH_HOURS = 6
    rsps.get(f"{API}/authorizations/{AUTH_ID}", json=authorization(freshness="realtime"))
    rsps.get(f"{API}/authorizations/{AUTH_ID}/accounts", json=[account_row()])
    provider.get_accounts(make_auth())
    assert len(rsps.calls) == 2


# --- how often activities are read ---------------------------------------------------------------
def _pass_time(minutes: float) -> None:
    """Our record of each account's last read ages by `minutes`, as if that much time had passed."""
    client = ratelimit.get_limiter().client
    for key in client.scan_iter("snaptrade:activities-read:*"):
        record = json.loads(client.get(key))
        if "read_at" in record:
            record["read_at"] -= minutes * 60
        client.set(key, json.dumps(record))


@pytest.mark.django_db
def test_activities_are_read_once_across_a_day_of_15_minute_syncs_unless_snaptrade_refreshed(trader, settings):
    with SnapTradeSim(accounts_per_connection=1) as sim:
        configure(settings, sim)
        connection = snaptrade_link(trader, sim)
        (account,) = sim.accounts_of(connection.credentials["authorization_id"])
        path = f"/api/v1/accounts/{account['id']}/activities"
        sim.add_activity(account["id"], trade_date=datetime.now(UTC) - timedelta(days=2))

        def sync(trigger=SyncLog.Trigger.SCHEDULED):
            log = runs.run_inline(connection.pk, trigger=trigger)
            assert log.status == SyncLog.Status.SUCCESS, log.error_message
            _pass_time(15)
            return log

        assert sync().trades_imported == 1
        backfill = sim.count(path)  # the first read: three years, a request per yearly window
        for _ in range(95):
            sync()
        assert sim.count(path) == backfill, "one read across the day"
        sync()  # 24 hours after the first read
        assert sim.count(path) == backfill + 1

        late = sim.add_activity(account["id"], trade_date=datetime.now(UTC) - timedelta(hours=1))
        sync()
        assert sim.count(path) == backfill + 1, "SnapTrade has not refreshed: nothing new to read"
        sim.refresh_transactions(account["id"], datetime.now(UTC).date() + timedelta(days=1))
        assert sync().trades_imported == 1 and sim.count(path) == backfill + 2
        assert Trade.objects.filter(raw__id=late["id"]).exists()
        sync(SyncLog.Trigger.MANUAL)
        assert sim.count(path) == backfill + 3, "Sync now always reads"
    row = connection.accounts.get()
    assert row.broker_refreshed_on == datetime.now(UTC).date() + timedelta(days=1)


@pytest.mark.django_db
def test_a_read_waits_for_snaptrade_s_first_history_load_and_then_asks_for_all_of_it(trader, settings):
    with SnapTradeSim(accounts_per_connection=1) as sim:
        configure(settings, sim)
        connection = snaptrade_link(trader, sim)
        (account,) = sim.accounts_of(connection.credentials["authorization_id"])
        account["sync_status"]["transactions"]["initial_sync_completed"] = False
        old = sim.add_activity(account["id"], trade_date=datetime.now(UTC) - timedelta(days=400))
        runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
        runs.run_inline(connection.pk, trigger=SyncLog.Trigger.SCHEDULED)
        assert sim.count(f"/api/v1/accounts/{account['id']}/activities") == 0
        account["sync_status"]["transactions"]["initial_sync_completed"] = True
        log = runs.run_inline(connection.pk, trigger=SyncLog.Trigger.SCHEDULED)
    assert log.trades_imported == 1 and Trade.objects.get().raw["id"] == old["id"]


def test_a_fill_whose_activity_id_changed_is_not_imported_twice(provider, rsps):
    """SnapTrade may give a fill a new id when it re-processes a brokerage's data."""
    url = f"{API}/accounts/{ACCOUNT_ID}/activities"
    twins = [activity(1, external_reference_id="ord-9"), activity(2, external_reference_id="ord-9")]
    rsps.get(url, json=page([activity(1, external_reference_id="ord-1"), *twins]))
    rsps.get(
        url,
        json=page(
            [
                activity(7, external_reference_id="ord-1"),
                activity(8, external_reference_id="ord-9"),
                activity(9, external_reference_id="ord-9"),
            ]
        ),
    )
    first = [t.broker_trade_id for t in provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)]
    again = [t.broker_trade_id for t in provider.get_trades(make_auth(), make_account(), SINCE, UNTIL)]
    assert sorted(first) == sorted(again) and len(set(first)) == 3, "two alike fills of one order stay two"


# --- holdings, for the comparison of positions ----------------------------------------------------


def holding(symbol, units, code="cs", average=150.25):
    universal = {"id": f"sym-{symbol}", "symbol": symbol, "raw_symbol": symbol, "type": {"code": code}}
    return {"symbol": {"id": f"pos-{symbol}", "symbol": universal}, "units": units, "average_purchase_price": average}


def test_holdings_are_positions_named_as_the_activities_name_them(provider, rsps):
    rsps.get(
        f"{API}/accounts/{ACCOUNT_ID}/holdings",
        json={
            "account": {"id": ACCOUNT_ID},
            "balances": [],
            "positions": [
                holding("AAPL", 10) | {"price": 152.5},
                holding("TSLA", -3),
                holding("BTC", 0.25, "crypto"),
                holding("F", 0),
            ],
            "option_positions": [{"symbol": {"id": "p1", "option_symbol": OPTION}, "units": -2, "price": 3.1}],
            "orders": [],
        },
    )
    positions = provider.get_positions(make_auth(), make_account())
    assert [(p.symbol, p.quantity, p.average_price) for p in positions] == [
        ("AAPL", Decimal(10), Decimal("150.25")),
        ("TSLA", Decimal(-3), Decimal("150.25")),
        ("BTC", Decimal("0.25"), Decimal("150.25")),
        ("AAPL", Decimal(-2), None),
    ]
    assert [p.mark_price for p in positions] == [Decimal("152.5"), None, None, None]
    option = positions[3]
    assert (option.expiry, option.strike, option.option_right) == (date(2026, 12, 18), Decimal(240), "C")
    assert "userSecret" in rsps.calls[0].request.url


def test_holdings_we_cannot_read_skip_the_comparison(provider, rsps):
    rsps.get(f"{API}/accounts/{ACCOUNT_ID}/holdings", json={"positions": [{"symbol": None, "units": 1}]})
    with pytest.raises(BrokerAPIError, match="position"):
        provider.get_positions(make_auth(), make_account())


@pytest.mark.django_db
def test_a_run_that_reads_activities_compares_holdings_at_most_every_six_hours_and_a_lost_fill_shows(trader, settings):
    with SnapTradeSim(accounts_per_connection=1) as sim:
        configure(settings, sim)
        connection = snaptrade_link(trader, sim)
        (account,) = sim.accounts_of(connection.credentials["authorization_id"])
        holdings = f"/api/v1/accounts/{account['id']}/holdings"
        two_days_ago = datetime.now(UTC) - timedelta(days=2)
        sim.add_activity(account["id"], units=10, trade_date=two_days_ago)
        sim.add_activity(account["id"], type="SELL", units=-4, price=151.0, trade_date=two_days_ago)
        sim.add_activity(account["id"], units=2, price=3.1, option=OPTION, option_type="SELL_TO_OPEN")
        sim.activities[account["id"]][-1]["trade_date"] = two_days_ago.strftime("%Y-%m-%dT%H:%M:%SZ")

        log = runs.run_inline(connection.pk, trigger=SyncLog.Trigger.SCHEDULED)
        assert log.status == SyncLog.Status.SUCCESS and log.trades_imported == 3
        assert [a["differences"] for a in log.detail.values()] == [[]]
        assert sim.count(holdings) == 1

        # Activities not due: no holdings read and no comparison (the journal has nothing newer).
        log = runs.run_inline(connection.pk, trigger=SyncLog.Trigger.SCHEDULED)
        assert sim.count(holdings) == 1 and all("differences" not in a for a in log.detail.values())
        # Sync now reads activities, but the holdings were read less than six hours ago.
        runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
        assert sim.count(holdings) == 1

        ratelimit.get_limiter().client.delete(*ratelimit.get_limiter().client.keys("snaptrade:holdings-read:*"))
        Trade.objects.filter(quantity=4).update(deleted_at=datetime.now(UTC))
        log = runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
        assert sim.count(holdings) == 2
        assert [a["differences"] for a in log.detail.values()] == [
            [{"instrument": "AAPL", "journal": "10", "broker": "6"}]
        ]


@pytest.mark.django_db
def test_holdings_newer_than_snaptrade_s_transactions_are_not_compared(trader, settings):
    with SnapTradeSim(accounts_per_connection=1) as sim:
        configure(settings, sim)
        connection = snaptrade_link(trader, sim)
        (account,) = sim.accounts_of(connection.credentials["authorization_id"])
        sim.refresh_transactions(account["id"], datetime.now(UTC).date() - timedelta(days=1))
        log = runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
        assert log.status == SyncLog.Status.SUCCESS
        assert sim.count(f"/api/v1/accounts/{account['id']}/holdings") == 0
        assert all("differences" not in a for a in log.detail.values())


@pytest.mark.django_db
def test_a_real_time_connection_s_holdings_are_not_compared_with_activities_a_day_behind(trader, settings):
    with SnapTradeSim(accounts_per_connection=1) as sim:
        configure(settings, sim)
        connection = snaptrade_link(trader, sim)
        sim.authorizations[connection.credentials["authorization_id"]]["data_freshness_mode"] = "realtime"
        (account,) = sim.accounts_of(connection.credentials["authorization_id"])
        log = runs.run_inline(connection.pk, trigger=SyncLog.Trigger.MANUAL)
        assert log.status == SyncLog.Status.SUCCESS
        assert sim.count(f"/api/v1/accounts/{account['id']}/holdings") == 0
        assert all("differences" not in a for a in log.detail.values())
