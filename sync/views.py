"""The trader's sync history per connection, undoing a run, importing a broker file, and dismissing notices."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from brokers.decorators import trader_page
from brokers.models import BrokerAccount, BrokerConnection, SyncLog
from journal.files import template
from journal.middleware import trader_time_zone
from sync.files import file_import
from sync.forms import FileImportForm
from sync.models import Notice
from sync.undo import UndoRefused, beyond_reach, run_fills
from sync.undo import run_undo as undo

LOGS_PER_PAGE = 25


@trader_page
@require_GET
def sync_history(request, pk):
    connection = get_object_or_404(BrokerConnection, pk=pk, owner=request.user)
    page = Paginator(connection.sync_logs.order_by("-started_at", "-id"), LOGS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(request, "sync/history.html", {"connection": connection, "page": page})


@trader_page
@require_http_methods(["GET", "POST"])
def run_undo(request, pk):
    """GET: what undoing the run would remove, and the button; POST: undo it, back to the history."""
    run = get_object_or_404(SyncLog.objects.select_related("connection"), pk=pk, connection__owner=request.user)
    if request.method == "POST":
        try:
            removed = undo(run=run, by=request.user)
        except UndoRefused as refused:
            messages.error(request, refused.message)
        else:
            messages.success(
                request,
                f"Run undone: {removed.total} fill{'s' if removed.total != 1 else ''} removed. The next sync "
                "reads them again, as far back as the broker still lists them.",
            )
        return redirect("sync:history", pk=run.connection_id)
    context = {"run": run, "fills": run_fills(run), "beyond_reach": beyond_reach(run)}
    return render(request, "sync/undo.html", context)


@trader_page
@require_POST
def notice_dismiss(request, pk):
    notice = get_object_or_404(Notice, pk=pk, owner=request.user)
    if notice.dismissed_at is None:
        notice.dismissed_at = timezone.now()
        notice.save(update_fields=["dismissed_at"])
    if request.htmx:
        # htmx swaps the notice for this empty body, removing it without a reload.
        return HttpResponse("")
    return redirect("brokers:list")


@trader_page
@require_http_methods(["GET", "POST"])
def file_import_page(request, pk=None):
    """Upload a broker export into one of the trader's accounts; the result says what it did, a bad file why not."""
    initial = {}
    if pk is not None:
        initial["account"] = get_object_or_404(BrokerAccount, pk=pk, connection__owner=request.user)
    elif (chosen := request.GET.get("connection", "")).isascii() and chosen.isdecimal() and len(chosen) < 19:
        initial["account"] = BrokerAccount.objects.filter(
            connection_id=int(chosen), connection__owner=request.user
        ).first()
    result = None
    if request.method == "POST":
        form = FileImportForm(request.POST, request.FILES, user=request.user)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            result = file_import(
                account=form.cleaned_data["account"],
                stream=upload.file,
                name=upload.name,
                format=form.cleaned_data["format"],
                time_zone=form.cleaned_data["time_zone"],
                trader_zone=trader_time_zone(request.user),
                contract_sizes=form.cleaned_data["contract_sizes"],
            )
    else:
        form = FileImportForm(initial=initial, user=request.user)
    status = 400 if request.method == "POST" and (result is None or not result.ok) else 200
    return render(request, "sync/file_import.html", {"form": form, "result": result}, status=status)


@trader_page
@require_GET
def file_template(request):
    """The template CSV with three example rows (a stock, a future, an option)."""
    response = HttpResponse(template.EXAMPLE, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="trade-journal-template.csv"'
    return response
