"""Real-broker conditions played against a real worker (and beat): each scenario once, at any time scale.

The tests (tests/e2e/real/test_real_broker_conditions.py) run them fast; the drills (make drills) run
them closer to production. A scale shrinks every timing of ours together — lock TTL, run
retry delays, request backoff, Flex polling — so a retry wait stays longer than the lock's
life, as in production. The brokers' own limits are theirs: simulators enforce them in real time.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from brokers import services
from brokers.models import BrokerConnection, SyncLog
from brokers.providers import snaptrade
from brokers.vocabulary import display_status
from journal.models import Trade
from sync.models import Notice
from tests import factories
from tests.e2e.realprocess import celery_processes, finished_logs, send_sync, wait_for
from tests.fakes.ibkr_flex import FakeFlex
from tests.fakes.okx import FakeOkx
from tests.fakes.snaptrade import CLIENT_ID, CONSUMER_KEY, SnapTradeSim
from tests.fakes.snaptrade import configure as configure_snaptrade
from tests.fakes.tradovate import PASSWORD, FakeTradovate

# Production timings (settings.py defaults), in seconds.
LOCK_TTL_S = 300
RETRY_DELAYS_S = (60, 300, 900)
REQUEST_BACKOFF_S = 1
FLEX_POLL_PAUSE_S = 10


@dataclass(frozen=True)
class Timings:
    scale: float

    @property
    def lock_ttl_s(self) -> int:
        return max(1, round(LOCK_TTL_S * self.scale))

    @property
    def retry_wait_s(self) -> float:
        return sum(RETRY_DELAYS_S) * self.scale

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "SYNC_LOCK_TTL_S": str(self.lock_ttl_s),
            "SYNC_RETRY_DELAYS_S": ",".join(f"{d * self.scale:g}" for d in RETRY_DELAYS_S),
            "BROKER_HTTP_RETRY_BACKOFF_S": f"{REQUEST_BACKOFF_S * self.scale:g}",
            "IBKR_FLEX_POLL_PAUSE_S": f"{FLEX_POLL_PAUSE_S * self.scale:g}",
            "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
            **extra,
        }


def tradovate_connection(trader, broker: FakeTradovate, user: str = "alice") -> BrokerConnection:
    """A Tradovate connection with auto-sync off, so only the syncs a scenario sends run."""
    return factories.connection(
        trader,
        broker_type="tradovate",
        label=f"Tradovate {user}",
        environment="demo",
        sync_enabled=False,
        credentials={
            "username": user,
            "password": PASSWORD,
            "app_id": "TradeJournal",
            "app_version": "1.0",
            "cid": "123",
            "sec": "sec-value",
        },
    )


def imported_ids(connection) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {a.external_id: set() for a in connection.accounts.all()}
    for account, trade_id in Trade.objects.filter(account__connection=connection).values_list(
        "account__external_id", "broker_trade_id"
    ):
        ids[account].add(trade_id)
    return ids


def sync_and_wait(connection, count: int, timeout: float) -> SyncLog:
    send_sync(connection)
    return wait_for(
        lambda: finished_logs(connection).count() >= count and finished_logs(connection).first(),
        timeout,
        message=f"run {count} to finish",
    )


def retry_waits_longer_than_the_lock(trader, tmp_path: Path, timings: Timings) -> None:
    """A broker down for a whole run: one SyncLog, never interrupted, ERROR after the last attempt, one notice."""
    with FakeTradovate({"alice": 1}) as broker:
        broker.fail_every(1, 503, path="/account/list")
        connection = tradovate_connection(trader, broker)
        env = timings.env(TRADOVATE_BASE_URL=broker.url, SYNC_FAILURE_NOTIFY_AFTER="1")
        assert timings.retry_wait_s > timings.lock_ttl_s, "the scenario needs waits longer than the lock"
        with celery_processes(tmp_path, worker=True, beat=True, **env):
            send_sync(connection)
            seen = set()

            def finished():
                connection.refresh_from_db()
                seen.add(display_status(connection))
                return finished_logs(connection).first()

            log = wait_for(finished, timings.retry_wait_s * 3 + 60, interval=0.1, message="the run to give up")
            time.sleep(timings.lock_ttl_s * 2)  # a sweep that would close it wrongly has had its chance
        worker_log = (tmp_path / "worker.log").read_text()
    sweeps = len(re.findall(r"close_interrupted_runs\[[^]]+\] succeeded", worker_log))
    assert sweeps >= 3, f"the interrupted-run sweep ran only {sweeps} times: the scenario proves nothing"
    logs = list(SyncLog.objects.filter(connection=connection))
    assert [(x.status, x.attempt) for x in logs] == [(SyncLog.Status.FAILED, 4)]
    assert log.error_message.startswith("Tradovate is temporarily unavailable (HTTP 503). All 4 attempts failed")
    assert log.request_retries == 4 * 2  # every attempt sent each request three times
    connection.refresh_from_db()
    assert connection.status == BrokerConnection.Status.ERROR and connection.next_attempt_at is None
    assert "RETRYING" in seen and "CONNECTED" not in seen
    assert Notice.objects.filter(connection=connection, kind=Notice.Kind.REPEATED_FAILURE).count() == 1


def every_third_request_fails(trader, tmp_path: Path, timings: Timings, fills: int) -> None:
    """A broker answering one request in three with 503: the sync completes with every fill."""
    with FakeTradovate({"alice": 2}, fills_per_account=fills) as broker:
        broker.fail_every(3, 503)
        connection = tradovate_connection(trader, broker)
        with celery_processes(tmp_path, beat=False, **timings.env(TRADOVATE_BASE_URL=broker.url)):
            log = sync_and_wait(connection, 1, 120)
        expected = broker.expected_ids("alice")
    assert log.status == SyncLog.Status.SUCCESS, log.error_message
    assert imported_ids(connection) == expected
    assert log.trades_imported == sum(len(ids) for ids in expected.values()) == Trade.objects.count()
    assert log.request_retries > 0


def flex_two_accounts_one_statement(trader, tmp_path: Path, timings: Timings, executions: int) -> None:
    """IBKR Flex with two accounts through a real worker: every execution in one run, the statement fetched once."""
    with FakeFlex(executions_per_account=executions, polls_before_ready=2) as broker:
        connection = services.connection_create(
            owner=trader,
            broker_type="ibkr_flex",
            label="IBKR",
            sync_enabled=False,
            credentials={"token": broker.token, "query_id": broker.query_id},
        )
        with celery_processes(tmp_path, beat=False, **timings.env(IBKR_FLEX_BASE_URL=broker.url)):
            log = sync_and_wait(connection, 1, 300)
        expected = {account: broker.expected_ids(account) for account in broker.accounts}
        requests = list(broker.send_requests)
        refused = broker.refused_1018
    assert log.status == SyncLog.Status.SUCCESS, log.error_message
    assert imported_ids(connection) == expected
    # One short report proves the token and lists the accounts; one long one holds the trades.
    long_ones = [(first, last) for first, last in requests if (last - first).days > 7]
    assert len(requests) == 2 and len(long_ones) == 1, requests
    assert refused == 0, "our limiter let IBKR's own limit be reached"
    # Each account's positions come from the statement the run already had: compared, and in agreement.
    assert all(account["differences"] == [] for account in log.detail.values()), log.detail


def late_fills_land_on_the_next_sync(trader, tmp_path: Path, timings: Timings) -> None:
    """A fill that appears in the listing after its time (older than cursor - overlap) is imported next time."""
    with FakeTradovate({"alice": 1}, fills_per_account=5) as broker:
        connection = tradovate_connection(trader, broker)
        with celery_processes(tmp_path, beat=False, **timings.env(TRADOVATE_BASE_URL=broker.url)):
            first = sync_and_wait(connection, 1, 60)
            (account_id,) = broker.account_ids("alice")
            late = broker.add_late_fill(account_id, datetime.now(UTC) - timedelta(hours=6))
            second = sync_and_wait(connection, 2, 60)
        expected = broker.expected_ids("alice")
    assert (first.trades_imported, second.trades_imported, second.trades_skipped) == (5, 1, 5)
    assert str(late) in imported_ids(connection)[str(account_id)]
    assert imported_ids(connection) == expected


def short_tokens_renewed_only_as_their_life_requires(trader, tmp_path: Path, timings: Timings) -> None:
    """A token living less than the renewal margin is renewed at half its life, not at every use."""
    lifetime_s = 12.0
    with FakeTradovate({"alice": 2}, token_lifetime_s=lifetime_s) as broker:
        connection = tradovate_connection(trader, broker)
        with celery_processes(tmp_path, beat=False, **timings.env(TRADOVATE_BASE_URL=broker.url)):
            sync_and_wait(connection, 1, 60)
            connection.refresh_from_db()
            half_life = connection.auth.issued_at + timedelta(seconds=lifetime_s / 2)
            sync_and_wait(connection, 2, 60)
            assert datetime.now(UTC) < half_life, "the second sync must come within half the token's life"
            assert (broker.logins["alice"], broker.renewals["alice"]) == (1, 0)
            time.sleep(max(0.0, (half_life - datetime.now(UTC)).total_seconds() + 0.3))
            sync_and_wait(connection, 3, 60)
            sync_and_wait(connection, 4, 60)
        logins, renewals = broker.logins["alice"], broker.renewals["alice"]
        listings = broker.count("/fill/list")
    assert all(log.status == SyncLog.Status.SUCCESS for log in finished_logs(connection))
    assert listings == 4, "the two account tasks of a run share one listing"
    assert (logins, renewals) == (1, 1), (logins, renewals)


def ccxt_two_market_types_in_parallel(trader, tmp_path: Path, timings: Timings) -> None:
    """OKX through ccxt: spot and perpetuals are two accounts synced by their own tasks; a second sync adds nothing."""
    with FakeOkx({"SPOT": 250, "SWAP": 150}) as broker:
        connection = services.connection_create(
            owner=trader,
            broker_type="ccxt_okx",
            label="OKX",
            environment="live",
            sync_enabled=False,
            credentials=broker.credentials,
        )
        with celery_processes(tmp_path, beat=False, **timings.env(CCXT_OKX_BASE_URL=broker.url)):
            first = sync_and_wait(connection, 1, 120)
            second = sync_and_wait(connection, 2, 120)
        expected = {"spot": broker.expected_ids("SPOT"), "swap": broker.expected_ids("SWAP")}
        instrument_lists = broker.count("/api/v5/public/instruments")
    assert first.status == SyncLog.Status.SUCCESS, first.error_message
    assert second.status == SyncLog.Status.SUCCESS, second.error_message
    assert imported_ids(connection) == expected
    assert (first.trades_imported, second.trades_imported) == (400, 0)
    # Perpetuals are compared with OKX's positions; a spot balance is no position (deposits move it).
    compared = {account: d.get("differences") for account, d in second.detail.items()}
    assert compared == {"spot": None, "swap": []}, compared
    # Markets are cached for every worker: two runs and four account tasks listed them once per type.
    assert instrument_lists == 3, instrument_lists


def snaptrade_link(trader, sim: SnapTradeSim) -> BrokerConnection:
    """A SnapTrade connection made as the portal makes it, with auto-sync off."""
    from brokers import services
    from brokers.providers.registry import get_broker_provider

    user = services.snaptrade_user_for(trader)
    key = snaptrade.operator_key()
    provider = get_broker_provider("snaptrade")
    portal = provider.portal_url(key, user.user_id, user.secrets["user_secret"], redirect="http://127.0.0.1:9/back")
    page = requests.get(portal, timeout=5).text
    done = page.split('id="portal-connect" href="')[1].split('"')[0].replace("&amp;", "&")
    requests.get(requests.compat.urljoin(portal, done), allow_redirects=False, timeout=5)
    (authorization,) = provider.authorizations(key, user.user_id, user.secrets["user_secret"])
    return services.connection_create(
        owner=trader,
        broker_type="snaptrade",
        label="Robinhood (SnapTrade)",
        sync_enabled=False,
        credentials={"authorization_id": authorization["id"], "brokerage": "Robinhood"},
        auth=snaptrade.session(key, user.user_id, user.secrets["user_secret"], authorization),
    )


def snaptrade_accounts_inside_their_budget(trader, tmp_path: Path, timings: Timings, settings) -> None:
    """Two accounts synced in parallel stay inside SnapTrade's per-account budget: no 429, every fill once.

    Here the broker's budget window is the thing under test, so it shrinks with ours (60 s x
    scale); the counts keep SnapTrade's shape (ours below theirs: 2 where they allow 3, as 9 of 10).
    """
    window = 60 * timings.scale
    with SnapTradeSim(limit_window_s=window, account_limit=3) as sim:
        configure_snaptrade(settings, sim)
        connection = snaptrade_link(trader, sim)
        expected = {}
        for account in sim.accounts_of(connection.credentials["authorization_id"]):
            # One fill in each of the three yearly windows of the first sync's backfill.
            rows = [
                sim.add_activity(account["id"], type="BUY", units=1, price=10 + n, trade_date=days_ago(30 + 365 * n))
                for n in range(3)
            ]
            expected[account["id"]] = {snaptrade.content_key(r) for r in rows}
        limits = {"snaptrade": {"account": {"limit": 2, "window_s": window}}}
        env = timings.env(
            SNAPTRADE_BASE_URL=sim.api_url,
            SNAPTRADE_CLIENT_ID=CLIENT_ID,
            SNAPTRADE_CONSUMER_KEY=CONSUMER_KEY,
            BROKER_RATE_LIMITS_JSON=json.dumps(limits),
        )
        with celery_processes(tmp_path, beat=False, **env):
            first = sync_and_wait(connection, 1, 120)
            second = sync_and_wait(connection, 2, 120)
        throttled = dict(sim.throttled)
        # The limiter books a request when it lets it go; the simulator counts it when it arrives. Two
        # requests booked a full window apart can arrive a little closer when the first one is slowed
        # on its way, so arrivals are counted in a window shortened by a quarter for delivery time.
        delivery_allowance = window / 4
        busiest = max(
            _most_in_any_window(times, window - delivery_allowance) for times in sim.account_request_times.values()
        )
    assert first.status == SyncLog.Status.SUCCESS, first.error_message
    assert second.status == SyncLog.Status.SUCCESS, second.error_message
    assert imported_ids(connection) == expected
    assert (first.trades_imported, second.trades_imported) == (6, 0)
    # The first run read the activities and so the holdings (inside the same budget): they agree.
    assert [account.get("differences") for account in first.detail.values()] == [[], []], first.detail
    assert not any(throttled.values()), throttled
    assert busiest <= 2, busiest


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def _most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times)), default=0)
