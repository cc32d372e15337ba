"""The registry of broker providers, keyed by broker_type, and the factory that builds one.

Each provider module declares the classes it offers in `PROVIDERS`; a family module (ccxt's
exchanges) also names its family in `FAMILY_KEY`. MODULES lists the modules we ship. What an
installation offers is explicit: settings.BROKER_PROVIDERS names provider keys, or a family
key for all of its members ("ccxt"). Adding a broker adds its module to MODULES and its key
to that setting's default (plus its tests, doc page and limits entry, which a test checks).
"""

from __future__ import annotations

import importlib
from functools import cache

from django.conf import settings

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerConfigurationError

# The provider modules we ship, relative to this package.
MODULES = (
    "demo",
    "tradovate",
    "tradovate_signin",
    "ibkr_flex",
    "alpaca",
    "alpaca_connect",
    "schwab",
    "snaptrade",
    "metaapi",
    "projectx",
    "ccxt.family",
)


@cache
def shipped_providers() -> dict[str, tuple[str, type[BrokerProvider]]]:
    """Every provider we ship, by key, with its family key ("" for a provider of its own)."""
    found: dict[str, tuple[str, type[BrokerProvider]]] = {}
    for name in MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        family = getattr(module, "FAMILY_KEY", "")
        for provider_class in module.PROVIDERS:
            existing = found.get(provider_class.key)
            if existing is not None and existing[1] is not provider_class:
                raise BrokerConfigurationError(
                    f"Two providers claim the key {provider_class.key!r}: {existing[1]} and {provider_class}."
                )
            found[provider_class.key] = (family, provider_class)
    return found


@cache
def _installed(wanted: tuple[str, ...]) -> dict[str, type[BrokerProvider]]:
    shipped = shipped_providers()
    known = set(shipped) | {family for family, _ in shipped.values() if family}
    for name in wanted:
        if name not in known:
            raise BrokerConfigurationError(
                f"BROKER_PROVIDERS names {name!r}, which is no provider key or family. Fix the BROKER_PROVIDERS "
                "setting (comma-separated keys such as demo,alpaca,ccxt)."
            )
    return dict(sorted((key, cls) for key, (family, cls) in shipped.items() if key in wanted or family in wanted))


def provider_classes() -> dict[str, type[BrokerProvider]]:
    """Every installed provider by key: those BROKER_PROVIDERS names, one by one or by family."""
    return dict(_installed(tuple(settings.BROKER_PROVIDERS)))


def get_provider_class(broker_type: str) -> type[BrokerProvider]:
    classes = _installed(tuple(settings.BROKER_PROVIDERS))
    try:
        return classes[broker_type]
    except KeyError:
        raise BrokerConfigurationError(
            f"Unknown broker type {broker_type!r}. The {len(classes)} known types are listed by "
            "/api/providers/ and manage.py list_providers."
        ) from None


def get_broker_provider(broker_type: str, environment: str = "", *, run_id: str = "") -> BrokerProvider:
    """Build the provider for a connection's broker_type (and environment, e.g. demo/live).

    run_id names the sync run the provider works for, so its steps can share what they
    fetch (BrokerProvider.run_cache); empty outside a run (e.g. "Test connection").
    """
    provider = get_provider_class(broker_type)(environment=environment)
    provider.run_id = run_id
    return provider


def provider_choices() -> list[tuple[str, str]]:
    return [(key, cls.display_name) for key, cls in provider_classes().items()]
