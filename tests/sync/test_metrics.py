"""/metrics: who may scrape it, and that it counts what syncs, the limiter, beat and the queues did."""

import ipaddress
import re
import time

import pytest
import redis
from django.conf import settings

from brokers import services
from brokers.models import SyncLog
from brokers.providers.ratelimit import RateLimiter
from brokers.providers.types import RateLimit
from config.celery_app import app as celery_app
from telemetry import counters, heartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client, **headers) -> str:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    return response.content.decode()


def sample(text: str, name: str, **labels) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_only_the_token_or_an_allowed_network_may_scrape(client, settings):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1, allowed by default
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("192.0.2.0/24")]
    settings.METRICS_TOKEN = "scrape-token-1"
    refused = client.get("/metrics")
    assert refused.status_code == 403 and b"scrape-token-1" not in refused.content
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200


def test_syncs_count_by_broker_and_outcome_with_trades_and_duration(client, trader):
    good = services.connection_create(owner=trader, broker_type="demo", label="Good", credentials={"api_key": "k"})
    services.connection_create(
        owner=trader, broker_type="demo", label="Bad", credentials={"api_key": "k", "scenario": "auth_error"}
    )
    text = scrape(client)
    run = good.sync_logs.get()
    assert sample(text, "tj_syncs_total", broker="demo", outcome="SUCCESS") == 1
    assert sample(text, "tj_syncs_total", broker="demo", outcome="FAILED") == 1
    assert sample(text, "tj_trades_imported_total", broker="demo") == run.trades_imported > 0
    assert sample(text, "tj_sync_duration_seconds_count", broker="demo") == 2
    assert sample(text, "tj_sync_duration_seconds_bucket", broker="demo", le="+Inf") == 2
    # The second sync of the same fills imports nothing new and counts them as skipped.
    services.connection_update(good.pk, sync_enabled=False)
    services.connection_update(good.pk, sync_enabled=True)
    text = scrape(client)
    rerun = good.sync_logs.order_by("-id").first()
    assert rerun.status == SyncLog.Status.SUCCESS
    assert sample(text, "tj_trades_skipped_total", broker="demo") == rerun.trades_skipped > 0
    assert sample(text, "tj_connections", broker="demo", status="CONNECTED") == 1
    assert sample(text, "tj_connections", broker="demo", status="ERROR") == 1
    services.connection_update(good.pk, sync_enabled=False)
    assert sample(scrape(client), "tj_connections", broker="demo", status="PAUSED") == 1


def test_rate_limit_waits_count_by_bucket(client):
    limiter = RateLimiter(
        redis.Redis.from_url(settings.REDIS_URL), {"demo": (RateLimit("requests", 1, 0.3, False),)}, 1.0
    )
    limiter.acquire("demo")
    limiter.acquire("demo")  # waits for the window to roll over
    text = scrape(client)
    assert sample(text, "tj_rate_limit_waits_total", bucket="demo") == 1
    assert 0 < sample(text, "tj_rate_limit_wait_seconds_total", bucket="demo") <= 0.3


def test_request_retries_count_by_broker(client):
    counters.request_retried(broker="alpaca")
    counters.request_retried(broker="alpaca")
    assert sample(scrape(client), "tj_broker_request_retries_total", broker="alpaca") == 2


def test_beat_lag_and_queue_depth_are_read_at_scrape_time(client, monkeypatch):
    text = scrape(client)
    assert sample(text, "tj_beat_lag_seconds") is None  # beat never dispatched
    assert sample(text, "tj_queue_depth", queue="celery") == 0
    heartbeat.record_dispatch(time.time() - 42)
    # No worker runs here, so a message sent through Redis waits in its queue.
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    celery_app.send_task("sync.tasks.close_interrupted_runs")
    text = scrape(client)
    assert 42 <= sample(text, "tj_beat_lag_seconds") < 45
    assert sample(text, "tj_queue_depth", queue="celery") == 1
    assert sample(text, "tj_queue_depth", queue="sync-accounts") == 0


def test_a_metrics_write_never_fails_the_caller(monkeypatch, caplog):
    monkeypatch.setattr(counters, "redis_client", lambda: redis.Redis(port=1, socket_connect_timeout=0.2))
    counters.request_retried(broker="demo")
    counters.rate_limit_waited(bucket="demo", seconds=1.0)
    assert "metrics_write_failed" in caplog.text
