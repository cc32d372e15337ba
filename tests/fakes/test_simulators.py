"""The loopback broker simulators behave as the brokers' documentation says, seen through the real providers."""

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import requests
from defusedxml import ElementTree
from django.test import override_settings

from brokers.providers.errors import BrokerAuthError, BrokerRateLimitError
from brokers.providers.ibkr_flex import parse_report
from brokers.providers.ratelimit import get_limiter
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import BrokerCredentials
from tests.fakes import ibkr_flex as sim_ibkr_flex
from tests.fakes.ibkr_flex import FakeFlex
from tests.fakes.loopback import LoopbackServer
from tests.fakes.tradovate import FakeTradovate


# --- the shared server's faults --------------------------------------------------------------
def test_every_third_request_fails_a_cut_answer_breaks_off_and_heal_ends_both():
    with LoopbackServer(prefix="/v1") as server:
        server.route("GET", "/ping", lambda request: (200, {"pong": request.query["n"]}))
        statuses = [requests.get(f"{server.url}/ping", params={"n": n}).status_code for n in range(6)]
        assert statuses == [200, 200, 200, 200, 200, 200]
        server.fail_every(3, status=502)
        statuses = [requests.get(f"{server.url}/ping", params={"n": n}).status_code for n in range(6)]
        assert statuses == [200, 200, 502, 200, 200, 502]
        server.cut_next()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(f"{server.url}/ping", params={"n": 0})
        server.fail_every(2, status=503, path="/ping")
        server.cut_next(path="/elsewhere")
        server.heal()
        statuses = [requests.get(f"{server.url}/ping", params={"n": n}).status_code for n in range(3)]
        assert statuses == [200, 200, 200]
        assert server.count("/ping") == 16 and server.faults_served == {"502": 2, "cut": 1}


# --- Tradovate -------------------------------------------------------------------------------
def tradovate_login(password: str = "pw") -> BrokerCredentials:
    values = {"username": "alice", "password": password, "app_id": "TJ", "app_version": "1.0", "cid": "1", "sec": "s"}
    return BrokerCredentials(values=values, environment="demo")


def bearer(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['accessToken']}"}


@pytest.fixture
def tradovate():
    with FakeTradovate({"alice": 2, "bob": 1}, fills_per_account=3) as fake:
        with override_settings(BROKER_BASE_URLS={"tradovate": fake.url}):
            yield fake


def test_tradovate_logs_in_lists_accounts_and_resolves_every_fill(tradovate):
    provider = get_broker_provider("tradovate", "demo")
    with pytest.raises(BrokerAuthError):
        provider.authenticate(tradovate_login(password="wrong"))
    auth = provider.authenticate(tradovate_login())
    accounts = provider.get_accounts(auth)
    since = datetime.now(UTC) - timedelta(hours=2)
    imported = {
        a.external_id: {t.broker_trade_id for t in provider.get_trades(auth, a, since, datetime.now(UTC))}
        for a in accounts
    }
    assert imported == tradovate.expected_ids("alice") and all(len(ids) == 3 for ids in imported.values())
    assert tradovate.logins == {"alice": 1}


def test_tradovate_lists_the_whole_day_on_every_call_including_late_fills(tradovate):
    login = requests.post(f"{tradovate.url}/auth/accesstokenrequest", json={"name": "bob", "password": "pw"}).json()
    (account,) = tradovate.account_ids("bob")
    executed = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
    late = tradovate.add_late_fill(account, executed)
    listing = requests.get(f"{tradovate.url}/fill/list", headers=bearer(login), params={"since": "x"}).json()
    assert len(listing) == 4 and {str(f["id"]) for f in listing} == tradovate.expected_ids("bob")[str(account)]
    assert next(f for f in listing if f["id"] == late)["timestamp"] == "2026-11-20T14:30:00.000Z"


