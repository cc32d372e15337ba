"""The sync path under failure: retries, auth holds, notices, locks, interrupted runs, tombstones."""

from datetime import timedelta

import pytest
import responses
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from brokers import periodic_tasks, services
from brokers.models import BrokerConnection, SyncLog
from brokers.providers.demo import DemoProvider
from brokers.providers.errors import BrokerRateLimitError
from brokers.providers.types import AuthResult, BrokerAccountInfo
from journal.models import Trade
from sync import accounts, housekeeping, locks, notifications, runs
from sync.models import Notice
from sync.outcomes import RunSuperseded
from sync.policy import retry_delay
from sync.tasks import sync_connection
from tests import factories
from tests.e2e.broker_conditions import imported_ids, tradovate_connection
from tests.fakes.tradovate import FakeTradovate

pytestmark = pytest.mark.django_db

ACCOUNT_URL = "https://paper-api.alpaca.markets/v2/account"
FILLS_URL = "https://paper-api.alpaca.markets/v2/account/activities/FILL"
POSITIONS_URL = "https://paper-api.alpaca.markets/v2/positions"
ACCOUNT = {"id": "acc-uuid", "account_number": "PA123", "currency": "USD", "status": "ACTIVE"}
FILLS = [
    {
        "id": f"2026111{i}093000000::f{i}",
        "activity_type": "FILL",
        "transaction_time": f"2026-11-1{i}T14:30:00.123Z",
        "type": "fill",
        "price": "101.25",
        "qty": "3",
        "side": "buy",
        "symbol": "AAPL",
        "order_id": f"o{i}",
        "cum_qty": "3",
        "leaves_qty": "0",
    }
    for i in range(1, 6)
]


@pytest.fixture
def alpaca(trader, django_capture_on_commit_callbacks):
    trader.email = "alice@example.com"
    trader.save()
    with django_capture_on_commit_callbacks(execute=False):
        return factories.alpaca_connection(trader, "AKTEST", "SECRET-alpaca-value", label="Alpaca paper")


def fails(rsps, status, times, url=ACCOUNT_URL, headers=None):
    for _ in range(times):
        rsps.get(url, status=status, json={"message": "nope"}, headers=headers or {})


def healthy(rsps):
    rsps.get(ACCOUNT_URL, json=ACCOUNT)
    rsps.get(POSITIONS_URL, json=[])
    rsps.get(FILLS_URL, json=FILLS)


def run(connection):
    return SyncLog.objects.get(pk=sync_connection.delay(connection.pk).get()["sync_log_id"])


def test_retry_steps_are_about_1_5_15_minutes_and_retry_after_wins_when_longer():
    for failures, base in ((1, 60), (2, 300), (3, 900)):
        delays = [retry_delay(failures) for _ in range(50)]
        assert all(base * 0.9 <= d <= base * 1.1 for d in delays)
        assert max(delays) - min(delays) > 0  # jitter spreads retries of many connections
    assert retry_delay(1, retry_after=200) == 200


@responses.activate
def test_a_request_failing_twice_is_sent_again_before_the_run_fails(alpaca):
    fails(responses, 503, 2)
    healthy(responses)
    log = run(alpaca)
    assert log.status == SyncLog.Status.SUCCESS and log.attempt == 1  # no run-level retry was needed
    assert log.request_retries == 2
    assert log.trades_imported == 5 and Trade.objects.count() == 5


@responses.activate
def test_a_broker_down_longer_than_request_retries_gives_one_success_log_after_run_retries(alpaca):
    fails(responses, 503, 6)  # two attempts of three tries each
    healthy(responses)
    log = run(alpaca)
    assert log.status == SyncLog.Status.SUCCESS and log.attempt == 3
    assert log.request_retries == 4
    assert SyncLog.objects.count() == 1
    assert log.trades_imported == 5 and Trade.objects.count() == 5
    alpaca.refresh_from_db()
    assert alpaca.status == "CONNECTED" and alpaca.last_sync_error == "" and alpaca.consecutive_failures == 0
    assert alpaca.next_attempt_at is None


