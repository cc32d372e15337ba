"""How often a trader may press "Sync now" for one connection, shared by the pages and the API."""

from django.conf import settings
from django_ratelimit.core import get_usage


def sync_now_wait(request, connection_id: int) -> int | None:
    """Count this press; None when allowed, else the whole seconds to wait (per trader and connection)."""
    usage = get_usage(
        request,
        group="brokers.sync_now",
        # Per trader and connection: one busy connection does not block the trader's others.
        key=lambda group, req: f"{req.user.pk}:{connection_id}",
        rate=settings.SYNC_NOW_RATE_LIMIT,
        method=request.method,
        increment=True,
    )
    if usage is None or not usage["should_limit"]:
        return None
    # The window still holds during its last second (time_left 0), so the next opens a second
    # later; time_left is -1 when the cache failed, and the wait is then a plain 1 s.
    return max(1, usage["time_left"] + 1)
