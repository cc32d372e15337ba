"""When each trading day's session closes, from exchange_calendars: one owner for the brokers card and the calendar."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cache

# The exchange whose sessions make an asset class's trading days (exchange_calendars' codes).
CALENDAR_OF = {
    "FUT": "CMES",
    "FOP": "CMES",
    "STK": "XNYS",
    "OPT": "XNYS",
    "CASH": "24/5",
    "CRYPTO": "24/7",
    "PERP": "24/7",
}
DEFAULT_CALENDAR = "XNYS"


@cache
def _calendar(code: str):
    # Imported here: exchange_calendars loads pandas, which only the pages that judge days need.
    import exchange_calendars

    return exchange_calendars.get_calendar(code)


def warm() -> None:
    """Build every exchange's calendar now: about a second (pandas), which no page should pay.

    gunicorn calls this once in its master before the workers fork (config/gunicorn.py), so every
    worker starts with the calendars built and shares their memory.
    """
    for code in {*CALENDAR_OF.values(), DEFAULT_CALENDAR}:
        _calendar(code)


def session_closes(code: str, first: date, last: date) -> dict[date, datetime]:
    """Each session of this exchange from first to last (inclusive) with the moment it closed, in UTC."""
    calendar = _calendar(code)
    start = max(first, calendar.first_session.date())
    end = min(last, calendar.last_session.date())
    if start > end:
        return {}
    return {
        session.date(): calendar.session_close(session).to_pydatetime()
        for session in calendar.sessions_in_range(start.isoformat(), end.isoformat())
    }


def last_close(code: str, now: datetime) -> tuple[date, datetime] | None:
    """The latest session of this exchange that had closed by `now`, and when it closed."""
    recent = session_closes(code, now.date() - timedelta(days=10), now.date() + timedelta(days=1))
    closed = [(day, close) for day, close in recent.items() if close <= now]
    return max(closed, key=lambda pair: pair[1]) if closed else None
