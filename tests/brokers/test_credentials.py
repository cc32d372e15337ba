"""Credentials are encrypted at rest, readable after key rotation, and a wrong key fails loudly."""

import pytest
from cryptography.fernet import Fernet
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from brokers import crypto
from brokers.governance import announce_new_providers
from brokers.models import BrokerConnection, KnownProvider

pytestmark = pytest.mark.django_db

SECRET = "very-recognisable-S3CRET"


@pytest.fixture(autouse=True)
def fresh_fernet():
    crypto._fernet.cache_clear()
    yield
    crypto._fernet.cache_clear()


@pytest.fixture
def connection(make_connection):
    return make_connection(first_sync=False, label="D", credentials={"api_key": SECRET})


def rotate_to_a_new_key(settings) -> None:
    """A new key first, the rotation command, then the old key gone: only the new key can read."""
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    crypto._fernet.cache_clear()
    call_command("rotate_credentials_key")
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    crypto._fernet.cache_clear()


def test_the_database_holds_no_plaintext(connection):
    raw = BrokerConnection.objects.filter(pk=connection.pk).values_list("credentials_ciphertext", flat=True).get()
    assert SECRET not in raw
    assert BrokerConnection.objects.get(pk=connection.pk).credentials["api_key"] == SECRET


def test_rotation_re_encrypts_with_the_newest_key(connection, settings):
    rotate_to_a_new_key(settings)
    assert BrokerConnection.objects.get(pk=connection.pk).credentials["api_key"] == SECRET


def test_rotation_re_encrypts_snaptrade_registrations_too(trader, settings):
    from brokers.models import SnapTradeUser

    user = SnapTradeUser(owner=trader, client_id="C", user_id="journal-1")
    user.secrets = {"user_secret": SECRET}
    user.save()
    rotate_to_a_new_key(settings)
    assert SnapTradeUser.objects.get(pk=user.pk).secrets["user_secret"] == SECRET


def test_a_wrong_key_fails_loudly_and_never_hands_out_ciphertext(connection, settings):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    crypto._fernet.cache_clear()
    with pytest.raises(crypto.CredentialsUnreadable) as info:
        _ = BrokerConnection.objects.get(pk=connection.pk).credentials
    assert "FIELD_ENCRYPTION_KEYS" in str(info.value)


def test_a_malformed_key_fails_at_start_up(settings):
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    crypto._fernet.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS"):
        crypto.check_keys()


@override_settings(MANAGERS=[("PM", "pm@example.com")])
def test_managers_hear_of_each_new_provider_once():
    KnownProvider.objects.filter(key="demo").delete()
    assert announce_new_providers() == ["Demo broker (simulated) (demo)"]
    assert len(mail.outbox) == 1 and "Demo broker" in mail.outbox[0].subject
    assert announce_new_providers() == []
    assert len(mail.outbox) == 1


@override_settings(MANAGERS=[("PM", "pm@example.com")])
def test_a_family_arriving_is_one_mail_listing_every_member_and_a_dropped_one_is_named(settings):
    KnownProvider.objects.filter(key__startswith="ccxt_").delete()
    KnownProvider.objects.create(key="ccxt_gone_exchange")
    new = announce_new_providers()
    assert len(new) == 93 and "Kraken (ccxt_kraken)" in new
    (notice,) = mail.outbox
    assert notice.subject.endswith("93 new brokers available; 1 broker no longer offered")
    assert "- Kraken (ccxt_kraken)" in notice.body and "- ccxt_gone_exchange" in notice.body
    assert not KnownProvider.objects.filter(key="ccxt_gone_exchange").exists()
    assert announce_new_providers() == [] and len(mail.outbox) == 1


def test_an_empty_broker_user_agent_stops_start_up_naming_the_setting():
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "BROKER_HTTP_USER_AGENT": " "}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "BROKER_HTTP_USER_AGENT may not be empty" in result.stderr
