"""The registry of broker providers, keyed by broker_type, and the factory that builds one.

Each provider module in this package ends with an explicit `register(TheProvider)`; the
registry imports every module here except the shared infrastructure, so adding a broker
touches no file but its own module (plus its tests, doc page and limits entry).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerConfigurationError

_INFRASTRUCTURE = {"base", "errors", "http", "oauth", "ratelimit", "registry", "types"}
_providers: dict[str, type[BrokerProvider]] = {}


def register(provider_class: type[BrokerProvider]) -> type[BrokerProvider]:
    key = provider_class.key
    existing = _providers.get(key)
    if existing is not None and existing is not provider_class:
        raise BrokerConfigurationError(f"Two providers claim the key {key!r}: {existing} and {provider_class}.")
    _providers[key] = provider_class
    return provider_class


@cache
def _load_provider_modules() -> None:
    package = importlib.import_module("brokers.providers")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"brokers.providers.{module.name}")


def provider_classes() -> dict[str, type[BrokerProvider]]:
    _load_provider_modules()
    return dict(sorted(_providers.items()))


def get_provider_class(broker_type: str) -> type[BrokerProvider]:
    classes = provider_classes()
    try:
        return classes[broker_type]
    except KeyError:
        raise BrokerConfigurationError(
            f"Unknown broker type {broker_type!r}. Known types: {', '.join(classes)}."
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
