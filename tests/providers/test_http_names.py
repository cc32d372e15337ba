"""The HTTP layer names the provider it speaks for, and books the limits table it shares with another."""

import pytest
import redis
import responses
from django.conf import settings

from brokers.providers.registry import get_broker_provider
from telemetry import counters

pytestmark = pytest.mark.django_db


def test_a_second_way_to_connect_is_counted_as_itself_and_books_its_broker_s_limits():
    provider = get_broker_provider("tradovate_signin", "demo")
    assert provider.http.provider_key == "tradovate_signin"
    assert provider.http.limits_key == "tradovate"
    with responses.RequestsMock() as rsps:
        rsps.get(f"{provider.http.base_url}/account/list", status=503)
        rsps.get(f"{provider.http.base_url}/account/list", json=[])
        provider.http.request("GET", "/account/list")
    retried = redis.Redis.from_url(settings.REDIS_URL).hgetall(counters.REQUEST_RETRIES)
    assert retried == {b"tradovate_signin": b"1"}
