"""Reads of trades and round trips that the pages, the API and the commands share."""

from datetime import date

from django.db.models import Count, Sum

from journal.models import RoundTrip, Trade


def trades_visible_to(user):
    """The trader's own trades, the ones they deleted left out: the only trades any page or API shows them."""
    return Trade.objects.filter(account__connection__owner=user, deleted_at__isnull=True)


def round_trips_visible_to(user):
    """The trader's round trips (open ones are their positions), newest first."""
    return RoundTrip.objects.filter(account__connection__owner=user).select_related("account", "account__connection")


def open_positions_of(user):
    return round_trips_visible_to(user).filter(closed_at__isnull=True).order_by("account_id", "symbol", "expiry")


def calendar_days(user, first: date, last: date, account_id: int | None = None) -> dict[date, dict]:
    """Each trading day from `first` to `last` with round trips closed: their count and net P&L per currency."""
    trips = round_trips_visible_to(user).filter(trading_day__gte=first, trading_day__lte=last)
    if account_id is not None:
        trips = trips.filter(account_id=account_id)
    days: dict[date, dict] = {}
    rows = trips.order_by().values("trading_day", "currency").annotate(net=Sum("net_pnl"), count=Count("id"))
    for row in rows:
        day = days.setdefault(row["trading_day"], {"count": 0, "net": {}})
        day["count"] += row["count"]
        day["net"][row["currency"]] = row["net"]
    return days
