"""Connect with a broker by signing in at its own page (OAuth2 authorization code), and reconnect.

The flow's state lives in the trader's own session, keyed by the random `state` sent to the
broker: single use (taken out on the first callback), short-lived (OAUTH_STATE_MAX_AGE_S), and
bound to the connection it re-authorises. Another trader's browser has another session (and
Django empties a session when a different trader logs in), so it never holds the flow. Any
callback that does not match saves nothing and says why.

SnapTrade's connection portal comes back through the same callback and flows (snaptrade_views).

Connect and Reconnect are links (GET) rather than forms: they only write the trader's own
session, and a form whose answer redirects to the broker's host would fall foul of the
Content-Security-Policy's form-action.
"""

from __future__ import annotations

import re
import time

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from brokers import services, snaptrade_views
from brokers.decorators import trader_page
from brokers.models import BrokerConnection
from brokers.providers import oauth
from brokers.providers.errors import BrokerAuthError, BrokerConfigurationError, BrokerError
from brokers.providers.registry import get_broker_provider, get_provider_class, provider_choices

SESSION_KEY = "oauth_flows"
# Error codes of RFC 6749 section 4.1.2.1 look like this; anything else is not echoed back.
ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


def connect_page(request, provider_class):
    """The add page of a broker that connects by sign-in: the button, or the operator's steps."""
    return render(
        request,
        "brokers/oauth_connect.html",
        {
            "provider": provider_class,
            "configured": oauth.app_for(provider_class) is not None,
            "variables": oauth.setup_variables(provider_class),
            "choices": provider_choices(),
        },
    )


def _oauth_class(broker_type: str):
    try:
        provider_class = get_provider_class(broker_type)
    except BrokerConfigurationError:
        provider_class = None
    if provider_class is None or provider_class.oauth is None:
        return None
    return provider_class


def _start(request, provider_class, connection: BrokerConnection | None, environment: str = ""):
    app = oauth.app_for(provider_class)
    if app is None:
        messages.error(request, f"Signing in with {provider_class.display_name} is not set up on this installation.")
        return redirect(f"{reverse('brokers:add')}?broker={provider_class.key}")
    verifier = oauth.new_code_verifier()
    state = remember_flow(request, provider_class.key, connection, environment, verifier=verifier)
    return redirect(oauth.authorization_url(provider_class, app, state, verifier))


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


@trader_page
@require_GET
def connect(request, broker_type):
    provider_class = _oauth_class(broker_type)
    if provider_class is None:
        messages.error(request, "This broker does not connect by signing in; fill in its form instead.")
        return redirect("brokers:add")
    environments = [e for e, _ in provider_class.environments]
    environment = request.GET.get("environment") or (environments[0] if environments else "")
    if environments and environment not in environments:
        messages.error(request, f"Environment must be one of: {', '.join(environments)}.")
        return redirect(f"{reverse('brokers:add')}?broker={provider_class.key}")
    return _start(request, provider_class, None, environment)


@trader_page
@require_GET
def reconnect(request, pk):
    """Re-authorise this connection: OAuth signs in again, typed credentials go to their form."""
    connection = get_object_or_404(BrokerConnection, pk=pk, owner=request.user)
    if connection.signs_in_at_broker and get_provider_class(connection.broker_type).portal:
        return snaptrade_views.start(request, connection=connection)
    provider_class = _oauth_class(connection.broker_type)
    if provider_class is None:
        messages.info(request, f"Save working credentials for {connection.label}: sync resumes at once.")
        return redirect("brokers:edit", pk=connection.pk)
    return _start(request, provider_class, connection)


@trader_page
@require_GET
def callback(request):
    state = request.GET.get("state", "")
    every_flow = request.session.get(SESSION_KEY, {})
    flow = every_flow.get(state)
    # Single use: the state is gone whatever this callback brings.
    request.session[SESSION_KEY] = {s: f for s, f in every_flow.items() if s != state}
    problem = _flow_problem(request, flow)
    if problem:
        messages.error(request, problem)
        return redirect("brokers:list")
    provider_class = get_provider_class(flow["broker"])
    if provider_class.portal:
        return snaptrade_views.finish(request, flow)
    name = provider_class.display_name
    error = request.GET.get("error", "")
    if error:
        if error == "access_denied":
            messages.error(request, f"You declined access at {name}, so nothing was connected or changed.")
        else:
            code = error if ERROR_CODE.match(error) else "unknown"
            messages.error(request, f"{name} did not complete the sign-in (error: {code}). Nothing was saved.")
        return redirect("brokers:list")
    code = request.GET.get("code", "")
    if not code:
        messages.error(request, f"{name} sent no sign-in code back. Nothing was saved; please try again.")
        return redirect("brokers:list")
    app = oauth.app_for(provider_class)
    if app is None:
        messages.error(request, f"Signing in with {name} is not set up on this installation any more.")
        return redirect("brokers:list")
    provider = get_broker_provider(provider_class.key, flow["environment"])
    try:
        auth = oauth.exchange_code(provider, app, code, flow["verifier"])
        accounts = provider.get_accounts(auth)
    except BrokerAuthError:
        messages.error(
            request, f"{name} did not accept the sign-in (it took too long, or was already used). Nothing was saved."
        )
        return redirect("brokers:list")
    except BrokerError as exc:
        messages.error(request, f"{exc.message} Nothing was saved; please try again.")
        return redirect("brokers:list")
    found = ", ".join(a.name for a in accounts) or "no accounts yet"
    if flow["connection"] is not None:
        connection = services.connection_reconnect(flow["connection"], auth)
        messages.success(request, f"Reconnected {connection.label} ({found}); sync resumed with its history kept.")
        return redirect("brokers:list")
    try:
        connection = services.connection_create(
            owner=request.user,
            broker_type=provider_class.key,
            label=name,
            environment=flow["environment"],
            credentials={},
            auth=auth,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("brokers:list")
    messages.success(request, f"{connection.label} is connected ({found}); the first sync has started.")
    return redirect("brokers:list")


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
