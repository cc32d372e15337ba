"""Sign-in limits (issue 25): every sign-in step is limited per trader and per address, and one trader's
code exchanges cannot use up the token budget every trader's renewals share."""

import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from brokers.models import SnapTradeUser
from sync import runs
from tests.brokers.connect.test_oauth import connect, said, set_auth, sim  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_limits():
    """The limiter and django-ratelimit count in Redis and the cache: start each test from zero."""
    from django.core.cache import cache

    from brokers.providers.ratelimit import get_limiter

    client = get_limiter().client
    for key in client.scan_iter("rl:*"):
        client.delete(key)
    cache.clear()
    yield


def test_fake_code_callbacks_of_one_trader_do_not_pause_anothers_renewal(trader_client, sim, other_trader, settings):  # noqa: F811
    settings.BROKER_RATE_LIMITS = {"schwab": {"auth": {"limit": 20}}}
    from brokers.providers import ratelimit

    ratelimit.get_limiter.cache_clear()
    victim = connect(trader_client, sim)
    attacker = Client()
    attacker.force_login(other_trader)
    for n in range(30):
        # Each a fresh trip, then a made-up code at the callback: each would be a token exchange.
        started = attacker.get("/brokers/oauth/schwab/connect/")
        if started.status_code != 302 or "state=" not in started.get("Location", ""):
            break
        state = started["Location"].split("state=")[1].split("&")[0]
        attacker.get(f"/brokers/oauth/callback/?state={state}&code=made-up-{n}")

    set_auth(victim, issued_at=timezone.now() - timedelta(minutes=25), expires_at=timezone.now() + timedelta(minutes=5))
    started = time.monotonic()
    log = runs.run_inline(victim.pk)
    assert log.status == "SUCCESS", log.error_message
    assert sim.refreshes == 1
    # Not held back until the attacker's exchanges leave the shared window (a minute).
    assert time.monotonic() - started < 10
    ratelimit.get_limiter.cache_clear()


def test_connect_and_callback_are_limited_per_trader_with_the_wait_said(trader_client, sim, settings):  # noqa: F811
    settings.SIGN_IN_RATE_LIMIT = "4/m"
    answers = [trader_client.get("/brokers/oauth/schwab/connect/") for _ in range(5)]
    assert [a["Location"].startswith(sim.authorize_url) for a in answers] == [True] * 4 + [False]
    limited = trader_client.get("/brokers/oauth/callback/?state=x&code=y", follow=True)
    assert "Try again in" in said(limited)


def test_sign_in_steps_are_limited_per_address_whoever_signs_in(sim, django_user_model, settings):  # noqa: F811
    settings.SIGN_IN_ADDRESS_RATE_LIMIT = "6/m"
    starts = []
    for n in range(4):
        trader = Client(REMOTE_ADDR="203.0.113.7")
        trader.force_login(django_user_model.objects.create_user(f"t{n}", password="pw-t-123456"))
        starts += [trader.get("/brokers/oauth/schwab/connect/"), trader.get("/brokers/oauth/schwab/connect/")]
    assert sum(s["Location"].startswith(sim.authorize_url) for s in starts) == 6


def test_the_personal_key_form_is_limited_per_trader(trader_client, settings):  # noqa: F811
    settings.SIGN_IN_RATE_LIMIT = "3/m"
    answers = [
        trader_client.post("/brokers/snaptrade/key/", {"client_id": "MINE", "consumer_key": ""}, follow=True)
        for _ in range(4)
    ]
    assert ["Try again in" in said(a) for a in answers] == [False, False, False, True]
    assert not SnapTradeUser.objects.exists()
