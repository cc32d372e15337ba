"""Reads of trades and round trips that the pages, the API and the commands share."""

from datetime import date, datetime
from decimal import Decimal

from django.db.models import Count, Sum

from brokers.models import BrokerAccount, SyncLog
from journal.coverage import COVERING_RUNS
from journal.models import RoundTrip, Trade
from journal.reconciling import instrument_name

# How many of a connection's latest successful runs are searched for an account's prices: a
# broker that reports positions only now and then (SnapTrade, about daily) still has them there.
MARK_RUNS = 200


def trades_visible_to(user):
    """The trader's own trades, the ones they deleted left out: the only trades any page or API shows them."""
    # Their accounts first, then their fills by account: each account's own index, so a trader's
    # page costs what their fills do, not what everyone's in the table do.
    accounts = list(BrokerAccount.objects.filter(connection__owner=user).values_list("pk", flat=True))
    return Trade.objects.filter(account_id__in=accounts, deleted_at__isnull=True)


def symbols_traded_by(user):
    """Every symbol of the trader's fills, A to Z: read from their round trips, which hold each
    instrument a fill of theirs is in at a sixth of the rows (36 ms of a 100,000-fill page)."""
    return round_trips_visible_to(user).order_by("symbol").values_list("symbol", flat=True).distinct()


def round_trips_visible_to(user):
    """The trader's round trips (open ones are their positions), newest first."""
    return RoundTrip.objects.filter(account__connection__owner=user).select_related("account", "account__connection")


def open_positions_of(user):
    return round_trips_visible_to(user).filter(closed_at__isnull=True).order_by("account_id", "symbol", "expiry")


def valued(open_positions) -> list[RoundTrip]:
    """Open positions (round trips not yet flat), each valued at its broker's last reported price where there is one.

    Each position gets mark_price and mark_as_of (the price the latest successful run that read
    the account's positions gave, and when it held) and unrealised_pnl = (mark − FIFO cost) ×
    signed open quantity × multiplier, in the instrument's currency. All three are None when the
    broker reports no price for it: the journal knows no market price of its own, and shows
    "unknown" rather than a guess.
    """
    positions = list(open_positions)
    wanted: dict[int, set[str]] = {}
    for p in positions:
        wanted.setdefault(p.account.connection_id, set()).add(p.account.external_id)
    marks: dict[tuple[int, str], dict] = {}
    for connection_id, accounts in wanted.items():
        runs = SyncLog.objects.filter(connection_id=connection_id, status__in=COVERING_RUNS).order_by("-started_at")
        for detail in runs.values_list("detail", flat=True)[:MARK_RUNS].iterator(chunk_size=20):
            for external_id in list(accounts):
                found = (detail or {}).get(external_id)
                if isinstance(found, dict) and "marks" in found:
                    marks[(connection_id, external_id)] = found["marks"]
                    accounts.discard(external_id)
            if not accounts:
                break
    for p in positions:
        prices = marks.get((p.account.connection_id, p.account.external_id)) or {}
        mark = prices.get(instrument_name(p.symbol, p.expiry, p.strike, p.option_right))
        p.mark_price = Decimal(mark["price"]) if mark else None
        p.mark_as_of = datetime.fromisoformat(mark["as_of"]) if mark else None
        p.unrealised_pnl = (
            (p.mark_price - p.open_average) * p.open_quantity * p.multiplier
            if p.mark_price is not None and p.open_average is not None
            else None
        )
    return positions


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
