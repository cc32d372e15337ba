"""The trader's trades page."""
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from journal.models import Trade


@login_required
def trade_list(request):
    trades = (
        Trade.objects.filter(account__connection__owner=request.user, deleted_at__isnull=True)
        .select_related("account", "account__connection")
        .order_by("-executed_at", "-id")
    )
    page = Paginator(trades, 50).get_page(request.GET.get("page"))
    return render(request, "journal/trade_list.html", {"page": page})
