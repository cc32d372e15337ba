"""Which trading days no successful sync read: the proof, day by day, that no fill of a day is missing.

A connection's trading day is covered when a successful run started after that day's session
closed and while the broker still returns that day's fills (`BrokerProvider.reach()`: the
history reach, Tradovate's current day, else `max_history`). Sessions and closes come from
exchange_calendars (brokers.sessions), per asset class of the connection's fills: CME for futures, NYSE for
stocks and options, 24/7 for crypto; days before the connection's first reach and days
not closed yet are not judged.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from datetime import date, datetime

from brokers.models import READ_NO_BROKER, BrokerConnection, SyncLog
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class
from brokers.sessions import CALENDAR_OF, DEFAULT_CALENDAR, session_closes
from journal.models import RoundTrip

COVERING_RUNS = (SyncLog.Status.SUCCESS, SyncLog.Status.PARTIAL)


def uncovered_days(connections: list[BrokerConnection], first: date, last: date, now: datetime) -> dict[date, list]:
    """Each trading day from first to last that some connection's successful syncs did not read: day → connections."""
    days: dict[date, list] = defaultdict(list)
    for connection in connections:
        # From the round trips, a tenth of the fills' rows, each with its instrument's asset class.
        trips = RoundTrip.objects.filter(account__connection=connection).order_by()
        classes = set(trips.values_list("asset_class", flat=True).distinct())
        if not classes:
            continue
        try:
            reach = get_provider_class(connection.broker_type).reach()
        except BrokerConfigurationError:
            continue
        runs = sorted(
            SyncLog.objects.filter(connection=connection, status__in=COVERING_RUNS)
            .exclude(trigger__in=READ_NO_BROKER)
            .values_list("started_at", flat=True)
        )
        judged_from = connection.created_at - reach
        codes = {CALENDAR_OF.get(c, DEFAULT_CALENDAR) for c in classes}
        missed = set()
        for code in codes:
            for day, close in session_closes(code, first, last).items():
                if close > now or close < judged_from:
                    continue
                if not _read_between(runs, close, close + reach):
                    missed.add(day)
        for day in missed:
            days[day].append(connection)
    return dict(days)


def _read_between(runs: list[datetime], start: datetime, end: datetime) -> bool:
    i = bisect_left(runs, start)
    return i < len(runs) and runs[i] < end