@responses.activate
def test_after_the_last_retry_the_connection_is_in_error_with_a_readable_message(alpaca):
    fails(responses, 500, 4)
    log = run(alpaca)
    assert log.status == SyncLog.Status.FAILED and log.attempt == 4 and log.error_kind == "unavailable"
    alpaca.refresh_from_db()
    assert alpaca.status == "ERROR"
    assert alpaca.last_sync_error == (
        "Alpaca had an internal error (HTTP 500). All 4 attempts failed; the next scheduled sync will try again."
    )
    assert alpaca.consecutive_failures == 1
    assert len(responses.calls) == 4 * 3  # first attempt + 3 retries, each read sent three times


@responses.activate
def test_auth_failure_stops_at_once_holds_the_schedule_and_notifies_once(alpaca, django_capture_on_commit_callbacks):
    fails(responses, 401, 1)
    with django_capture_on_commit_callbacks(execute=True):
        log = run(alpaca)
    assert log.status == SyncLog.Status.FAILED and log.attempt == 1 and log.error_kind == "auth"
    assert len(responses.calls) == 1  # no retries
    alpaca.refresh_from_db()
    assert alpaca.status == "ERROR" and alpaca.credentials_rejected
    assert not PeriodicTask.objects.get(name=periodic_tasks.task_name(alpaca.pk)).enabled
    assert Notice.objects.filter(connection=alpaca, kind="credentials").count() == 1
    assert len(mail.outbox) == 1 and "refused your credentials" in mail.outbox[0].subject
    assert "SECRET-alpaca-value" not in mail.outbox[0].body + alpaca.last_sync_error

    # Saving new credentials clears the hold and sync resumes by itself.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.connection_update(alpaca.pk, credentials={"key_id": "AKNEW", "secret_key": "new-secret"})
    alpaca.refresh_from_db()
    assert not alpaca.credentials_rejected and alpaca.status == "CONNECTED" and alpaca.last_sync_error == ""
    assert PeriodicTask.objects.get(name=periodic_tasks.task_name(alpaca.pk)).enabled
    assert len(callbacks) == 1  # a sync is queued right away


@responses.activate
def test_repeated_failures_notify_once_and_recovery_is_announced(alpaca, django_capture_on_commit_callbacks):
    threshold = settings.SYNC_FAILURE_NOTIFY_AFTER
    for _ in range(threshold + 1):
        fails(responses, 500, 4)
        with django_capture_on_commit_callbacks(execute=True):
            run(alpaca)
    assert Notice.objects.filter(kind="repeated_failure").count() == 1
    assert [m.subject for m in mail.outbox] == ["Sync of Alpaca paper keeps failing"]
    healthy(responses)
    with django_capture_on_commit_callbacks(execute=True):
        assert run(alpaca).status == SyncLog.Status.SUCCESS
    assert Notice.objects.filter(kind="recovered").count() == 1
    assert mail.outbox[-1].subject == "Sync of Alpaca paper works again"


@responses.activate
def test_rate_limit_waits_requeue_without_counting_as_a_failure(alpaca):
    # Eager tasks ignore countdowns, so the broker's wait is 0 here; a worker would wait it out.
    fails(responses, 429, 2, headers={"Retry-After": "0"})
    healthy(responses)
    log = run(alpaca)
    assert log.status == SyncLog.Status.SUCCESS and log.attempt == 1  # two pauses, no failure counted
    assert log.trades_imported == 5 and len(responses.calls) == 6  # 2 refused, login, account, positions, fills


