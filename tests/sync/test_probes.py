"""/readyz and /metrics hardened (issue 25): the readiness checks are cached and run at most once at a
time, anonymous callers learn only up or down, and /metrics' network rule reads the client's address
as our proxies saw it."""

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client

from config.celery_app import app as celery_app
from sync import health

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "operator-metrics-token"


@pytest.fixture
def pings(monkeypatch):
    """How many Celery pings /readyz sent (each waits its whole timeout: no worker runs here)."""
    sent = []
    ping = celery_app.control.ping

    def counted(*args, **kwargs):
        sent.append(time.monotonic())
        return ping(*args, **kwargs)

    monkeypatch.setattr(celery_app.control, "ping", counted)
    # Nothing an earlier test's probe left in this process's cache: each test counts its own.
    monkeypatch.setattr(health, "_results", (-math.inf, []))
    return sent


def readyz(headers: dict | None = None, params: dict | None = None, client: Client | None = None):
    # /readyz is an async view: each call in a thread of its own, as under the web server.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit((client or Client()).get, "/readyz", params or {}, headers=headers or {}).result()


def test_a_crowd_of_anonymous_probes_costs_one_ping_not_one_each(pings, settings):
    settings.READINESS_CACHE_S = 30
    started = time.monotonic()
    with ThreadPoolExecutor(6) as crowd:
        answers = list(crowd.map(lambda _: readyz(), range(6)))
    for _ in range(10):
        answers.append(readyz())
    assert {a.status_code for a in answers} == {500}  # no worker answers the ping
    assert len(pings) == 1, f"{len(pings)} pings for {len(answers)} probes"
    assert time.monotonic() - started < 6


def test_anonymous_callers_learn_up_or_down_and_operators_the_details(pings, django_user_model, settings):
    settings.METRICS_TOKEN = TOKEN
    for answer in (readyz(), readyz(params={"format": "json"})):
        body = answer.content.decode()
        assert answer.status_code == 500 and "down" in body
        for detail in ("Redis", "Database", "Ping", "Beat", settings.REDIS_URL.split("//")[1].split("/")[0]):
            assert detail not in body

    detailed = readyz(headers={"Authorization": f"Bearer {TOKEN}"}, params={"format": "json"})
    assert detailed.status_code == 500 and any(name.startswith("Redis") for name in detailed.json())
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("ops", password="ops-password-1", is_staff=True))
    assert "Beat has not dispatched anything yet" in readyz(params={"format": "json"}, client=staff).content.decode()


def test_metrics_behind_the_proxy_judge_the_client_not_the_proxy(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.METRICS_TOKEN = TOKEN
    # The proxy runs on this machine (127.0.0.1, in the default allowed networks); the client is outside.
    through_proxy = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert through_proxy.get("/metrics").status_code == 403
    assert through_proxy.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    scraper_on_this_machine = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert scraper_on_this_machine.get("/metrics").status_code == 200