def test_tradovate_penalty_tickets_are_honoured_by_a_resend_carrying_the_ticket(tradovate):
    provider = get_broker_provider("tradovate", "demo")
    tradovate.penalize(1, p_time=0.2, path="/auth/accesstokenrequest")
    auth = provider.authenticate(tradovate_login())
    tradovate.penalize(1, p_time=0.2, path="/account/list")
    assert len(provider.get_accounts(auth)) == 2
    assert (tradovate.tickets_issued, tradovate.tickets_redeemed) == (2, 2)
    first_login, resent_login = (r for r in tradovate.requests if r.path == "/auth/accesstokenrequest")
    assert "p-ticket" not in first_login.json() and resent_login.json()["p-ticket"]
    listings = [r for r in tradovate.requests if r.path == "/account/list"]
    assert ["p-ticket" in r.query for r in listings] == [False, True]


def test_tradovate_answers_an_early_resend_with_a_new_ticket(tradovate):
    tradovate.penalize(1, p_time=30)
    login_url, login = f"{tradovate.url}/auth/accesstokenrequest", {"name": "bob", "password": "pw"}
    ticket = requests.post(login_url, json=login).json()
    again = requests.post(login_url, json={**login, "p-ticket": ticket["p-ticket"]}).json()
    assert 0 < again["p-time"] <= 30 and again["p-ticket"] != ticket["p-ticket"]
    assert tradovate.logins["bob"] == 0 and tradovate.tickets_redeemed == 0


def test_tradovate_captcha_ticket_stops_the_provider(tradovate):
    tradovate.penalize(1, p_time=1, captcha=True)
    with pytest.raises(BrokerRateLimitError, match="captcha"):
        get_broker_provider("tradovate", "demo").authenticate(tradovate_login())
    assert tradovate.count("/auth/accesstokenrequest") == 1 and tradovate.logins["alice"] == 0


def test_tradovate_lockout_is_429_with_retry_after(tradovate):
    tradovate.lock_out(1, retry_after=30)
    with pytest.raises(BrokerRateLimitError) as lockout:
        get_broker_provider("tradovate", "demo").authenticate(tradovate_login())
    assert lockout.value.status_code == 429 and lockout.value.retry_after == 30
    answer = requests.post(f"{tradovate.url}/auth/accesstokenrequest", json={"name": "bob", "password": "pw"})
    assert answer.status_code == 200 and answer.json()["accessToken"], "one request locked out, as asked"


def test_tradovate_tokens_expire_and_a_renewal_extends_the_session():
    with FakeTradovate({"alice": 1}, token_lifetime_s=0.5) as fake:
        login = requests.post(f"{fake.url}/auth/accesstokenrequest", json={"name": "alice", "password": "pw"}).json()
        time.sleep(0.3)
        renewed = requests.get(f"{fake.url}/auth/renewaccesstoken", headers=bearer(login)).json()
        assert renewed["accessToken"] != login["accessToken"] and renewed["expirationTime"] > login["expirationTime"]
        time.sleep(0.3)  # past the login's lifetime, within the renewed one
        assert requests.get(f"{fake.url}/account/list", headers=bearer(renewed)).status_code == 200
        assert requests.get(f"{fake.url}/account/list", headers={"Authorization": "Bearer x"}).status_code == 401
        time.sleep(0.3)
        assert requests.get(f"{fake.url}/account/list", headers=bearer(renewed)).status_code == 401
        assert requests.get(f"{fake.url}/auth/renewaccesstoken", headers=bearer(renewed)).status_code == 401
        assert (fake.logins["alice"], fake.renewals["alice"]) == (1, 1)


