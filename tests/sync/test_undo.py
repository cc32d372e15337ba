"""Undoing a sync run: its fills go, the others stay, the next sync brings them back, history says so."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from brokers.models import BrokerAccount, SyncLog
from journal.models import RoundTrip, Trade
from journal.positions import positions_recompute_account
from journal.services import trades_delete
from sync import locks
from sync.tasks import sync_connection
from sync.undo import UndoRefused, run_undo
from tests import factories
from tests.sync.file_imports import HEADER, imported

pytestmark = pytest.mark.django_db(transaction=True)


def round_trips(account_ids):
    fields = (
        "account_id",
        "symbol",
        "side",
        "opened_at",
        "closed_at",
        "size",
        "open_quantity",
        "net_pnl",
        "fill_count",
    )
    return sorted(RoundTrip.objects.filter(account_id__in=account_ids).values_list(*fields), key=str)


@pytest.fixture
def two_runs(make_connection):
    """A demo connection whose first run imported its history, and a second run that imported 7 fills
    of an hour ago the first had (they were taken out of the journal and the cursors moved back before
    it): far enough back that only a cursor moved back by the undo lets a sync list them again."""
    connection = make_connection(credentials={"api_key": "k-undo"})
    first = SyncLog.objects.get(connection=connection)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    held = Trade.objects.filter(account__connection=connection, executed_at__lt=an_hour_ago)
    later = list(held.order_by("-executed_at")[:7])
    Trade.objects.filter(pk__in=[t.pk for t in later]).delete()
    earliest = min(t.executed_at for t in later)
    BrokerAccount.objects.filter(connection=connection).update(sync_cursor=earliest)
    second = SyncLog.objects.get(pk=sync_connection.delay(connection.pk).get()["sync_log_id"])
    assert second.trades_imported >= 7
    return connection, first, second


def test_undo_removes_the_runs_fills_only_and_the_next_sync_brings_them_back(two_runs, trader):
    connection, first, second = two_runs
    held_before = set(Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True))
    added = set(
        Trade.objects.filter(imported_at__gte=second.started_at, imported_at__lte=second.finished_at).values_list(
            "broker_trade_id", flat=True
        )
    )

    removed = run_undo(run=second, by=trader)

    assert removed.total == len(added) == second.trades_imported
    held_after = set(Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True))
    assert held_after == held_before - added
    second.refresh_from_db()
    assert second.undone_at is not None and second.undone_by == trader and second.trades_undone == len(added)
    # The round trips are what a computation from the remaining fills gives.
    accounts = list(connection.accounts.values_list("pk", flat=True))
    after_undo = round_trips(accounts)
    for account in accounts:
        positions_recompute_account(account_id=account)
    assert round_trips(accounts) == after_undo

    third = SyncLog.objects.get(pk=sync_connection.delay(connection.pk).get()["sync_log_id"])
    assert third.trades_imported >= len(added)
    assert held_before | added <= set(
        Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True)
    )
    ids = list(Trade.objects.filter(account__connection=connection).values_list("account_id", "broker_trade_id"))
    assert len(ids) == len(set(ids)), "a fill imported twice"


def test_a_fill_the_trader_deleted_stays_deleted_through_undo_and_the_next_sync(two_runs, trader):
    connection, _, second = two_runs
    deleted = Trade.objects.filter(imported_at__gte=second.started_at).order_by("executed_at").first()
    trades_delete(trades=Trade.objects.filter(pk=deleted.pk))

    removed = run_undo(run=second, by=trader)

    assert removed.total == second.trades_imported - 1
    sync_connection.delay(connection.pk).get()
    assert Trade.objects.get(account_id=deleted.account_id, broker_trade_id=deleted.broker_trade_id).deleted_at


def test_undo_is_refused_with_a_reason_and_changes_nothing(two_runs, trader):
    connection, first, second = two_runs
    count = Trade.objects.count()
    cursors = list(BrokerAccount.objects.values_list("sync_cursor", flat=True))

    assert locks.acquire(connection.pk, "a-running-sync")
    with pytest.raises(UndoRefused, match="running now"):
        run_undo(run=second, by=trader)
    locks.release(connection.pk, "a-running-sync")

    SyncLog.objects.filter(pk=first.pk).update(status=SyncLog.Status.RUNNING, finished_at=None)
    with pytest.raises(UndoRefused, match="not finished"):
        run_undo(run=SyncLog.objects.get(pk=first.pk), by=trader)
    assert Trade.objects.count() == count
    assert list(BrokerAccount.objects.values_list("sync_cursor", flat=True)) == cursors

    run_undo(run=second, by=trader)
    with pytest.raises(UndoRefused, match="undone already"):
        run_undo(run=SyncLog.objects.get(pk=second.pk), by=trader)


def test_the_history_page_offers_undo_shows_what_goes_and_marks_the_run(two_runs, trader_client):
    connection, _, second = two_runs
    history = trader_client.get(reverse("sync:history", args=[connection.pk])).content.decode()
    assert reverse("sync:undo", args=[second.pk]) in history

    page = trader_client.get(reverse("sync:undo", args=[second.pk])).content.decode()
    assert f"removes the {second.trades_imported} fills it added" in page
    assert "Undo this run" in page

    done = trader_client.post(reverse("sync:undo", args=[second.pk]), follow=True).content.decode()
    assert f"Run undone: {second.trades_imported} fills removed" in done
    assert "undone" in done and f"{second.trades_imported} fills removed" in done
    again = trader_client.post(reverse("sync:undo", args=[second.pk]), follow=True).content.decode()
    assert "This run was undone already" in again


def test_another_traders_run_is_not_found_on_the_page_or_in_the_api(two_runs, other_trader):
    _, _, second = two_runs
    count = Trade.objects.count()
    client = APIClient()
    client.force_authenticate(other_trader)
    assert client.post(reverse("api:run-undo", args=[second.pk])).status_code == 404
    client.force_login(other_trader)
    assert client.post(reverse("sync:undo", args=[second.pk])).status_code == 404
    assert Trade.objects.count() == count


def test_the_api_undoes_a_run_and_refuses_it_twice(two_runs, trader):
    _, _, second = two_runs
    client = APIClient()
    client.force_authenticate(trader)
    answer = client.post(reverse("api:run-undo", args=[second.pk]))
    assert answer.status_code == 200
    body = answer.json()
    assert body["removed"] == second.trades_imported == sum(body["accounts"].values())
    assert body["undone_at"]
    again = client.post(reverse("api:run-undo", args=[second.pk]))
    assert again.status_code == 409 and "undone already" in again.json()["detail"]


def test_the_admin_undoes_the_selected_runs(two_runs, admin_client):
    _, _, second = two_runs
    url = reverse("admin:brokers_synclog_changelist")
    answer = admin_client.post(url, {"action": "undo_runs", "_selected_action": [second.pk]}, follow=True)
    assert answer.status_code == 200
    assert f"undone, {second.trades_imported} fills removed" in answer.content.decode()
    second.refresh_from_db()
    assert second.undone_at is not None


def test_undoing_a_file_import_takes_its_fills_out_and_leaves_the_cursor(trader, client):
    account = factories.account_with(trader, [], external_id="ACC-1")
    cursor = timezone.now() - timedelta(hours=1)
    BrokerAccount.objects.filter(pk=account.pk).update(sync_cursor=cursor)
    rows = "".join(
        f"ACC-1,2025-11-25T10:3{n}:00Z,MESZ5,future,{side},1,6850.25,5,f-{n}\n" for n, side in ((1, "buy"), (2, "sell"))
    )
    result = imported(account, HEADER + rows)
    assert result.imported == 2
    run = SyncLog.objects.get(pk=result.sync_log_id)
    assert run.trigger == SyncLog.Trigger.FILE
    client.force_login(trader)
    page = client.get(reverse("sync:undo", args=[run.pk])).content.decode()
    assert "Undo the file import of" in page and "importing the file again brings its fills back" in page
    assert run_undo(run=run, by=trader).total == 2
    account.refresh_from_db()
    assert account.sync_cursor == cursor
    assert not Trade.objects.filter(account=account).exists() and not RoundTrip.objects.filter(account=account).exists()
