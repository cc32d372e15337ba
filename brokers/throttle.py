"""How often a trader may start a sync, test a login or take a step of signing in at a broker, shared by the
pages and the API."""

import math
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect
from django_ratelimit import ALL
from django_ratelimit.core import get_usage

from brokers.providers.ratelimit import get_limiter
from telemetry.client_ip import client_ip

# rate_limits.toml's table of our own per-trader sign-in budgets, one bucket per provider.
SIGN_IN_LIMITS = "sign_in"


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


def sign_in_wait(request) -> int | None:
    """A step of signing in at a broker (Connect, Reconnect, the callback, the Personal-key form): per trader,
    and per address (whoever is logged in: one client with many accounts), as the proxies saw it."""
    waits = [
        _wait(request, group="brokers.sign_in", key=str(request.user.pk), rate=settings.SIGN_IN_RATE_LIMIT),
        _wait(
            request,
            group="brokers.sign_in_address",
            key=client_ip(request) or "",
            rate=settings.SIGN_IN_ADDRESS_RATE_LIMIT,
        ),
    ]
    return max((w for w in waits if w is not None), default=None)


def sign_in_step(view):
    """Wear it under trader_page on every view that is a step of signing in at a broker."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        wait = sign_in_wait(request)
        if wait is not None:
            messages.error(request, f"You started or finished sign-ins many times just now. Try again in {wait} s.")
            return redirect("brokers:list")
        return view(request, *args, **kwargs)

    return wrapped


def token_budget_wait(request, provider_key: str) -> int | None:
    """Book one of the trader's own sign-ins at this broker (a code exchange, a portal login) before any
    of the broker's shared buckets, which every trader's renewals and syncs need: None when booked."""
    wait = get_limiter().try_acquire(
        SIGN_IN_LIMITS, scope={provider_key: f"trader-{request.user.pk}"}, buckets=(provider_key,)
    )
    return None if wait == 0 else max(1, math.ceil(wait))
