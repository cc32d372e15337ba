"""Connect brokerages through an aggregator's connection portal (SnapTrade), and reconnect a broken link.

The trip to the portal is a flow like an OAuth sign-in (brokers.connect.state): the state is
single use, short-lived and bound to the trader's session and to the connection it mends.
The trader's SnapTrade registration is a service (services.snaptrade_user_for).
The portal handles the brokerage's own login and MFA; on the way back we ask SnapTrade which
brokerage authorisations the trader now has, and each new one becomes a journal connection.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET, require_POST

from brokers import services, throttle
from brokers.connect.state import remember_flow
from brokers.crypto import CredentialsUnreadable
from brokers.decorators import trader_page
from brokers.models import BrokerConnection, SnapTradeUser
from brokers.providers.errors import BrokerError, BrokerSetupError
from brokers.providers.registry import get_broker_provider, provider_choices
from brokers.providers.snaptrade import SnapTradeKey, brokerage_name, session
from brokers.providers.text import credential_problem

KEY = "snaptrade"
PERSONAL_KEY_FIELDS = (("client_id", "Client ID"), ("consumer_key", "Consumer key"))


def _provider():
    return get_broker_provider(KEY)


def add_page(request, provider_class):
    """The add page for SnapTrade: the operator's or the trader's key, then the brokerages."""
    context = {"provider": provider_class, "choices": provider_choices(), "brokerages": [], "problem": ""}
    user = SnapTradeUser.objects.filter(owner=request.user).first()
    context["personal"] = user is not None and user.personal_key
    try:
        key = services.snaptrade_key_for(request.user)
    except CredentialsUnreadable as exc:
        # The Personal key was saved under an encryption key this installation no longer has.
        key, context["problem"] = None, exc.message
    context["has_key"] = key is not None
    if key is not None:
        try:
            context["brokerages"] = _provider().brokerages(key)
        except BrokerError as exc:
            context["problem"] = f"{exc.message} You can still choose the brokerage inside SnapTrade."
    context["fields"] = PERSONAL_KEY_FIELDS
    return render(request, "brokers/snaptrade_connect.html", context)


def _back_to_add():
    return redirect(f"{reverse('brokers:add')}?broker={KEY}")


@sensitive_post_parameters()
@sensitive_variables()
@trader_page
@throttle.sign_in_step
@require_POST
def save_key(request):
    """Register the trader with their own SnapTrade Personal key (checked by the registration itself)."""
    if SnapTradeUser.objects.filter(owner=request.user).exists():
        messages.error(request, "You are already registered with SnapTrade; your key cannot be changed here.")
        return _back_to_add()
    values, problems = {}, []
    for name, label in PERSONAL_KEY_FIELDS:
        value = request.POST.get(name, "").strip()
        problem = credential_problem(label, value)
        if problem:
            problems.append(problem)
        values[name] = value
    if problems:
        for problem in problems:
            messages.error(request, problem)
        return _back_to_add()
    key = SnapTradeKey(values["client_id"], values["consumer_key"], personal=True)
    try:
        services.snaptrade_user_register(request.user, key)
    except BrokerSetupError:
        messages.error(
            request, "SnapTrade refused this Client ID and consumer key. Check them in your SnapTrade dashboard."
        )
        return _back_to_add()
    except BrokerError as exc:
        messages.error(request, f"{exc.message} Nothing was saved.")
        return _back_to_add()
    messages.success(request, "Your SnapTrade key works. Now choose a brokerage to connect.")
    return _back_to_add()


@trader_page
@throttle.sign_in_step
@require_GET
def connect(request):
    return _start(request, brokerage=request.GET.get("brokerage", ""))


def reconnect(request, connection: BrokerConnection):
    """Mend a broken link in the portal: the same connection, its accounts and history kept."""
    return _start(request, connection=connection)


@sensitive_variables()
def _start(request, *, connection: BrokerConnection | None = None, brokerage: str = ""):
    """Send the trader to SnapTrade's portal: a new link, or the reconnect of `connection`'s."""
    wait = throttle.token_budget_wait(request, KEY)
    if wait is not None:
        # Each trip registers or logs in under the API key every trader's syncs share.
        messages.error(request, f"You opened SnapTrade's portal several times just now. Try again in {wait} s.")
        return redirect("brokers:list")
    try:
        if brokerage and brokerage not in dict(_provider().brokerages(services.snaptrade_key_for(request.user))):
            # Checked before registering: a bad link must not make a (billed) SnapTrade user.
            messages.error(request, "That brokerage is not one SnapTrade offers; choose one from the list.")
            return _back_to_add()
        user = services.snaptrade_user_for(request.user)
        if user is None:
            messages.error(request, "Enter your SnapTrade Personal key first: this installation has no SnapTrade key.")
            return _back_to_add()
        reconnect = connection.credentials.get("authorization_id", "") if connection is not None else ""
        state = remember_flow(request, KEY, connection)
        back = request.build_absolute_uri(reverse("brokers:oauth_callback")) + f"?state={state}"
        url = _provider().portal_url(
            services.snaptrade_key_of(user),
            user.user_id,
            user.secrets["user_secret"],
            redirect=back,
            brokerage=brokerage,
            reconnect=reconnect,
        )
    except BrokerError as exc:
        messages.error(request, f"{exc.message} Nothing was changed; please try again.")
        return redirect("brokers:list")
    return redirect(url)


@sensitive_variables()
def finish(request, flow: dict):
    """Back from the portal (the flow already checked): save what the trader linked."""
    provider = _provider()
    try:
        user = services.snaptrade_user_for(request.user)
        if user is None:
            messages.error(request, "This installation has no SnapTrade key any more, so nothing was saved.")
            return redirect("brokers:list")
        key = services.snaptrade_key_of(user)
        secret = user.secrets["user_secret"]
        authorizations = provider.authorizations(key, user.user_id, secret)
        if flow["connection"] is not None:
            return _reconnected(request, flow["connection"], key, user, authorizations)
        linked = {
            c.credentials.get("authorization_id")
            for c in BrokerConnection.objects.filter(owner=request.user, broker_type=KEY)
        }
        new = [a for a in authorizations if str(a.get("id")) not in linked and not a.get("disabled")]
        if not new:
            messages.info(request, "SnapTrade linked no new brokerage, so nothing was added.")
            return redirect("brokers:list")
        for authorization in new:
            auth = session(key, user.user_id, secret, authorization)
            accounts = provider.get_accounts(auth)
            name = brokerage_name(authorization)
            connection = services.connection_create(
                owner=request.user,
                broker_type=KEY,
                label=f"{name} (SnapTrade)"[:100],
                credentials={"authorization_id": str(authorization["id"]), "brokerage": name},
                auth=auth,
            )
            found = ", ".join(a.name for a in accounts) or "no accounts yet"
            messages.success(request, f"{connection.label} is connected ({found}); the first sync has started.")
    except BrokerError as exc:
        messages.error(request, f"{exc.message} Nothing more was saved; please try again.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("brokers:list")


def _reconnected(request, connection_id: int, key, user: SnapTradeUser, authorizations: list[dict]):
    connection = BrokerConnection.objects.get(pk=connection_id, owner=request.user)
    wanted = connection.credentials.get("authorization_id")
    authorization = next((a for a in authorizations if str(a.get("id")) == wanted), None)
    if authorization is None or authorization.get("disabled"):
        messages.error(
            request,
            f"SnapTrade still reports the link of {connection.label} as broken, so sync stays on hold. "
            "Try Reconnect again and finish the brokerage's sign-in.",
        )
        return redirect("brokers:list")
    auth = session(key, user.user_id, user.secrets["user_secret"], authorization)
    connection = services.connection_reconnect(connection.pk, auth)
    messages.success(request, f"Reconnected {connection.label}; sync resumed with its history kept.")
    return redirect("brokers:list")
