"""The explicit registry, and the adding-a-provider checklist held for every registered provider."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from brokers.providers.ccxt import catalog as ccxt_catalog
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.ratelimit import load_limits
from brokers.providers.registry import get_provider_class, provider_classes
from tests.providers.contract import ProviderContract

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "brokers"


def _contract_keys() -> set[str]:
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        importlib.import_module(f"tests.providers.{path.stem}")
    found, todo = set(), list(ProviderContract.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if getattr(cls, "provider_key", None):
            found.add(cls.provider_key)
    return found


CONTRACTS = _contract_keys()
PROVIDERS = provider_classes()


def _family_size(module: str) -> int:
    return sum(cls.__module__ == module for cls in PROVIDERS.values())


@pytest.mark.parametrize("key", sorted(PROVIDERS))
def test_every_registered_provider_has_its_contract_test_doc_and_limits(key):
    cls = PROVIDERS[key]
    family_tested = _family_size(cls.__module__) > 1 and any(
        PROVIDERS[k].__module__ == cls.__module__ for k in CONTRACTS if k in PROVIDERS
    )
    assert key in CONTRACTS or family_tested, f"{key}: no ProviderContract subclass covers it or its family"
    page = DOCS / f"{key}.md"
    assert page.exists() or any(f"`{key}`" in p.read_text() for p in DOCS.glob("*.md")), f"{key}: no doc page or row"
    assert (cls.limits_key or key) in load_limits(), f"{key}: no entry in rate_limits.toml"
    # A trader types secrets into the form, or (OAuth, a portal) signs in at the broker and types nothing.
    typed = cls.credential_fields and any(f.secret for f in cls.credential_fields)
    assert cls.display_name and (typed or cls.signs_in_at_broker())


def test_a_family_s_members_are_tested_through_at_least_three_exchanges():
    ccxt_tested = {k for k in CONTRACTS if k.startswith("ccxt_")}
    assert len(ccxt_tested) >= 3


def test_display_names_are_unique_so_a_trader_can_tell_brokers_apart():
    names = [cls.display_name for cls in PROVIDERS.values()]
    assert len(names) == len(set(names))


def test_the_ccxt_catalog_limits_and_doc_rows_match_the_installed_ccxt():
    # After a ccxt upgrade: manage.py ccxt_catalog --write.
    assert ccxt_catalog.CATALOG_FILE.read_text() == ccxt_catalog.rendered_catalog()
    assert ccxt_catalog.LIMITS_FILE.read_text() == ccxt_catalog.rendered_limits()
    assert ccxt_catalog.DOC_FILE.read_text() == ccxt_catalog.rendered_doc()


def test_only_the_providers_in_the_setting_are_installed(settings):
    settings.BROKER_PROVIDERS = ["alpaca", "demo"]
    assert set(provider_classes()) == {"alpaca", "demo"}
    with pytest.raises(BrokerConfigurationError, match="ccxt_kraken"):
        get_provider_class("ccxt_kraken")


def test_a_family_key_installs_every_member(settings):
    settings.BROKER_PROVIDERS = ["demo", "ccxt"]
    installed = provider_classes()
    assert "demo" in installed and "ccxt_kraken" in installed and len(installed) > 50
    assert "alpaca" not in installed


def test_a_key_that_does_not_exist_names_the_setting(settings):
    settings.BROKER_PROVIDERS = ["nosuchbroker"]
    with pytest.raises(BrokerConfigurationError, match="BROKER_PROVIDERS names 'nosuchbroker'"):
        provider_classes()
