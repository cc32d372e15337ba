"""A trip to a broker's pages (OAuth sign-in or an aggregator's portal) and the state it must bring back.

The state lives in the trader's own session, keyed by the random `state` sent to the broker:
single use (taken out on the first callback, and claimed in Redis with SET NX, since two loads of
one return URL at once both read the session before either saves it), short-lived
(OAUTH_STATE_MAX_AGE_S), and bound
to the connection it re-authorises. Another trader's browser has another session (and Django
empties a session when a different trader logs in), so it never holds the trip. Any callback
that does not match saves nothing and says why.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from redis import RedisError

from brokers.models import BrokerConnection
from brokers.providers import oauth
from telemetry.redis_client import redis_client

SESSION_KEY = "oauth_flows"
CLAIM_PREFIX = "tj:flow-claimed:"


def remember_flow(
    request, broker_key: str, connection: BrokerConnection | None, environment: str = "", **details
) -> str:
    """Start a trip to the broker's pages: the state it must bring back to the callback."""
    flows = _live_flows(request)
    state = oauth.new_state()
    flows[state] = {
        "broker": broker_key,
        "connection": connection.pk if connection else None,
        "environment": connection.environment if connection else environment,
        "started": time.time(),
        **details,
    }
    request.session[SESSION_KEY] = flows
    return state


def _live_flows(request) -> dict:
    """The trader's flows still in time; stale ones are dropped so the session stays small."""
    oldest = time.time() - settings.OAUTH_STATE_MAX_AGE_S
    return {s: f for s, f in request.session.get(SESSION_KEY, {}).items() if f["started"] >= oldest}


def take_flow(request) -> tuple[dict | None, str]:
    """The trip this callback ends, taken out of the session whatever it brings, or why it cannot go on."""
    state = request.GET.get("state", "")
    every_flow = request.session.get(SESSION_KEY, {})
    flow = every_flow.get(state)
    request.session[SESSION_KEY] = {s: f for s, f in every_flow.items() if s != state}
    if flow is not None:
        try:
            if not _claimed(state):
                flow = None  # another load of this return URL took it a moment ago
        except RedisError:
            return (
                None,
                "This sign-in answer could not be checked just now. Nothing was saved; start again with Connect.",
            )
    problem = _flow_problem(request, flow)
    return (None, problem) if problem else (flow, "")


def _claimed(state: str) -> bool:
    """True for the first callback with this state, across every web process; the key outlives the state."""
    key = CLAIM_PREFIX + hashlib.sha256(state.encode()).hexdigest()
    return bool(redis_client().set(key, 1, nx=True, ex=settings.OAUTH_STATE_MAX_AGE_S))


def _flow_problem(request, flow: dict | None) -> str:
    """Why this callback cannot go on, in the trader's words; "" when it can."""
    if flow is None:
        return (
            "This sign-in answer does not belong to a sign-in started in this browser session, or it was "
            "already used. Nothing was saved; start again with Connect."
        )
    if time.time() - flow["started"] > settings.OAUTH_STATE_MAX_AGE_S:
        minutes = settings.OAUTH_STATE_MAX_AGE_S // 60
        return f"The sign-in took longer than {minutes} minutes. Nothing was saved; start again with Connect."
    if (
        flow["connection"] is not None
        and not BrokerConnection.objects.filter(pk=flow["connection"], owner=request.user).exists()
    ):
        return "The connection this sign-in was for no longer exists. Nothing was saved."
    return ""
