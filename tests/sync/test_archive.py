"""The raw archive: what a run read is kept without a secret, capped, pruned, shown, and reparsed by today's parser."""

import dataclasses
import gzip
import io
import json
from datetime import timedelta

import pytest
import requests
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from brokers import services
from brokers.models import RunArchive, SyncLog
from brokers.providers import archive, ibkr_flex
from journal.coverage import uncovered_days
from journal.models import Trade
from sync import archiving, locks
from sync.runs import run_inline
from sync.tasks import prune_sync_logs, sync_connection
from tests import factories
from tests.fakes.alpaca import ScriptedAlpaca
from tests.fakes.ibkr_flex import QUERY_ID, TOKEN
from tests.fakes.okx import FakeOkx
from tests.fakes.tradovate import FakeTradovate
from tests.sync.file_imports import HEADER, flex_connection, imported

pytestmark = pytest.mark.django_db

LAST_WEEK = (timezone.now() - timedelta(days=8)).date().isoformat()


def archived_bytes(run: SyncLog) -> list[bytes]:
    return [gzip.decompress(bytes(part.content)) for part in RunArchive.objects.filter(sync_log=run) if part.content]


@pytest.fixture
def order_ids_ignored(monkeypatch):
    """The Flex parser as it was before a fix: it read every execution but ignored its order id."""
    fixed = ibkr_flex._trade
    ignoring = lambda attrs, account: dataclasses.replace(fixed(attrs, account), order_id="")  # noqa: E731
    monkeypatch.setattr(ibkr_flex, "_trade", ignoring)
    return lambda: monkeypatch.setattr(ibkr_flex, "_trade", fixed)


def test_a_parser_fixed_later_recovers_the_field_for_last_weeks_fills_by_reparse_with_no_broker_call(
    trader, flex, order_ids_ignored
):
    connection = flex_connection(trader)
    run = run_inline(connection.pk)
    assert run.status == SyncLog.Status.SUCCESS
    fills = Trade.objects.filter(account__connection=connection)
    assert fills.count() == 4 and set(fills.values_list("order_id", flat=True)) == {""}
    order_ids_ignored()  # the parser is fixed
    asked = flex.count()
    flex.fail_every(1, status=500)  # any request now would fail the reparse

    out = io.StringIO()
    call_command("reparse", connection=connection.pk, since=LAST_WEEK, stdout=out)

    assert flex.count() == asked
    assert sorted(fills.values_list("order_id", flat=True)) == ["7001", "7002", "7003", "7004"]
    reparse = SyncLog.objects.get(connection=connection, trigger=SyncLog.Trigger.REPARSE)
    assert reparse.status == SyncLog.Status.SUCCESS
    read = run.trades_imported + run.trades_skipped  # the report lists each execution more than once
    assert reparse.detail["U1111111"] == {"imported": 0, "skipped": read, "corrected": 4, "reads": 1}
    assert "4 corrected" in out.getvalue()
    # A second reparse finds nothing more to correct: the same dedup, the same rows.
    call_command("reparse", connection=connection.pk, since=LAST_WEEK, stdout=io.StringIO())
    assert fills.count() == 4
    assert SyncLog.objects.filter(trigger=SyncLog.Trigger.REPARSE).first().detail["U1111111"]["corrected"] == 0


def test_reparse_imports_a_fill_the_journal_lacks_from_the_archived_answers(trader, flex):
    connection = flex_connection(trader)
    run_inline(connection.pk)
    lost = Trade.objects.filter(account__connection=connection).order_by("executed_at").first()
    Trade.objects.filter(pk=lost.pk).delete()  # gone, not a trader's deletion: no tombstone
    asked = flex.count()

    call_command("reparse", connection=connection.pk, since=LAST_WEEK, stdout=io.StringIO())

    assert flex.count() == asked
    assert Trade.objects.filter(account__connection=connection, broker_trade_id=lost.broker_trade_id).exists()
    assert Trade.objects.filter(account__connection=connection).count() == 4


def test_no_credential_or_token_of_the_run_is_in_any_archived_byte(trader, flex, monkeypatch):
    # A broker that echoes the token in its answer (IBKR sends it in the query, which is never kept).
    report = flex._report
    monkeypatch.setattr(flex, "_report", lambda first, last: report(first, last).replace("APPLE INC", f"APPLE {TOKEN}"))
    connection = flex_connection(trader)
    run = run_inline(connection.pk)
    connection.refresh_from_db()
    secrets = [*connection.credentials.values(), connection.auth.token, connection.auth.refresh_token]
    secrets += [str(v) for v in connection.auth.extra.values()]
    kept = archived_bytes(run)
    assert RunArchive.objects.filter(sync_log=run, account=None).exists()  # the accounts' listing
    assert RunArchive.objects.filter(sync_log=run, account__isnull=False).exists()
    assert any(b"APPLE [redacted]" in body for body in kept)
    for body in kept:
        for secret in {TOKEN, QUERY_ID, *filter(None, secrets)}:
            assert secret.encode() not in body, secret


