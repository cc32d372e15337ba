"""The trader's round trips (each opening onto its fills), open positions and month calendar."""

import calendar
from datetime import date

from django import forms
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from brokers.decorators import trader_page
from brokers.models import READ_NO_BROKER, BrokerAccount, BrokerConnection, SyncLog
from brokers.vocabulary import POSITION_ADVICE, position_difference
from journal.coverage import COVERING_RUNS, uncovered_days
from journal.models import EARLIEST_TRADE_DATE, LATEST_TRADE_DATE
from journal.selectors import calendar_days, open_positions_of, round_trips_visible_to, trades_visible_to, valued

ROUND_TRIPS_PER_PAGE = 50


class AccountForm(forms.Form):
    account = forms.ModelChoiceField(queryset=BrokerAccount.objects.none(), required=False, empty_label="All accounts")
    symbol = forms.CharField(required=False, max_length=64, help_text="The symbol or its start, e.g. ES.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = BrokerAccount.objects.filter(connection__owner=user).select_related(
            "connection"
        )
        self.fields["account"].label_from_instance = lambda a: f"{a.name or a.external_id} · {a.connection.label}"

    def narrowed(self, trips):
        """The trips this form asks for; none at all when it is not valid (never silently everything)."""
        if not self.is_bound:
            return trips
        if not self.is_valid():
            return trips.none()
        if self.cleaned_data.get("account"):
            trips = trips.filter(account=self.cleaned_data["account"])
        if self.cleaned_data.get("symbol"):
            trips = trips.filter(symbol__istartswith=self.cleaned_data["symbol"].strip())
        return trips


class MonthForm(AccountForm):
    symbol = None  # a month is shown whole: per account, not per symbol
    month = forms.RegexField(
        regex=r"^\d{4}-\d{2}$",
        required=False,
        help_text="YYYY-MM",
        error_messages={"invalid": "Enter a month as YYYY-MM."},
    )

    def first_day(self) -> date:
        value = self.cleaned_data.get("month") if self.is_bound and self.is_valid() else ""
        if value:
            year, month = map(int, value.split("-"))
            if 1 <= month <= 12 and EARLIEST_TRADE_DATE.year <= year <= LATEST_TRADE_DATE.year:
                return date(year, month, 1)
        return timezone.localdate().replace(day=1)


@trader_page
def round_trip_list(request):
    form = AccountForm(request.GET or None, user=request.user)
    trips = form.narrowed(round_trips_visible_to(request.user)).order_by("-opened_at", "-id")
    page = Paginator(trips, ROUND_TRIPS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "journal/round_trip_list.html", {"page": page, "form": form})


@trader_page
def round_trip_fills(request, pk):
    """One round trip's fills, which the round-trips page loads when the trader opens the row."""
    trip = get_object_or_404(round_trips_visible_to(request.user), pk=pk)
    fills = trades_visible_to(request.user).filter(round_trips=trip).order_by("executed_at", "broker_trade_id")
    return render(request, "journal/_round_trip_fills.html", {"trip": trip, "fills": fills})


@trader_page
def position_list(request):
    return render(request, "journal/position_list.html", {"positions": valued(open_positions_of(request.user))})


@trader_page
def month_calendar(request):
    form = MonthForm(request.GET or None, user=request.user)
    first = form.first_day()
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    account = form.cleaned_data.get("account") if form.is_bound and form.is_valid() else None
    days = calendar_days(request.user, first, last, account.pk if account else None)
    connections = BrokerConnection.objects.filter(owner=request.user)
    if account:
        connections = connections.filter(pk=account.connection_id)
    connections = list(connections)
    missed = uncovered_days(connections, first, last, timezone.now())
    weeks = [
        [
            {
                "date": d,
                "in_month": d.month == first.month,
                "not_synced": [c.label for c in missed.get(d, [])],
                **days.get(d, {"count": 0, "net": {}}),
            }
            for d in week
        ]
        for week in calendar.Calendar().monthdatescalendar(first.year, first.month)
    ]
    differences = _position_differences(connections, account)
    previous = (first - date.resolution).replace(day=1)
    following = last + date.resolution
    return render(
        request,
        "journal/calendar.html",
        {
            "form": form,
            "first": first,
            "weeks": weeks,
            "account": account,
            "previous": f"{previous:%Y-%m}",
            "following": f"{following:%Y-%m}",
            "month_total": sum(day["count"] for day in days.values()),
            "differences": differences,
            "position_advice": POSITION_ADVICE if differences else "",
            "not_synced_days": sum(1 for d in missed if first <= d <= last),
        },
    )


def _position_differences(connections: list[BrokerConnection], account: BrokerAccount | None) -> list[str]:
    """What the last successful run of each connection found differing from the broker's positions."""
    found = []
    for connection in connections:
        # A file import or a reparse compares no positions: the last sync's comparison stands.
        runs = SyncLog.objects.filter(connection=connection, status__in=COVERING_RUNS)
        runs = runs.exclude(trigger__in=READ_NO_BROKER)
        run = runs.order_by("-started_at").first()
        for external_id, result in (run.detail or {}).items() if run else ():
            if account and external_id != account.external_id:
                continue
            for record in result.get("differences", []) if isinstance(result, dict) else ():
                found.append(f"{connection.label}: {position_difference(record, connection.provider_name)}")
    return found
