"""The trader's broker pages: connections with their live status, and the controls that change them.

Every write goes through brokers.services; times are shown in the trader's zone (journal.middleware).
"""

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, JSONField, OuterRef, Q, Subquery
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.crypto import salted_hmac
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_POST

from brokers import oauth_views, schedules, selectors, services, snaptrade_views, throttle
from brokers.decorators import trader_page
from brokers.forms import (
    ConnectionForm,
    EditConnectionForm,
    SyncSettingsForm,
    interval_choices,
)
from brokers.models import BrokerConnection, SyncLog
from brokers.providers.errors import BrokerConfigurationError, BrokerError
from brokers.providers.registry import get_provider_class

# The badge polls faster while a sync runs, so the trader sees it finish within seconds.
POLL_SECONDS = {"SYNCING": 2, "RETRYING": 5}
POLL_SECONDS_DEFAULT = 5
FINISHED_RUNS = [SyncLog.Status.SUCCESS, SyncLog.Status.PARTIAL, SyncLog.Status.FAILED, SyncLog.Status.INTERRUPTED]
TRANSIENT_ERROR_KINDS = {"timeout", "unavailable", "rate_limit"}


def _own_connection(request, pk) -> BrokerConnection:
    return get_object_or_404(BrokerConnection, pk=pk, owner=request.user)


def _provider_class(broker_type: str):
    try:
        return get_provider_class(broker_type)
    except BrokerConfigurationError:
        raise Http404("Unknown broker") from None


def what_to_do(connection: BrokerConnection) -> str:
    """Advice under the last error, from what kind of failure it was."""
    if connection.credentials_rejected and connection.signs_in_at_broker:
        return (
            f"The link to {connection.provider_name} has ended, so automatic sync is on hold. Press Reconnect "
            f"and sign in at {connection.provider_name} again: sync resumes at once, with the same history."
        )
    if connection.credentials_rejected:
        return (
            "The broker refused the saved credentials, so automatic sync is on hold. "
            "Edit the connection and save working credentials: sync resumes by itself."
        )
    if connection.last_error_kind in TRANSIENT_ERROR_KINDS:
        return "This is usually temporary on the broker's side and the sync retries by itself."
    if connection.last_error_kind == "setup":
        return "Sync tries again at each scheduled time, but it cannot work until the API key above is fixed."
    if connection.last_error_kind == "account":
        return "Check this account's API permissions at the broker; the other accounts keep syncing."
    return "Check the connection at the broker (API access, permissions), then press Sync now."


def _with_status(connections) -> list[BrokerConnection]:
    """Connections with everything their status block shows, in a fixed number of queries."""
    runs = SyncLog.objects.filter(connection=OuterRef("pk"))
    last_run = runs.filter(status__in=FINISHED_RUNS).order_by("-started_at", "-id")
    # What the broker said about the first import (MT5 on MetaApi: only the last 5,000 deals) stays on the card.
    first_run = runs.filter(status__in=FINISHED_RUNS).order_by("started_at", "id")
    last_error = runs.exclude(error_kind="").exclude(status=SyncLog.Status.SKIPPED).order_by("-started_at", "-id")
    rows = list(
        connections.annotate(
            trade_count=Count("accounts__trades", filter=Q(accounts__trades__deleted_at__isnull=True)),
            last_run_status=Subquery(last_run.values("status")[:1]),
            last_run_imported=Subquery(last_run.values("trades_imported")[:1]),
            last_run_skipped=Subquery(last_run.values("trades_skipped")[:1]),
            last_error_kind=Subquery(last_error.values("error_kind")[:1]),
            first_run_detail=Subquery(first_run.values("detail")[:1], output_field=JSONField()),
        ).prefetch_related("accounts")
    )
    tasks = selectors.periodic_tasks_for(rows)
    for c in rows:
        c.display_status = selectors.connection_display_status(c)
        c.next_sync = selectors.next_sync_at(c, selectors.periodic_task_of(c, tasks))
        c.advice = what_to_do(c) if c.last_sync_error else ""
        c.poll_seconds = POLL_SECONDS.get(c.display_status, POLL_SECONDS_DEFAULT)
        c.interval_choices = interval_choices(c.sync_interval_min)
        c.link_days_left = selectors.link_days_left(c)
        c.first_import_notes = [r["note"] for r in (c.first_run_detail or {}).values() if r.get("note")]
    return rows


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


def _copy_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        target = field if field in form.fields else (f"cred_{field}" if f"cred_{field}" in form.fields else None)
        for error in errors:
            form.add_error(target, error)


# The last "Test connection" of this session: a keyed digest of what was tested (never the
# credentials themselves) and whether the login worked, so saving can say whether it is verified.
LAST_TEST_SESSION_KEY = "brokers:last-connection-test"


def _credentials_digest(broker_type: str, environment: str, credentials: dict) -> str:
    tested = json.dumps([broker_type, environment, sorted(credentials.items())])
    return salted_hmac(LAST_TEST_SESSION_KEY, tested).hexdigest()