def test_a_recorded_read_keeps_no_query_header_or_token_named_value(rsps):
    secret = 'pa/ss"word-99'
    rsps.get(
        "https://broker.example/v1/fills",
        json={"accessToken": "tok-12345678", "fills": [{"id": 1, "note": secret}], "mdAccessToken": "md-abc"},
        headers={"X-Session": "tok-12345678"},
    )
    with archive.recording() as read:
        requests.get("https://broker.example/v1/fills?token=query-secret-1", timeout=5)
        read.add("GET", "https://broker.example/v1/fills?token=query-secret-1", rsps.calls[0].response)
    (row,) = json.loads(gzip.decompress(read.packed([secret])))
    text = json.dumps(row)
    assert row["path"] == "/v1/fills"
    for value in ("query-secret-1", "tok-12345678", "md-abc", "pa/ss", "X-Session"):
        assert value not in text
    assert json.loads(row["body"])["fills"] == [{"id": 1, "note": "[redacted]"}]


def test_a_replay_serves_the_archived_answers_in_order_and_refuses_a_request_it_does_not_hold():
    answers = [archive.Answer("GET", "/v1/fills", 200, "application/json", f'{{"page": {n}}}') for n in (1, 2)]
    replayer = archive.Replayer(answers)
    assert replayer.answer("GET", "https://x.example/v1/fills?page=1&sig=a").json() == {"page": 1}
    assert replayer.answer("GET", "https://x.example/v1/fills?page=2&sig=b").json() == {"page": 2}
    with pytest.raises(archive.ArchiveMiss, match="no further answer for GET /v1/fills"):
        replayer.answer("GET", "https://x.example/v1/fills?page=3")


def test_a_part_over_the_runs_cap_keeps_nothing_and_the_run_says_so(trader, flex, settings):
    settings.ARCHIVE_MAX_BYTES_PER_RUN = 1500
    connection = flex_connection(trader)
    run = run_inline(connection.pk)
    assert run.status == SyncLog.Status.SUCCESS
    cut = RunArchive.objects.filter(sync_log=run).exclude(not_kept="")
    assert cut.exists() and not any(bytes(part.content) for part in cut)
    assert all("ARCHIVE_MAX_BYTES_PER_RUN" in part.not_kept and part.size == 0 for part in cut)
    assert "Broker answers not archived" in run.detail["U1111111"]["note"]
    assert sum(RunArchive.objects.filter(sync_log=run).values_list("size", flat=True)) <= 1500
    with pytest.raises(CommandError, match="were not all kept .*ARCHIVE_MAX_BYTES_PER_RUN.*so not reparsed"):
        call_command("reparse", connection=connection.pk, since=LAST_WEEK, stdout=io.StringIO())


def test_a_run_keeps_what_each_step_read_and_writes_it_once_with_its_end(trader, settings):
    with ScriptedAlpaca({"LEAN": 3}) as broker:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "alpaca": broker.url}
        connection = services.connection_create(
            owner=trader,
            broker_type="alpaca",
            environment="paper",
            label="Lean",
            credentials={"key_id": "LEAN", "secret_key": "secret-LEAN"},
            sync_enabled=False,
        )
        with CaptureQueriesContext(db) as queries:
            result = sync_connection.delay(connection.pk).get()
    assert result["status"] == SyncLog.Status.SUCCESS
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "brokers_runarchive"')]
    assert len(writes) == 1
    parts = RunArchive.objects.filter(sync_log_id=result["sync_log_id"])
    # The connection step (the account list) and the account's step (its fills and positions).
    assert sorted(part.account_id is not None for part in parts) == [False, True]
    assert all(part.content and not part.not_kept for part in parts)
    assert Trade.objects.filter(account__connection=connection).count() == 3


def test_parts_past_the_retention_are_pruned_and_their_runs_stay(trader, flex, settings):
    connection = flex_connection(trader)
    run = run_inline(connection.pk)
    settings.ARCHIVE_RETENTION_DAYS = 30
    RunArchive.objects.filter(sync_log=run).update(created_at=timezone.now() - timedelta(days=31))
    newer = run_inline(connection.pk)

    prune_sync_logs()

    assert not RunArchive.objects.filter(sync_log=run).exists()
    assert RunArchive.objects.filter(sync_log=newer).exists()
    assert SyncLog.objects.filter(pk=run.pk).exists()