def test_a_run_while_another_holds_the_lock_is_skipped(trader):
    connection = services.connection_create(owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"})
    before = Trade.objects.count()
    assert locks.acquire(connection.pk, "someone-else")
    log = runs.run_inline(connection.pk, run_id="mine")
    assert log.status == SyncLog.Status.SKIPPED and Trade.objects.count() == before
    # A redelivered message (same task id) re-enters its own lock and finishes the run.
    log = runs.run_inline(connection.pk, run_id="someone-else")
    assert log.status == SyncLog.Status.SUCCESS


def test_interrupted_runs_are_closed_and_stuck_syncing_is_freed(trader):
    connection = services.connection_create(owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"})
    BrokerConnection.objects.filter(pk=connection.pk).update(status="SYNCING")
    old = SyncLog.objects.create(connection=connection, started_at=timezone.now() - timedelta(hours=3), task_id="t")
    recent = SyncLog.objects.create(connection=connection, started_at=timezone.now(), task_id="u")
    assert housekeeping.close_interrupted_runs() == 1
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.status == SyncLog.Status.INTERRUPTED and "interrupted" in old.error_message
    assert recent.status == SyncLog.Status.RUNNING  # may be waiting for its retry
    connection.refresh_from_db()
    assert connection.status == "CONNECTED"


def test_a_deleted_trade_does_not_come_back(trader):
    connection = services.connection_create(owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"})
    run(connection)
    trade = Trade.objects.first()
    Trade.objects.filter(pk=trade.pk).update(deleted_at=timezone.now())
    connection.accounts.update(sync_cursor=None)
    log = run(connection)
    assert log.trades_skipped > 0
    assert Trade.objects.filter(account=trade.account, broker_trade_id=trade.broker_trade_id).count() == 1
    assert Trade.objects.get(pk=trade.pk).deleted_at is not None


def test_reconcile_repairs_missing_wrong_and_orphaned_tasks(trader, capsys):
    a = services.connection_create(owner=trader, broker_type="demo", label="A", credentials={"api_key": "k"})
    b = services.connection_create(owner=trader, broker_type="demo", label="B", credentials={"api_key": "k"})
    PeriodicTask.objects.filter(name=periodic_tasks.task_name(a.pk)).delete()
    PeriodicTask.objects.filter(name=periodic_tasks.task_name(b.pk)).update(
        enabled=False, interval=periodic_tasks.interval_schedule(60)
    )
    orphan = PeriodicTask.objects.create(
        name="broker-sync:99999", task=periodic_tasks.SYNC_TASK, interval=periodic_tasks.interval_schedule(5)
    )
    call_command("reconcile_schedules")
    out = capsys.readouterr().out
    assert f"created: broker-sync:{a.pk}" in out and f"updated: broker-sync:{b.pk}" in out
    assert "deleted: broker-sync:99999" in out and "3 schedule(s) repaired." in out
    assert not PeriodicTask.objects.filter(pk=orphan.pk).exists()
    task = PeriodicTask.objects.get(name=periodic_tasks.task_name(b.pk))
    assert task.enabled and task.interval.every == 15
    call_command("reconcile_schedules")
    assert "All schedules in step." in capsys.readouterr().out


def test_old_logs_are_pruned(trader, settings):
    connection = services.connection_create(owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"})
    run(connection)
    SyncLog.objects.create(
        connection=connection,
        status="SUCCESS",
        started_at=timezone.now() - timedelta(days=settings.SYNC_LOG_RETENTION_DAYS + 1),
    )
    assert housekeeping.prune_sync_logs() == 1
    assert SyncLog.objects.filter(connection=connection).count() == 1


def test_one_failing_account_does_not_lose_the_others_trades(trader):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k", "scenario": "account_down"}
    )
    log = run(connection)
    assert log.status == SyncLog.Status.PARTIAL
    assert log.detail["DEMO-FUT-1"]["imported"] > 0 and "error" not in log.detail["DEMO-FUT-1"]
    assert "stocks account" in log.detail["DEMO-STK-1"]["error"]
    assert log.trades_imported == Trade.objects.count() == log.detail["DEMO-FUT-1"]["imported"]
    assert not Trade.objects.filter(account__external_id="DEMO-STK-1").exists()
    connection.refresh_from_db()
    assert connection.status == "CONNECTED" and "DEMO-STK-1" in connection.last_sync_error
    futures = connection.accounts.get(external_id="DEMO-FUT-1")
    stocks = connection.accounts.get(external_id="DEMO-STK-1")
    assert futures.sync_cursor is not None and stocks.sync_cursor is None  # the failed one is fetched again next time


def test_an_interrupted_backfill_keeps_every_trade_it_read_and_resumes_after_them(trader, settings):
    """A provider that yields oldest first has its cursor saved batch by batch, the partial last one too.

    Without the partial batch, a budget that allows fewer trades per attempt than a batch holds
    would make every resumed attempt fetch the same trades again and pause again.
    """

    class PausedAfter120(DemoProvider):
        def get_trades(self, auth, account, since, until):
            for n, trade in enumerate(super().get_trades(auth, account, since, until)):
                if n == 120:
                    raise BrokerRateLimitError("slow down", retry_after=60)
                yield trade

    settings.SYNC_IMPORT_BATCH_SIZE = 50
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    row = connection.accounts.create(external_id="DEMO-FUT-1", name="f")
    info = BrokerAccountInfo(external_id="DEMO-FUT-1", name="f")
    until = timezone.now()
    with pytest.raises(BrokerRateLimitError):
        accounts.import_account(PausedAfter120(), AuthResult(token="t"), row, info, until, until)
    row.refresh_from_db()
    committed = Trade.objects.filter(account=row).order_by("executed_at")
    assert committed.count() == 120  # two full batches and the 20 read before the pause
    assert row.sync_cursor == committed.last().executed_at


def test_a_trader_is_warned_once_before_their_flex_token_lapses(trader, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        connection = services.connection_create(
            owner=trader,
            broker_type="ibkr_flex",
            label="IB",
            sync_enabled=False,
            credentials={"token": "123456789012345678901234", "query_id": "987654"},
        )
    connection.auth = AuthResult(token="t", expires_at=timezone.now() + timedelta(days=3))
    connection.save()
    notifications.credentials_expiring(connection)
    notifications.credentials_expiring(connection)
    notices = Notice.objects.filter(connection=connection, kind=Notice.Kind.CREDENTIALS_EXPIRING)
    assert notices.count() == 1 and "expire on" in notices.get().message

    # A session we renew ourselves (demo, Tradovate) never raises this warning.
    demo = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    demo.auth = AuthResult(token="t", expires_at=timezone.now() + timedelta(minutes=30))
    demo.save()
    notifications.credentials_expiring(demo)
    assert not Notice.objects.filter(connection=demo).exists()


@responses.activate
def test_counts_cover_the_whole_run_when_a_retry_refetches_committed_batches(alpaca, settings):
    settings.SYNC_IMPORT_BATCH_SIZE = 50
    fills = [
        {**FILLS[0], "id": f"20261120{i:04d}::f{i}", "transaction_time": f"2026-11-20T15:{i // 60:02d}:{i % 60:02d}Z"}
        for i in range(150)
    ]
    healthy_account = {"id": "acc-uuid", "account_number": "PA123", "currency": "USD", "status": "ACTIVE"}
    responses.get(ACCOUNT_URL, json=healthy_account)
    responses.get(ACCOUNT_URL, json=healthy_account)
    responses.get(FILLS_URL, json=fills[:100])
    for _ in range(1 + settings.BROKER_HTTP_RETRIES):  # page 2 fails after page 1 committed, resends too
        responses.get(FILLS_URL, status=500, json={"message": "boom"})
    responses.get(FILLS_URL, json=fills[:100])  # the retry reads again from the saved cursor
    responses.get(FILLS_URL, json=fills[100:])
    log = run(alpaca)
    assert log.status == SyncLog.Status.SUCCESS
    assert Trade.objects.count() == 150
    assert (log.trades_imported, log.trades_skipped) == (150, 0)


def test_a_database_hiccup_during_import_is_retried(trader, monkeypatch):
    real_import = accounts.import_trades
    calls = []

    def flaky_import(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return real_import(*args, **kwargs)

    monkeypatch.setattr(accounts, "import_trades", flaky_import)
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    log = run(connection)
    assert log.status == SyncLog.Status.SUCCESS
    assert log.trades_imported == Trade.objects.count() > 0


def test_a_run_keeps_its_lock_and_only_its_own():
    assert locks.acquire(7, "run-a")
    assert not locks.acquire(7, "run-b")
    assert locks.hold(7, "run-a", 3600)
    assert locks.hold(7, "run-a", 5)  # never shortens
    assert locks.redis_client().ttl(locks.lock_key(7)) > 3000
    assert not locks.hold(7, "run-b", 3600)
    locks.release(7, "run-b")  # not its lock: nothing happens
    assert locks.redis_client().get(locks.lock_key(7)) == b"run-a"


def test_a_run_waiting_for_its_retry_is_not_closed_as_interrupted(trader):
    connection = services.connection_create(owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"})
    waiting = SyncLog.objects.create(
        connection=connection, started_at=timezone.now() - timedelta(minutes=20), task_id="waiting-run"
    )
    locks.hold(connection.pk, "waiting-run", 60)  # not ours yet: nothing to extend
    assert locks.acquire(connection.pk, "waiting-run")
    assert housekeeping.close_interrupted_runs() == 0
    locks.release(connection.pk, "waiting-run")
    assert housekeeping.close_interrupted_runs() == 1
    waiting.refresh_from_db()
    assert waiting.status == SyncLog.Status.INTERRUPTED


def test_an_account_task_of_a_superseded_run_leaves_the_account_to_the_newer_run(trader):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    row = connection.accounts.create(external_id="DEMO-FUT-1", name="f")
    old_log = SyncLog.objects.create(connection=connection, started_at=timezone.now(), task_id="old-run")
    assert locks.acquire(connection.pk, "newer-run")
    plan = runs.RunPlan(old_log.pk, connection.pk, "old-run", (), timezone.now(), old_log.started_at, old_log.trigger)
    with pytest.raises(RunSuperseded) as raised:
        runs.sync_account(plan, row.pk)
    result = runs.account_gave_up(plan, row.pk, raised.value, attempts=1)
    assert result["kind"] == "superseded" and "newer sync" in result["error"]
    assert not Trade.objects.exists()


@responses.activate
def test_inline_sync_waits_out_a_rate_limit_pause_and_does_not_count_it_as_a_failure(alpaca):
    fails(responses, 429, 1, headers={"Retry-After": "1"})
    healthy(responses)
    log = runs.run_inline(alpaca.pk)
    assert log.status == SyncLog.Status.SUCCESS and log.attempt == 1
    assert log.trades_imported == 5


@responses.activate
def test_inline_sync_says_truthfully_that_it_made_one_attempt(alpaca):
    fails(responses, 500, 1)
    log = runs.run_inline(alpaca.pk)
    assert log.status == SyncLog.Status.FAILED and log.attempt == 1
    assert log.error_message == "Alpaca had an internal error (HTTP 500). The next scheduled sync will try again."
    assert "attempts" not in log.error_message


@responses.activate
def test_a_rate_limit_pause_keeps_the_broker_s_reason_and_says_what_happens_next(alpaca, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # run the step by hand and watch what it records
    fails(responses, 429, 1, headers={"Retry-After": "300"})
    from sync import tasks

    with pytest.raises(tasks.StepWaits) as waits:
        tasks.sync_connection.run(connection_id=alpaca.pk)
    assert waits.value.pauses == 1 and waits.value.failures == 0 and waits.value.countdown == 300
    alpaca.refresh_from_db()
    assert alpaca.last_sync_error == (
        "Alpaca asked us to slow down (HTTP 429). The sync pauses and continues automatically in about 5 min."
    )
    assert alpaca.status == "SYNCING" and alpaca.next_attempt_reason == "rate_limit"
    # The task holds the lock for the whole wait plus one TTL before it goes.
    assert locks.redis_client().ttl(locks.lock_key(alpaca.pk)) > 300


def test_an_interrupted_run_counts_what_it_really_imported(trader):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    started = timezone.now() - timedelta(hours=1)
    log = SyncLog.objects.create(connection=connection, started_at=started, task_id="dead-run")
    account = connection.accounts.create(external_id="DEMO-FUT-1", name="f")
    for i in range(3):
        Trade.objects.create(
            account=account,
            broker_trade_id=f"t{i}",
            symbol="ES",
            side="BUY",
            quantity=1,
            price=1,
            executed_at=started,
            imported_at=started + timedelta(minutes=1),
        )
    BrokerConnection.objects.filter(pk=connection.pk).update(status="SYNCING", last_sync_error="old words")
    assert housekeeping.close_interrupted_runs() == 1
    log.refresh_from_db()
    assert log.status == SyncLog.Status.INTERRUPTED and log.trades_imported == 3
    assert log.detail == {"DEMO-FUT-1": {"imported": 3, "skipped": 0}}
    connection.refresh_from_db()
    # An error message from before says nothing about whether the connection works: the last finished run does.
    assert connection.status == "CONNECTED"


def test_a_short_lived_token_is_renewed_at_half_its_life_not_at_every_use():
    issued = timezone.now()
    token = AuthResult(token="t", issued_at=issued, expires_at=issued + timedelta(minutes=8))
    margin = token.renew_margin(timedelta(minutes=15))
    assert margin == timedelta(minutes=4)
    assert not token.expires_within(margin, issued + timedelta(minutes=3))
    assert token.expires_within(margin, issued + timedelta(minutes=4, seconds=1))
    long_lived = AuthResult(token="t", issued_at=issued, expires_at=issued + timedelta(minutes=90))
    assert long_lived.renew_margin(timedelta(minutes=15)) == timedelta(minutes=15)


def test_a_broker_answering_every_third_read_with_500_loses_no_fill_and_needs_no_second_attempt(trader, settings):
    with FakeTradovate({"alice": 2}, fills_per_account=40) as broker:
        settings.BROKER_BASE_URLS = {"tradovate": broker.url}
        broker.fail_every(3, 500)
        connection = tradovate_connection(trader, broker)
        log = run(connection)
        expected = broker.expected_ids("alice")
        served = broker.faults_served["500"]
    assert log.status == SyncLog.Status.SUCCESS and log.attempt == 1, log.error_message
    assert imported_ids(connection) == expected
    assert log.trades_imported == Trade.objects.count() == 80
    assert served > 0 and log.request_retries == served


def test_rows_a_provider_could_not_read_are_counted_in_the_run_with_their_reasons(trader, monkeypatch):
    class TwoBadRows(DemoProvider):
        def get_trades(self, auth, account, since, until):
            yield from super().get_trades(auth, account, since, until)
            if account.external_id == "DEMO-FUT-1":
                for row_id in ("r1", "r2"):
                    self.skip_unreadable("no symbol", row=row_id)
                self.skip_unreadable("dateTime 'yesterday' is in no known format")

    real = runs.get_broker_provider
    monkeypatch.setattr(
        runs,
        "get_broker_provider",
        lambda key, environment="", run_id="": TwoBadRows(environment) if key == "demo" else real(key, environment),
    )
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="D", credentials={"api_key": "k"}, sync_enabled=False
    )
    log = run(connection)
    assert log.status == SyncLog.Status.SUCCESS and log.trades_imported > 0
    assert log.detail["DEMO-FUT-1"]["unreadable"] == [
        "no symbol",
        "no symbol",
        "dateTime 'yesterday' is in no known format",
    ]
    assert "unreadable" not in log.detail["DEMO-STK-1"]
    assert log.error_message == (
        "DEMO-FUT-1: skipped 3 rows we could not read: no symbol (2); dateTime 'yesterday' is in no known format"
    )
    connection.refresh_from_db()
    assert connection.last_sync_error == log.error_message
