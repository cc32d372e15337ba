"""Connect with a broker by signing in at its own page (OAuth2 authorization code), and reconnect.

Connect and Reconnect are links (GET) rather than forms: they only write the trader's own
session, and a form whose answer redirects to the broker's host would fall foul of the
Content-Security-Policy's form-action.
"""

from __future__ import annotations

import re

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from brokers import selectors, services, throttle
from brokers.connect.state import remember_flow
from brokers.decorators import trader_page
from brokers.models import BrokerConnection
from brokers.providers import oauth
from brokers.providers.errors import BrokerAuthError, BrokerConfigurationError, BrokerError
from brokers.providers.registry import get_broker_provider, get_provider_class, provider_choices

# Error codes of RFC 6749 section 4.1.2.1 look like this; anything else is not echoed back.
ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


def add_page(request, provider_class):
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


def _start(request, provider_class, connection: BrokerConnection | None, environment: str = ""):
    app = oauth.app_for(provider_class)
    if app is None:
        messages.error(request, f"Signing in with {provider_class.display_name} is not set up on this installation.")
        return redirect(f"{reverse('brokers:add')}?broker={provider_class.key}")
    verifier = oauth.new_code_verifier()
    state = remember_flow(request, provider_class.key, connection, environment, verifier=verifier)
    return redirect(oauth.authorization_url(provider_class, app, state, verifier))


@trader_page
@throttle.sign_in_step
@require_GET
def connect(request, broker_type):
    try:
        provider_class = get_provider_class(broker_type)
    except BrokerConfigurationError:
        provider_class = None
    if provider_class is None or provider_class.oauth is None:
        messages.error(request, "This broker does not connect by signing in; fill in its form instead.")
        return redirect("brokers:add")
    environments = [e for e, _ in provider_class.environments]
    environment = request.GET.get("environment") or provider_class.default_environment()
    if environments and environment not in environments:
        messages.error(request, f"Environment must be one of: {', '.join(environments)}.")
        return redirect(f"{reverse('brokers:add')}?broker={provider_class.key}")
    return _start(request, provider_class, None, environment)


def reconnect(request, connection: BrokerConnection):
    """Sign in again for this connection: it keeps its accounts, cursor, trades and history."""
    return _start(request, get_provider_class(connection.broker_type), connection)


def finish(request, flow: dict):
    """Back from the broker's sign-in (the flow already checked): exchange the code and save."""
    provider_class = get_provider_class(flow["broker"])
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
    wait = throttle.token_budget_wait(request, provider_class.key)
    if wait is not None:
        messages.error(
            request, f"You signed in at {name} several times just now. Nothing was saved; try again in {wait} s."
        )
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
    same_login = selectors.connection_of_login(
        owner=request.user,
        broker_type=provider_class.key,
        environment=flow["environment"],
        account_ids=[a.external_id for a in accounts],
    )
    if same_login is not None:
        # A second connection would import every fill of these accounts twice.
        connection = services.connection_reconnect(same_login.pk, auth)
        messages.success(
            request,
            f"This {name} login is already connected as {connection.label} ({found}): it is signed in again, "
            "with its history kept, and no second connection was made.",
        )
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
