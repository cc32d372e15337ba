"""The trader's broker pages: connections with their status, and the controls that change them."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from brokers import schedules, services
from brokers.forms import INTERVAL_CHOICES, ConnectionForm, SyncSettingsForm
from brokers.models import BrokerConnection
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class


def _own_connection(request, pk) -> BrokerConnection:
    return get_object_or_404(BrokerConnection, pk=pk, owner=request.user)


def _copy_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        target = field if field in form.fields else (f"cred_{field}" if f"cred_{field}" in form.fields else None)
        for error in errors:
            form.add_error(target, error)


@login_required
def connection_list(request):
    connections = (
        BrokerConnection.objects.filter(owner=request.user)
        .annotate(trade_count=Count("accounts__trades"))
        .prefetch_related("accounts")
    )
    return render(
        request,
        "brokers/connection_list.html",
        {"connections": connections, "interval_choices": [n for n, _ in INTERVAL_CHOICES]},
    )


@login_required
def connection_add(request):
    broker_type = request.POST.get("broker_type") or request.GET.get("broker") or "demo"
    try:
        provider_class = get_provider_class(broker_type)
    except BrokerConfigurationError:
        raise Http404("Unknown broker") from None
    form = ConnectionForm(request.POST or None, provider_class=provider_class)
    if request.method == "POST" and form.is_valid():
        try:
            connection = services.connection_create(
                owner=request.user,
                broker_type=form.cleaned_data["broker_type"],
                label=form.cleaned_data["label"],
                environment=form.cleaned_data.get("environment", ""),
                credentials=form.credentials(),
                sync_interval_min=form.cleaned_data["sync_interval_min"],
            )
        except ValidationError as exc:
            _copy_errors(form, exc)
        else:
            messages.success(request, f"{connection.label} is connected; the first sync has started.")
            return redirect("brokers:list")
    return render(request, "brokers/connection_form.html", {"form": form, "provider": provider_class})


@login_required
@require_POST
def connection_settings(request, pk):
    connection = _own_connection(request, pk)
    form = SyncSettingsForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("brokers:list")
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


@login_required
@require_POST
def connection_sync_now(request, pk):
    connection = _own_connection(request, pk)
    schedules.request_sync_now(connection.pk, trigger="manual")
    messages.info(request, f"A sync of {connection.label} has been queued.")
    return redirect("brokers:list")


@login_required
def connection_delete(request, pk):
    connection = _own_connection(request, pk)
    if request.method == "POST":
        services.connection_delete(connection.pk)
        messages.success(request, f"Deleted {connection.label} with its trades and history.")
        return redirect("brokers:list")
    return render(request, "brokers/connection_confirm_delete.html", {"connection": connection})