# --- IBKR Flex -------------------------------------------------------------------------------
class Clock:
    """Stands in for the simulator's monotonic clock, so that its limits are tested without waiting."""

    def __init__(self):
        self.now = 1000.0
        self.step = 0.0  # seconds the clock moves on after each reading

    def monotonic(self) -> float:
        self.now += self.step
        return self.now - self.step


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(sim_ibkr_flex, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def flex_get(flex: FakeFlex, path: str, **params):
    query = {"t": flex.token, "v": "3", **params}
    return ElementTree.fromstring(requests.get(f"{flex.url}/{path}", params=query).content)


def send_request(flex: FakeFlex, fd: str = "20000101", td: str = "20991231"):
    return flex_get(flex, "SendRequest", q=flex.query_id, fd=fd, td=td)


def test_flex_answers_1018_beyond_one_request_a_second_or_ten_a_minute(clock):
    with FakeFlex() as flex:
        assert send_request(flex).findtext("Status") == "Success"
        clock.now += 0.9
        assert send_request(flex).findtext("ErrorCode") == "1018"
        for _ in range(9):
            clock.now += 1.01
            assert send_request(flex).findtext("Status") == "Success"
        clock.now += 5
        assert send_request(flex).findtext("ErrorCode") == "1018", "an 11th request within a minute"
        clock.now += 60
        assert send_request(flex).findtext("Status") == "Success"
        assert flex.refused_1018 == 2 and len(flex.send_requests) == 11


def test_flex_report_after_1019_polls_holds_both_accounts_executions_within_the_period(clock):
    with FakeFlex(polls_before_ready=2) as flex:
        days = sorted({r["tradeDate"] for r in flex.executions["U2222222"]})
        first, last = days[1], days[3]
        sent = send_request(flex, fd=first, td=last)
        url, reference = sent.findtext("Url"), sent.findtext("ReferenceCode")
        assert url == f"{flex.url}/GetStatement"
        answers = []
        for _ in range(3):
            clock.now += 1.01
            answers.append(flex_get(flex, "GetStatement", q=reference))
        assert [a.findtext("ErrorCode") for a in answers[:2]] == ["1019", "1019"]
        report = parse_report(answers[2])
        period = (datetime.strptime(first, "%Y%m%d").date(), datetime.strptime(last, "%Y%m%d").date())
        assert {a.external_id: a.currency for a in report.accounts} == {"U1111111": "USD", "U2222222": "EUR"}
        for account in ("U1111111", "U2222222"):
            ids = {t.broker_trade_id for t in report.trades[account]}
            assert ids == flex.expected_ids(account, *period) and len(ids) == 3, "no ORDER or CLOSED_LOT rows"
        option = next(t for t in report.trades["U2222222"] if t.asset_class == "OPT")
        assert (option.multiplier, option.strike, option.option_right) == (100, 250, "C")
        assert option.raw["fxRateToBase"] == "0.9234"
        assert flex.send_requests == [period] and flex.polls == 3


def test_flex_refuses_without_user_agent_unknown_token_unknown_reference_and_on_demand(clock):
    with FakeFlex() as flex:
        no_agent = requests.get(
            f"{flex.url}/SendRequest",
            params={"t": flex.token, "q": flex.query_id, "v": "3"},
            headers={"User-Agent": ""},
        )
        assert ElementTree.fromstring(no_agent.content).findtext("ErrorCode") == "1020"
        assert flex_get(flex, "SendRequest", t="not-the-token", q=flex.query_id).findtext("ErrorCode") == "1015"
        assert flex_get(flex, "GetStatement", q="123").findtext("ErrorCode") == "1017"
        clock.now += 1.01
        assert flex_get(flex, "SendRequest", q="000000").findtext("ErrorCode") == "1014"
        flex.refuse_next("1009", times=2)
        clock.now += 1.01
        assert [send_request(flex).findtext("ErrorCode") for _ in range(2)] == ["1009", "1009"]
        assert send_request(flex).findtext("Status") == "Success", "refusals do not count against the limit"


@pytest.fixture
def unpaced_flex():
    """The provider's limiter without its 1-call-in-2-s bucket (the limiter is built once from settings)."""
    get_limiter.cache_clear()
    with override_settings(BROKER_RATE_LIMITS={"ibkr_flex": {"per_second": {"window_s": 0.01}}}):
        yield
    get_limiter.cache_clear()


def test_flex_through_the_provider_one_report_serves_both_accounts(clock, unpaced_flex):
    clock.step = 2.0  # this test is about the formats, not the limits: neither side waits
    with (
        FakeFlex(polls_before_ready=1) as flex,
        override_settings(BROKER_BASE_URLS={"ibkr_flex": flex.url}, IBKR_FLEX_POLL_PAUSE_S=0),
    ):
        provider = get_broker_provider("ibkr_flex")
        auth = provider.authenticate(BrokerCredentials(values={"token": flex.token, "query_id": flex.query_id}))
        accounts = provider.get_accounts(auth)
        assert sorted(a.external_id for a in accounts) == ["U1111111", "U2222222"]
        assert len(flex.send_requests) == 1 and flex.polls == 2 and flex.refused_1018 == 0
