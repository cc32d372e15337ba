"""The URLs every way of connecting shares: the add page, Reconnect and the callback from a broker's pages.

`way_for` is the one place that decides how a broker connects; the ways are modules with the
same entry points (see brokers/connect/__init__.py).
"""

from types import ModuleType

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_GET

from brokers.connect import credentials, oauth, portal
from brokers.connect.credentials import provider_class_or_404
from brokers.connect.state import take_flow
from brokers.decorators import trader_page
from brokers.models import BrokerConnection
from brokers.providers.registry import get_provider_class
from brokers.throttle import sign_in_step


def way_for(provider_class) -> ModuleType:
    """The way this broker connects: its aggregator's portal, its own sign-in page, or a typed form."""
    if provider_class.portal:
        return portal
    if provider_class.oauth is not None:
        return oauth
    return credentials


# The credentials typed on the typed form never reach an error report (see credentials.add_page).
@sensitive_post_parameters()
@sensitive_variables()
@trader_page
def add(request):
    broker_type = request.POST.get("broker_type") or request.GET.get("broker") or "demo"
    provider_class = provider_class_or_404(broker_type)
    # A broker that signs in on its own pages has nothing to type: a posted form saves nothing.
    return way_for(provider_class).add_page(request, provider_class)


@trader_page
@sign_in_step
@require_GET
def reconnect(request, pk):
    """Re-authorise this connection the way it was made; it keeps its accounts, cursor, trades and history."""
    connection = get_object_or_404(BrokerConnection, pk=pk, owner=request.user)
    return way_for(provider_class_or_404(connection.broker_type)).reconnect(request, connection)


@trader_page
@sign_in_step
@require_GET
def callback(request):
    """Back from a broker's sign-in page or an aggregator's portal."""
    flow, problem = take_flow(request)
    if problem:
        messages.error(request, problem)
        return redirect("brokers:list")
    return way_for(get_provider_class(flow["broker"])).finish(request, flow)
