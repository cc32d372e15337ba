"""Shared fixtures: a real Redis server for the session, a clean Redis per test, traders, their
signed-in client, demo connections, and the broker HTTP stubbed with responses."""

import os
import tempfile
from pathlib import Path

import pytest
import redis
import responses
from django.conf import settings
from django.test import Client

from config import localredis
from tests import factories


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    port = int(os.environ["TEST_REDIS_PORT"])
    process = localredis.start(port, Path(tempfile.mkdtemp(prefix="tj-test-redis-")))
    yield f"redis://127.0.0.1:{port}/0"
    localredis.stop(process)


@pytest.fixture(autouse=True)
def clean_redis(redis_server):
    redis.Redis.from_url(settings.REDIS_URL).flushall()
    yield


@pytest.fixture
def trader(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="alice-password-1")


@pytest.fixture
def other_trader(django_user_model):
    return django_user_model.objects.create_user(username="bob", password="bob-password-1")


@pytest.fixture
def make_connection(trader, django_capture_on_commit_callbacks):
    """Make a connection (the trader's demo one unless told); first_sync=False drops the sync
    queued on commit, so the test decides when to sync."""

    def make(*, first_sync: bool = True, owner=None, **fields):
        if first_sync:
            return factories.connection(owner or trader, **fields)
        with django_capture_on_commit_callbacks(execute=False):
            return factories.connection(owner or trader, **fields)

    return make


@pytest.fixture
def trader_client(trader):
    """A test client signed in as the trader, past the login form (and django-axes)."""
    client = Client()
    client.force_login(trader)
    return client


@pytest.fixture
def rsps(request):
    """The broker HTTP answered by responses' stubs; nothing reaches the network.

    A stub a test never reaches fails it only where the test's class, or else its module,
    sets RSPS_ALL_FIRED = True.
    """
    all_fired = getattr(request.cls, "RSPS_ALL_FIRED", getattr(request.module, "RSPS_ALL_FIRED", False))
    with responses.RequestsMock(assert_all_requests_are_fired=all_fired) as mock:
        yield mock