def test_an_imported_file_is_kept_compressed_with_its_run(account):
    data = HEADER + "U1234567,2026-03-02T14:30:00Z,AAPL,stock,buy,10,190.5,,E-1\n"
    result = imported(account, data, name="fills.csv")
    assert result.ok and result.imported == 1
    (part,) = RunArchive.objects.filter(sync_log_id=result.sync_log_id)
    assert part.kind == RunArchive.Kind.FILE and part.file_name == "fills.csv" and part.account == account
    assert gzip.decompress(bytes(part.content)) == data.encode()


def test_a_file_over_the_cap_is_imported_but_not_kept_and_the_import_says_so(account, settings):
    settings.ARCHIVE_MAX_BYTES_PER_RUN = 10
    result = imported(account, HEADER + "U1234567,2026-03-02T14:30:00Z,AAPL,stock,buy,10,190.5,,E-1\n")
    assert result.ok and result.imported == 1
    assert any("File not archived" in note for note in result.notes)
    part = RunArchive.objects.get(sync_log_id=result.sync_log_id)
    assert part.size == 0 and "ARCHIVE_MAX_BYTES_PER_RUN" in part.not_kept
    assert "File not archived" in " ".join(SyncLog.objects.get(pk=result.sync_log_id).detail["file"]["notes"])


def test_the_admin_shows_a_runs_archived_answers(trader, flex, admin_client):
    run = run_inline(flex_connection(trader).pk)
    page = admin_client.get(reverse("admin:brokers_synclog_change", args=[run.pk]))
    assert page.status_code == 200 and "archived answers and files" in page.content.decode().lower()
    part = RunArchive.objects.filter(sync_log=run, account__isnull=False).order_by("id").first()
    shown = admin_client.get(reverse("admin:brokers_runarchive_change", args=[part.pk]))
    text = shown.content.decode()
    assert shown.status_code == 200
    assert "GET /AccountManagement/FlexWebService/SendRequest — HTTP 200" in text
    assert "FlexStatementResponse" in text and TOKEN not in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"connection": 999999, "since": "2026-01-01"}, "No connection with id 999999"),
        ({"since": "yesterday"}, "--since must be a day written YYYY-MM-DD"),
        ({"since": "2026-01-01", "run": 999999}, "has no run with id 999999"),
        ({"since": "2999-01-01"}, "No archived broker answers"),
    ],
)
def test_reparse_refuses_bad_input_clearly_and_changes_nothing(trader, flex, arguments, message):
    connection = flex_connection(trader)
    run_inline(connection.pk)
    with pytest.raises(CommandError, match=message):
        call_command("reparse", **{"connection": connection.pk, **arguments})
    assert not SyncLog.objects.filter(trigger=SyncLog.Trigger.REPARSE).exists()


def test_reparse_waits_for_no_sync_it_refuses_while_one_holds_the_connection(trader, flex):
    connection = flex_connection(trader)
    run_inline(connection.pk)
    assert locks.acquire(connection.pk, "a-sync")
    with pytest.raises(CommandError, match="A sync of this connection is running now"):
        call_command("reparse", connection=connection.pk, since=LAST_WEEK)
    assert not SyncLog.objects.filter(trigger=SyncLog.Trigger.REPARSE).exists()


def test_a_read_that_asks_for_more_than_was_archived_fails_the_reparse_and_says_why(trader, flex, monkeypatch):
    connection = flex_connection(trader)
    run_inline(connection.pk)
    # Today's parser asks for one more page than the archived run read.
    fetch = ibkr_flex.IbkrFlexProvider._statement

    def twice(self, *args):
        fetch(self, *args)
        return fetch(self, *args)

    monkeypatch.setattr(ibkr_flex.IbkrFlexProvider, "_statement", twice)
    with pytest.raises(CommandError, match="no further answer for GET"):
        call_command("reparse", connection=connection.pk, since=LAST_WEEK, stdout=io.StringIO())
    reparse = SyncLog.objects.get(trigger=SyncLog.Trigger.REPARSE)
    assert reparse.status == SyncLog.Status.FAILED and "no further answer" in reparse.detail["U1111111"]["error"]


