"""Clear errors instead of 500s (issue 25): pages after an encryption-key loss, the admin's "add
connection" for brokers that sign in at the broker, and credentials holding invisible or non-ASCII
characters."""

import json
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.test import Client
from django.utils import timezone

from brokers import crypto
from brokers.models import BrokerConnection, SnapTradeUser
from brokers.providers.types import AuthResult

pytestmark = pytest.mark.django_db

ZERO_WIDTH_SPACE = "\u200b"


@pytest.fixture
def errors_client(trader):
    """Signed in, and a 500 comes back as an answer to assert on rather than as an exception."""
    client = Client(raise_request_exception=False)
    client.force_login(trader)
    return client


@pytest.fixture
def lose_the_key(settings):
    def lose():
        settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
        crypto._fernet.cache_clear()

    yield lose
    crypto._fernet.cache_clear()


def test_after_the_encryption_key_is_lost_the_pages_say_what_to_do_instead_of_a_500(
    errors_client, trader, lose_the_key
):
    # Signed in at Schwab: the page reads when its link ends from the (now unreadable) session.
    connection = BrokerConnection(owner=trader, broker_type="schwab", label="Schwab")
    connection.credentials = {}
    connection.auth = AuthResult(token="t", refresh_token="r", refresh_expires_at=timezone.now() + timedelta(days=3))
    connection.save()
    SnapTradeUser.objects.create(owner=trader, client_id="MINE", user_id="journal-1", personal_key=True)
    user = SnapTradeUser.objects.get(owner=trader)
    user.secrets = {"user_secret": "s", "consumer_key": "c"}
    user.save()
    lose_the_key()

    for url in ("/brokers/", f"/brokers/{connection.pk}/status/", "/brokers/add/?broker=snaptrade"):
        response = errors_client.get(url)
        assert response.status_code == 200, url
    page = errors_client.get("/brokers/add/?broker=snaptrade").content.decode()
    assert "cannot be read with this installation" in page


@pytest.fixture
def operator(django_user_model):
    client = Client(raise_request_exception=False)
    client.force_login(django_user_model.objects.create_superuser("operator", password="operator-password-1"))
    return client


@pytest.mark.parametrize("broker_type", ["schwab", "snaptrade"])
def test_the_admin_refuses_to_add_a_connection_made_on_the_brokers_pages_with_a_clear_error(
    operator, trader, broker_type
):
    response = operator.post(
        "/admin/brokers/brokerconnection/add/",
        {
            "owner": trader.pk,
            "broker_type": broker_type,
            "label": "x",
            "sync_interval_min": 15,
            "new_credentials": json.dumps({}),
        },
    )
    assert response.status_code == 200
    assert "sign" in response.content.decode().lower() and not BrokerConnection.objects.exists()


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("AK\u2019123", "plain ASCII"),  # a curly quote from a word processor
        (f"AK123{ZERO_WIDTH_SPACE}", "invisible"),
    ],
)
def test_a_key_with_a_curly_quote_or_an_invisible_character_is_refused_before_any_login(errors_client, typed, said):
    data = {"broker_type": "alpaca", "environment": "paper", "cred_key_id": typed, "cred_secret_key": "s"}
    tested = errors_client.post("/brokers/add/", data | {"action": "test"}, HTTP_HX_REQUEST="true")
    assert tested.status_code == 200 and said in tested.content.decode()
    assert typed not in tested.content.decode()
    saved = errors_client.post("/brokers/add/", data | {"label": "Alpaca", "sync_interval_min": 15})
    assert saved.status_code == 200 and said in saved.content.decode() and not BrokerConnection.objects.exists()


def test_a_password_may_hold_accents_but_no_invisible_character():
    from brokers.providers.registry import get_provider_class

    tradovate = get_provider_class("tradovate")
    typed = {"username": "anaïs", "password": "pässwörd", "app_id": "J", "app_version": "1.0", "cid": "1", "sec": "s"}
    assert tradovate.validate_credentials(typed, "demo") == {}
    problems = tradovate.validate_credentials(typed | {"password": f"pass{ZERO_WIDTH_SPACE}"}, "demo")
    assert "invisible" in problems["password"]
    problems = tradovate.validate_credentials(typed | {"sec": "s\u2019"}, "demo")
    assert "plain ASCII" in problems["sec"]


def test_a_personal_snaptrade_key_with_a_curly_quote_is_refused(errors_client):
    answer = errors_client.post(
        "/brokers/snaptrade/key/", {"client_id": "MINE", "consumer_key": "k\u2019"}, follow=True
    )
    assert answer.status_code == 200 and "plain ASCII" in answer.content.decode()
    assert not SnapTradeUser.objects.exists()
