"""/healthz and /readyz, and beat's heartbeat, with a real worker and beat where they matter."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from brokers import services
from config.celery_app import app as celery_app
from telemetry import heartbeat
from tests.e2e.realprocess import celery_processes, kill9, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def readiness(client) -> tuple[int, dict[str, str]]:
    # /readyz is an async view; the browser tests leave Playwright's event loop in this thread.
    # Its details are for operators (the METRICS_TOKEN bearer).
    with ThreadPoolExecutor(1) as thread, override_settings(METRICS_TOKEN="probe"):
        response = thread.submit(
            client.get, "/readyz", {"format": "json"}, headers={"Authorization": "Bearer probe"}
        ).result()
    checks = {name.split("(")[0]: value for name, value in response.json().items()}
    return response.status_code, checks


@override_settings(ALLOWED_HOSTS=["journal.example.com"], SECURE_SSL_REDIRECT=True)
def test_healthz_answers_a_local_probe_even_behind_host_checks_and_https(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"
    # Every other page still goes through the host check.
    assert client.get("/login/").status_code == 400


def test_readyz_names_what_is_missing_without_worker_and_beat(client):
    status, checks = readiness(client)
    assert status == 500
    assert checks["Database"] == "OK" and checks["Redis"] == "OK"
    assert checks["Ping"] != "OK"
    assert checks["BeatDispatching"] == "Unavailable: Beat has not dispatched anything yet"


@override_settings(BEAT_MAX_SILENCE_S=60)
def test_beat_check_follows_the_heartbeat():
    with pytest.raises(CommandError, match="Beat has not dispatched anything yet"):
        call_command("check_beat")
    heartbeat.record_dispatch(time.time() - 10)
    call_command("check_beat")
    heartbeat.record_dispatch(time.time() - 61)
    with pytest.raises(CommandError, match=r"Beat's last dispatch was 6\d s ago"):
        call_command("check_beat")


@pytest.fixture
def real_queue(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


@pytest.mark.realprocess
@override_settings(SYNC_INTERVAL_UNIT="seconds")
def test_readyz_is_green_with_a_worker_and_a_dispatching_beat_and_red_when_beat_stops(
    client, trader, tmp_path, real_queue, settings
):
    with celery_processes(tmp_path) as processes:
        # A 5 "second" schedule, so beat dispatches within seconds, as it does every minute for real.
        services.connection_create(
            owner=trader, broker_type="demo", label="Demo", credentials={"api_key": "k"}, sync_interval_min=5
        )
        wait_for(lambda: readiness(client)[0] == 200, 60, message="/readyz green")
        started = heartbeat.last_dispatch_at()
        wait_for(lambda: heartbeat.last_dispatch_at() > started, 30, message="a dispatch refreshing the heartbeat")
        kill9(processes["beat"])
        settings.BEAT_MAX_SILENCE_S = 2
        time.sleep(3)
        status, checks = readiness(client)
        assert status == 500 and checks["Ping"] == "OK"
        assert checks["BeatDispatching"].startswith("Unavailable: Beat's last dispatch was")