def test_the_secrets_of_a_run_are_its_secret_credentials_and_its_sessions_tokens(trader):
    connection = flex_connection(trader)
    assert TOKEN in archiving.run_secrets(connection, None)
    assert QUERY_ID not in archiving.run_secrets(connection, None)  # a plain field: a parser may need it


def test_a_tradovate_run_keeps_no_password_key_or_token_and_its_reparse_sends_no_request(
    trader, settings, trader_client
):
    password, sec = "a-long-password-1", "sec-value-0123456789"
    with FakeTradovate({"alice": 1}, fills_per_account=5, password=password) as broker:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "tradovate": broker.url}
        credentials = {"username": "alice", "password": password, "app_id": "TradeJournal", "app_version": "1.0"}
        connection = factories.connection(
            trader,
            broker_type="tradovate",
            label="Tradovate",
            environment="demo",
            sync_enabled=False,
            credentials={**credentials, "cid": "123", "sec": sec},
        )
        run = run_inline(connection.pk)
        assert run.status == SyncLog.Status.SUCCESS and run.trades_imported == 5
        connection.refresh_from_db()
        session = connection.auth
        secrets = {password, sec, session.token, *(str(v) for k, v in session.extra.items() if "token" in k.lower())}
        kept = archived_bytes(run)
        login = [a for a in archiving.answers_of(run.archives.all()) if a.path == "/v1/auth/accesstokenrequest"]
        assert json.loads(login[0].body)["accessToken"] == "[redacted]"
        for body in kept:
            for secret in secrets:
                assert secret.encode() not in body, secret
        asked = broker.count()

        call_command("reparse", connection=connection.pk, since=LAST_WEEK, stdout=io.StringIO())

        assert broker.count() == asked
    reparse = SyncLog.objects.get(trigger=SyncLog.Trigger.REPARSE)
    assert reparse.status == SyncLog.Status.SUCCESS
    assert sum(d["skipped"] for d in reparse.detail.values()) == 5 and reparse.trades_imported == 0
    card = trader_client.get("/brokers/").content.decode()
    assert "0 imported, 5 skipped · the archived broker answers read again" in card


def test_a_reparse_reads_no_broker_so_it_covers_no_trading_day(make_connection):
    connection = make_connection(first_sync=False)
    run_inline(connection.pk)
    now = timezone.now()
    # Judged as a connection made long ago: each of these days was the syncs' to read.
    connection.created_at = now - timedelta(days=60)
    first, last = (now - timedelta(days=10)).date(), now.date()
    after_the_sync = uncovered_days([connection], first, last, now)
    SyncLog.objects.filter(connection=connection).update(trigger=SyncLog.Trigger.REPARSE)
    assert len(uncovered_days([connection], first, last, now)) > len(after_the_sync)


def test_a_ccxt_exchange_is_archived_without_its_keys_and_reparsed_with_no_request(trader, settings):
    with FakeOkx({"SPOT": 6, "SWAP": 4}) as broker:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "ccxt_okx": broker.url}
        connection = services.connection_create(
            owner=trader,
            broker_type="ccxt_okx",
            label="OKX",
            environment="live",
            sync_enabled=False,
            credentials=broker.credentials,
        )
        run = run_inline(connection.pk)
        assert run.status == SyncLog.Status.SUCCESS and run.trades_imported == 10, run.error_message
        for body in archived_bytes(run):
            for secret in broker.credentials.values():
                assert secret.encode() not in body, secret
        asked = broker.count()
        cache.clear()  # the market list then comes from the run's archived answers too

        call_command("reparse", connection=connection.pk, since=LAST_WEEK, stdout=io.StringIO())

        assert broker.count() == asked
    reparse = SyncLog.objects.get(trigger=SyncLog.Trigger.REPARSE)
    assert reparse.status == SyncLog.Status.SUCCESS, reparse.error_message
    assert reparse.trades_imported == 0 and reparse.trades_skipped >= 10


def test_the_admin_lists_the_archive_and_shows_the_start_of_an_imported_file(account, admin_client):
    data = HEADER + "U1234567,2026-03-02T14:30:00Z,AAPL,stock,buy,10,190.5,,E-1\n"
    result = imported(account, data, name="fills.csv")
    part = RunArchive.objects.get(sync_log_id=result.sync_log_id)
    listed = admin_client.get(reverse("admin:brokers_runarchive_changelist"))
    assert listed.status_code == 200 and "Imported file: fills.csv" in listed.content.decode()
    shown = admin_client.get(reverse("admin:brokers_runarchive_change", args=[part.pk]))
    assert shown.status_code == 200 and "U1234567,2026-03-02T14:30:00Z,AAPL" in shown.content.decode()
