"""Suggestions for a credential field as the trader types (MetaTrader's servers): a datalist for htmx, else JSON."""

import structlog
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from brokers.decorators import trader_page
from brokers.forms import CREDENTIAL_PREFIX
from brokers.providers.errors import BrokerConfigurationError, BrokerError
from brokers.providers.registry import get_broker_provider

log = structlog.get_logger("brokers.suggest")


@trader_page
@require_GET
def suggest(request, broker_type: str, field: str):
    try:
        provider = get_broker_provider(broker_type)
    except BrokerConfigurationError:
        raise Http404("Unknown broker") from None
    spec = next((f for f in provider.credential_fields if f.name == field and f.suggest), None)
    if spec is None:
        raise Http404("No suggestions for this field")
    # Only the fields that are not secret go along: a suggestion never needs a password or a token.
    values = {
        f.name: request.GET.get(f"{CREDENTIAL_PREFIX}{f.name}", "") for f in provider.credential_fields if not f.secret
    }
    query = request.GET.get("q") or values.get(field, "")
    try:
        pairs = provider.suggestions(field, query, values)
    except BrokerError as exc:
        # A lookup that fails leaves the trader typing the value by hand, which works as well.
        log.info("suggestions_unavailable", broker=broker_type, field=field, error_kind=exc.kind)
        pairs = []
    if request.htmx:
        return render(request, "brokers/_suggestions.html", {"pairs": pairs})
    return JsonResponse({"suggestions": [{"value": value, "label": label} for value, label in pairs]})