def _last_test_outcome(request, broker_type: str, environment: str, credentials: dict) -> bool | None:
    """True / False if exactly these credentials were tested in this session and worked / failed; None if not."""
    last = request.session.get(LAST_TEST_SESSION_KEY) or {}
    if last.get("digest") != _credentials_digest(broker_type, environment, credentials):
        return None
    return bool(last.get("ok"))


def _saved_message(label: str, tested: bool | None) -> str:
    if tested:
        return f"{label} is connected; the first sync has started."
    why = "the connection test failed" if tested is False else "the connection was not tested"
    return (
        f"Saved {label}, not verified yet: {why}. The first sync is trying these credentials now; "
        "the card shows what the broker answered."
    )


@sensitive_variables()
def _test_login(request, *, broker_type: str, credentials: dict, environment: str, form, template: str, context):
    """Log in with what the trader typed, without saving; htmx gets just the result, else the whole page."""
    wait = throttle.test_login_wait(request)
    if wait is not None:
        result = {"ok": False, "errors": [f"You tested logins several times just now. Try again in {wait} s."]}
        status = 429
    else:
        status = 200
        try:
            accounts = services.verify_credentials(
                broker_type=broker_type, credentials=credentials, environment=environment
            )
        except ValidationError as exc:
            result = {"ok": False, "errors": exc.messages}
        except BrokerError as exc:
            result = {"ok": False, "errors": [exc.message]}
        else:
            result = {"ok": True, "accounts": accounts}
        request.session[LAST_TEST_SESSION_KEY] = {
            "digest": _credentials_digest(broker_type, environment, credentials),
            "ok": result["ok"],
        }
    if request.htmx:
        return render(request, "brokers/_test_result.html", {"result": result}, status=status)
    return render(request, template, context | {"form": form, "result": result}, status=status)


# The credentials typed on these pages never reach an error report, even with DEBUG on
# (config/error_reports.py keeps Django's filter active then too).
@sensitive_post_parameters()
@sensitive_variables()
@trader_page
def connection_add(request):
    broker_type = request.POST.get("broker_type") or request.GET.get("broker") or "demo"
    provider_class = _provider_class(broker_type)
    if provider_class.portal:
        return snaptrade_views.connect_page(request, provider_class)
    if provider_class.oauth is not None:
        # Nothing to type: the trader signs in at the broker (a posted form saves nothing).
        return oauth_views.connect_page(request, provider_class)
    form = ConnectionForm(request.POST or None, provider_class=provider_class)
    context = {"provider": provider_class}
    if request.method == "POST" and request.POST.get("action") == "test":
        return _test_login(
            request,
            broker_type=provider_class.key,
            credentials=form.credential_values(),
            environment=request.POST.get("environment", ""),
            form=form,
            template="brokers/connection_form.html",
            context=context,
        )
    if request.method == "POST" and form.is_valid():
        try:
            connection = services.connection_create(
                owner=request.user,
                broker_type=provider_class.key,
                label=form.cleaned_data["label"],
                environment=form.cleaned_data.get("environment", ""),
                credentials=form.credentials(),
                sync_interval_min=form.cleaned_data["sync_interval_min"],
            )
        except ValidationError as exc:
            _copy_errors(form, exc)
        else:
            tested = _last_test_outcome(
                request, provider_class.key, form.cleaned_data.get("environment", ""), form.credentials()
            )
            (messages.success if tested else messages.warning)(request, _saved_message(connection.label, tested))
            return redirect("brokers:list")
    return render(request, "brokers/connection_form.html", context | {"form": form})


@sensitive_post_parameters()
@sensitive_variables()
@trader_page
def connection_edit(request, pk):
    connection = _own_connection(request, pk)
    provider_class = _provider_class(connection.broker_type)
    form = EditConnectionForm(request.POST or None, connection=connection, provider_class=provider_class)
    context = {"provider": provider_class, "connection": connection}
    if request.method == "POST" and request.POST.get("action") == "test":
        return _test_login(
            request,
            broker_type=connection.broker_type,
            credentials=form.merged(form.credential_values()),
            environment=connection.environment,
            form=form,
            template="brokers/connection_edit.html",
            context=context,
        )
    if request.method == "POST" and form.is_valid():
        try:
            # A link made on the broker's pages has nothing typed to change here, only the label.
            typed = None if provider_class.signs_in_at_broker() else form.merged(form.credentials())
            services.connection_update(connection.pk, label=form.cleaned_data["label"], credentials=typed)
        except ValidationError as exc:
            _copy_errors(form, exc)
        else:
            messages.success(request, f"Saved {form.cleaned_data['label']}.")
            return redirect("brokers:list")
    return render(request, "brokers/connection_edit.html", context | {"form": form})


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
    schedules.request_sync_now(connection.pk, trigger=SyncLog.Trigger.MANUAL)
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
