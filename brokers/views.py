"""The trader's broker pages: connections with their live status, and the controls that change them.

Every write goes through brokers.services; times are shown in the trader's zone (journal.middleware).
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, JSONField, OuterRef, Q, Subquery
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from brokers import periodic_tasks, selectors, services, throttle
from brokers.decorators import trader_page
from brokers.forms import (
    SyncSettingsForm,
    interval_choices,
)
from brokers.models import READ_NO_BROKER, BrokerConnection, SyncLog
from brokers.vocabulary import (
    POSITION_ADVICE,
    DisplayStatus,
    advice,
    display_status,
    position_difference,
    session_not_synced,
)

# The badge polls faster while a sync runs, so the trader sees it finish within seconds.
POLL_SECONDS = {DisplayStatus.SYNCING: 2, DisplayStatus.RETRYING: 5}
POLL_SECONDS_DEFAULT = 5
FINISHED_RUNS = [SyncLog.Status.SUCCESS, SyncLog.Status.PARTIAL, SyncLog.Status.FAILED, SyncLog.Status.INTERRUPTED]
SUCCEEDED_RUNS = [SyncLog.Status.SUCCESS, SyncLog.Status.PARTIAL]


def _own_connection(request, pk) -> BrokerConnection:
    return get_object_or_404(BrokerConnection, pk=pk, owner=request.user)


def _with_status(connections) -> list[BrokerConnection]:
    """Connections with everything their status block shows, in a fixed number of queries."""
    runs = SyncLog.objects.filter(connection=OuterRef("pk"))
    last_run = runs.filter(status__in=FINISHED_RUNS).order_by("-started_at", "-id")
    # What the broker said about the first import (MT5 on MetaApi: only the last 5,000 deals) stays on the card.
    first_run = runs.filter(status__in=FINISHED_RUNS).exclude(trigger__in=READ_NO_BROKER).order_by("started_at", "id")
    last_error = runs.exclude(error_kind="").exclude(status=SyncLog.Status.SKIPPED).order_by("-started_at", "-id")
    rows = list(
        connections.annotate(
            trade_count=Count("accounts__trades", filter=Q(accounts__trades__deleted_at__isnull=True)),
            last_run_status=Subquery(last_run.values("status")[:1]),
            last_run_imported=Subquery(last_run.values("trades_imported")[:1]),
            last_run_skipped=Subquery(last_run.values("trades_skipped")[:1]),
            last_run_trigger=Subquery(last_run.values("trigger")[:1]),
            last_error_kind=Subquery(last_error.values("error_kind")[:1]),
            # The positions the last successful run compared (sync stores them in its detail).
            last_checked_detail=Subquery(
                # A file import or a reparse compares no positions: the last sync's comparison stands.
                runs.filter(status__in=SUCCEEDED_RUNS)
                .exclude(trigger__in=READ_NO_BROKER)
                .order_by("-started_at", "-id")
                .values("detail")[:1],
                output_field=JSONField(),
            ),
            first_run_detail=Subquery(first_run.values("detail")[:1], output_field=JSONField()),
        ).prefetch_related("accounts")
    )
    tasks = selectors.periodic_tasks_for(rows)
    for c in rows:
        c.display_status = display_status(c)
        c.next_sync = selectors.next_sync_at(c, selectors.periodic_task_of(c, tasks))
        c.advice = advice(c, c.last_error_kind) if c.last_sync_error else ""
        c.poll_seconds = POLL_SECONDS.get(c.display_status, POLL_SECONDS_DEFAULT)
        c.interval_choices = interval_choices(c.sync_interval_min)
        c.link_days_left = selectors.link_days_left(c)
        _with_position_check(c)
        unsynced = selectors.unsynced_session(c)
        c.session_warning = (
            session_not_synced(unsynced.day, c.provider_name, unsynced.still_readable) if unsynced else ""
        )
        c.first_import_notes = [r["note"] for r in (c.first_run_detail or {}).values() if r.get("note")]
    return rows


def _with_position_check(c: BrokerConnection) -> None:
    """What the last successful run found comparing positions: None when the broker reports none."""
    detail = c.last_checked_detail or {}
    checked = [account for account in detail.values() if isinstance(account, dict) and "differences" in account]
    c.positions_checked = bool(checked)
    c.position_differences = [
        position_difference(record, c.provider_name) for account in checked for record in account["differences"]
    ]
    c.position_advice = POSITION_ADVICE if c.position_differences else ""


def _list_context(request) -> dict:
    return {
        "connections": _with_status(BrokerConnection.objects.filter(owner=request.user)),
        # Through the reverse relation: brokers does not import the sync app (see docs/architecture.md).
        "notices": request.user.sync_notices.filter(dismissed_at__isnull=True).select_related("connection"),
    }


@trader_page
@require_GET
def connection_list(request):
    return render(request, "brokers/connection_list.html", _list_context(request))


@trader_page
@require_GET
def connection_status(request, pk):
    """The status block of one card, which htmx polls so the badge changes without a reload."""
    connection = _with_status(BrokerConnection.objects.filter(pk=_own_connection(request, pk).pk))[0]
    return render(request, "brokers/_status.html", {"c": connection})


def _throttled(request, connection: BrokerConnection, message: str):
    """Back to the brokers page at the card (not left on the POST's URL), where the message shows the wait."""
    messages.error(request, message)
    return redirect(f"{reverse('brokers:list')}#connection-{connection.pk}")


@trader_page
@require_POST
def connection_settings(request, pk):
    connection = _own_connection(request, pk)
    form = SyncSettingsForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("brokers:list")
    turns_on = form.cleaned_data["sync_enabled"] and not connection.sync_enabled
    # Switching auto-sync on syncs at once, so it counts as a press of Sync now.
    wait = throttle.sync_now_wait(request, connection.pk) if turns_on else None
    if wait is not None:
        return _throttled(
            request,
            connection,
            f"You switched auto-sync of {connection.label} on several times just now, and each time starts a "
            f"sync. Try again in {wait} s.",
        )
    try:
        services.connection_update(
            connection.pk,
            sync_enabled=form.cleaned_data["sync_enabled"],
            sync_interval_min=form.cleaned_data["sync_interval_min"],
        )
    except ValidationError as exc:
        for error in exc.messages:
            messages.error(request, error)
    else:
        messages.success(request, f"Saved the sync settings of {connection.label}.")
    return redirect("brokers:list")


@trader_page
@require_POST
def connection_sync_now(request, pk):
    connection = _own_connection(request, pk)
    wait = throttle.sync_now_wait(request, connection.pk)
    if wait is not None:
        return _throttled(
            request, connection, f"You asked to sync {connection.label} several times just now. Try again in {wait} s."
        )
    periodic_tasks.request_sync_now(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    messages.info(request, f"Sync of {connection.label} started.")
    return redirect("brokers:list")


@trader_page
def connection_delete(request, pk):
    connection = _own_connection(request, pk)
    if request.method == "POST":
        services.connection_delete(connection.pk)
        messages.success(request, f"Deleted {connection.label} with its trades and history.")
        return redirect("brokers:list")
    trade_count = connection.accounts.aggregate(n=Count("trades"))["n"]
    return render(
        request, "brokers/connection_confirm_delete.html", {"connection": connection, "trade_count": trade_count}
    )
