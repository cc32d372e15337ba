"""Tradovate's organisation hosts (NinjaTrader, from 3 October 2026), against the loopback Tradovate:
a connection syncs on the host Tradovate names, an old one picks it up, a 307 is never followed,
and a host that is not Tradovate's is refused."""

from datetime import UTC, datetime, timedelta

import pytest

from brokers import services
from brokers.models import BrokerConnection
from brokers.providers.tradovate import TradovateProvider, api_base_url
from journal.models import Trade
from sync import runs
from tests.e2e.broker_conditions import tradovate_connection
from tests.fakes.tradovate import FakeTradovate, OrganisationHost

pytestmark = pytest.mark.django_db(transaction=True)
DATA_PATHS = {"/account/list", "/fill/list", "/order/items", "/fillFee/items", "/contract/items"}


@pytest.fixture
def shared(settings):
    with FakeTradovate({"alice": 2}, fills_per_account=3) as tradovate:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "tradovate": tradovate.url}
        yield tradovate


@pytest.fixture
def organisation(shared, settings):
    # The simulator's organisation host is on loopback: listed here as Tradovate's domains are in production.
    settings.TRADOVATE_API_HOST_DOMAINS = (*settings.TRADOVATE_API_HOST_DOMAINS, "127.0.0.1")
    with OrganisationHost(shared) as host:
        yield host


def imported(connection: BrokerConnection) -> int:
    return Trade.objects.filter(account__connection=connection).count()


def tokens_sent(server) -> set[str]:
    return {r.headers["Authorization"] for r in server.requests if r.headers.get("Authorization")}


def test_a_connection_on_its_organisation_host_signs_in_on_the_shared_host_and_syncs_on_its_own(
    trader, shared, organisation
):
    shared.move("alice", organisation)
    connection = tradovate_connection(trader, shared)

    log = runs.run_inline(connection.pk)

    connection.refresh_from_db()
    assert log.status == "SUCCESS" and imported(connection) == 6
    assert set(shared.calls) == {"/auth/accesstokenrequest"}, "only the login, whose answer names the hosts"
    assert DATA_PATHS <= set(organisation.calls)
    assert connection.auth.extra["api_hosts"]["demo"] == organisation.url
    assert shared.logins["alice"] == 1


def test_an_old_connection_without_hosts_picks_them_up_with_one_new_login_when_its_host_moves(
    trader, shared, organisation
):
    connection = tradovate_connection(trader, shared)
    assert runs.run_inline(connection.pk).status == "SUCCESS"
    connection.refresh_from_db()
    assert "api_hosts" not in connection.auth.extra, "stored before the organisation hosts: nothing to migrate"
    shared.add_late_fill(shared.account_ids("alice")[0], datetime.now(UTC) - timedelta(seconds=30))
    shared.move("alice", organisation)

    log = runs.run_inline(connection.pk)

    connection.refresh_from_db()
    assert log.status == "SUCCESS" and imported(connection) == 7
    assert shared.logins["alice"] == 2, "the stored session redirected: one login on the shared host, not one per call"
    assert connection.auth.extra["api_hosts"]["demo"] == organisation.url
    assert runs.run_inline(connection.pk).status == "SUCCESS"
    assert shared.logins["alice"] == 2, "the next sync goes straight to the organisation host"


def test_a_redirect_without_hosts_is_not_followed_and_tells_the_trader_what_to_do(trader, shared, organisation):
    connection = tradovate_connection(trader, shared)
    assert runs.run_inline(connection.pk).status == "SUCCESS"
    shared.move("alice", organisation, announce=False)

    log = runs.run_inline(connection.pk)

    connection.refresh_from_db()
    assert log.status == "FAILED" and connection.credentials_rejected
    assert "API host field" in connection.last_sync_error and "307" in connection.last_sync_error
    assert organisation.count() == 0, "nothing, and no token, went to where the redirect pointed"
    assert organisation.url not in connection.last_sync_error

    # The trader enters the host their firm gave them, as the message says.
    services.connection_update(connection.pk, credentials={**connection.credentials, "api_host": organisation.url})
    assert runs.run_inline(connection.pk).status == "SUCCESS"
    assert {"/account/list", "/fill/list"} <= set(organisation.calls)


def test_hosts_that_are_not_tradovates_are_refused_and_never_get_the_token(trader, shared):
    # Production's rule (no loopback listed): a token answer naming this server is hostile.
    with OrganisationHost(shared) as hostile:
        hostile.answers = {"demo": hostile.url, "live": "https://demo.tradovateapi.com.evil.example"}
        shared.move("alice", hostile)
        connection = tradovate_connection(trader, shared)

        log = runs.run_inline(connection.pk)

    connection.refresh_from_db()
    assert log.status == "FAILED" and hostile.count() == 0
    assert connection.auth is None or "api_hosts" not in connection.auth.extra
    assert tokens_sent(hostile) == set()


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example",
        "https://demo.tradovateapi.com.evil.example",
        "https://eviltradovateapi.com",
        "http://demo-acme.tradovateapi.com",
        "https://user@demo-acme.tradovateapi.com",
        "https://demo-acme.tradovateapi.com/v1/../../steal",
        "https://demo-acme.tradovateapi.com/v1?next=https://evil.example",
        "https://demo-acme.tradovateapi.com\\@evil.example",
        "http://127.0.0.1:8000",
        "",
        None,
        ["https://demo-acme.tradovateapi.com"],
    ],
)
def test_a_host_outside_tradovates_domains_or_not_https_is_refused(value):
    assert api_base_url(value) is None


@pytest.mark.parametrize(
    ("value", "base"),
    [
        ("demo-acme.tradovateapi.com", "https://demo-acme.tradovateapi.com/v1"),
        ("https://Live-Acme.tradovateapi.com/", "https://live-acme.tradovateapi.com/v1"),
        ("https://demo-api.staging.ninjatrader.dev/v1", "https://demo-api.staging.ninjatrader.dev/v1"),
    ],
)
def test_tradovates_own_hosts_become_the_rest_base_url(value, base):
    assert api_base_url(value) == base


def test_the_trader_can_only_enter_one_of_tradovates_hosts():
    values = {"username": "u", "password": "p", "app_id": "TJ", "app_version": "1.0", "cid": "1", "sec": "s"}
    assert "api_host" in TradovateProvider.validate_credentials({**values, "api_host": "evil.example"}, "demo")
    assert TradovateProvider.validate_credentials({**values, "api_host": "demo-acme.tradovateapi.com"}, "demo") == {}
