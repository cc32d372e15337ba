"""API tokens (issue 25): shown once when made, kept only as a hash, expiring and revocable; the tokens
made before (DRF's plaintext authtoken table) are hashed by the migration."""

import importlib
import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection as db
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from brokers.models import ApiToken

pytestmark = pytest.mark.django_db

ADD_TOKEN = "/admin/brokers/apitoken/add/"


@pytest.fixture
def operator(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("operator", password="operator-password-1"))
    return client


def made_in_the_admin(operator, trader) -> str:
    answer = operator.post(ADD_TOKEN, {"owner": trader.pk, "name": "my script", "lifetime_days": 30}, follow=True)
    assert answer.status_code == 200
    shown = re.search(r"Copy it now[^:]*: ([A-Za-z0-9_\-]{40,})", answer.content.decode())
    assert shown, "the new token is shown once"
    return shown.group(1)


def api(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_a_token_is_shown_once_kept_as_a_hash_and_works(operator, trader):
    token = made_in_the_admin(operator, trader)

    assert api(token).get("/api/connections/").status_code == 200
    with db.cursor() as cursor:
        cursor.execute("SELECT * FROM brokers_apitoken")
        assert token not in repr(cursor.fetchall()), "no plaintext at rest"
    listing = operator.get("/admin/brokers/apitoken/").content.decode()
    change = operator.get(f"/admin/brokers/apitoken/{_only_token_id()}/change/").content.decode()
    assert token not in listing and token not in change and token[:8] in listing


def _only_token_id() -> int:
    return ApiToken.objects.get().pk


def test_an_expired_or_revoked_token_is_refused(operator, trader):
    expiring, revoked = made_in_the_admin(operator, trader), made_in_the_admin(operator, trader)
    first, second = ApiToken.objects.order_by("pk")
    ApiToken.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    operator.post(f"/admin/brokers/apitoken/{second.pk}/delete/", {"post": "yes"})

    for token in (expiring, revoked):
        refused = api(token).get("/api/connections/")
        assert refused.status_code == 401 and "expired or revoked" in refused.json()["detail"]


def test_the_migration_hashes_the_tokens_made_before_and_drops_the_plaintext(trader):
    with db.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, user_id integer)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", ["0" * 40, timezone.now(), trader.pk])
    migration = importlib.import_module("brokers.migrations.0010_api_token")
    migration.hash_plaintext_tokens(apps, db.schema_editor())

    assert "authtoken_token" not in db.introspection.table_names()
    assert ApiToken.objects.get().owner == trader
    assert api("0" * 40).get("/api/connections/").status_code == 200
