"""How often a trader may start a sync or test a login, shared by the pages and the API."""

from django.conf import settings
from django_ratelimit import ALL
from django_ratelimit.core import get_usage


def _wait(request, *, group: str, key: str, rate: str) -> int | None:
    """Count this request; None when allowed, else the whole seconds to wait."""
    usage = get_usage(
        request,
        group=group,
        key=lambda group, req: key,
        rate=rate,
        # Every method counts into one allowance: a PATCH switching auto-sync on and a POST
        # of Sync now are the same kind of press.
        method=ALL,
        increment=True,
    )
    if usage is None or not usage["should_limit"]:
        return None
    # The window still holds during its last second (time_left 0), so the next opens a second
    # later; time_left is -1 when the cache failed, and the wait is then a plain 1 s.
    return max(1, usage["time_left"] + 1)


def sync_now_wait(request, connection_id: int) -> int | None:
    """A sync started by hand: "Sync now", or switching auto-sync on (which syncs at once).

    Per trader and connection: one busy connection does not block the trader's others, and
    toggling auto-sync off and on shares the allowance of the button.
    """
    return _wait(
        request, group="brokers.sync_now", key=f"{request.user.pk}:{connection_id}", rate=settings.SYNC_NOW_RATE_LIMIT
    )


def test_login_wait(request) -> int | None:
    """ "Test connection" logs in at the broker, which limits logins: per trader, whatever the connection."""
    return _wait(
        request, group="brokers.test_login", key=str(request.user.pk), rate=settings.TEST_CONNECTION_RATE_LIMIT
    )
