"""The trader's sync history per connection, and dismissing the notices the brokers page shows."""

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from brokers.decorators import trader_page
from brokers.models import BrokerConnection
from sync.models import Notice

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
