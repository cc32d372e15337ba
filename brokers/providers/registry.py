"""The registry of broker providers, keyed by broker_type, and the factory that builds one.

What is installed is explicit: settings.BROKER_PROVIDERS names the provider modules (a
module may hold one provider or a whole family, such as ccxt_family), and each module
calls `register()` for every provider it offers. Adding a broker adds its module to that
setting's default (plus its tests, doc page and limits entry, which a test checks).
"""

from __future__ import annotations

import importlib
from functools import cache

from django.conf import settings

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerConfigurationError

_providers: dict[str, type[BrokerProvider]] = {}


def register(provider_class: type[BrokerProvider]) -> type[BrokerProvider]:
    key = provider_class.key
    existing = _providers.get(key)
    if existing is not None and existing is not provider_class:
        raise BrokerConfigurationError(f"Two providers claim the key {key!r}: {existing} and {provider_class}.")
    _providers[key] = provider_class
    return provider_class


@cache
def _load_provider_modules(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise BrokerConfigurationError(
                f"BROKER_PROVIDERS names {name!r}, which is not a module. Fix the BROKER_PROVIDERS setting."
            ) from None


def provider_classes() -> dict[str, type[BrokerProvider]]:
    """Every installed provider by key. Modules outside BROKER_PROVIDERS are left out even if imported."""
    modules = tuple(settings.BROKER_PROVIDERS)
    _load_provider_modules(modules)
    return dict(sorted((key, cls) for key, cls in _providers.items() if cls.__module__ in modules))


def get_provider_class(broker_type: str) -> type[BrokerProvider]:
    classes = provider_classes()
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
