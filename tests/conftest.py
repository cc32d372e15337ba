"""Shared fixtures: a real Redis server for the session, a clean Redis per test, traders."""

import os
import tempfile
from pathlib import Path

import pytest
import redis
from django.conf import settings

from config import localredis


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
