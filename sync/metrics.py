"""Prometheus metrics at /metrics: the deployment's counters (telemetry.counters) and gauges read at scrape time."""

from __future__ import annotations

import hmac
import ipaddress
from functools import cache
from types import SimpleNamespace

import redis
from django.conf import settings
from django.db.models import Count, Q
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from brokers.models import BrokerConnection
from brokers.vocabulary import display_status
from telemetry import counters, heartbeat
from telemetry.client_ip import client_ip
from telemetry.redis_client import redis_client

# The Celery queues (settings.CELERY_TASK_QUEUES); kombu keeps each priority level in its own list.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def _gauges(client: redis.Redis):
    connections = GaugeMetricFamily(
        "tj_connections",
        "Broker connections by broker and the badge their cards show (brokers.vocabulary.DisplayStatus).",
        labels=["broker", "status"],
    )
    counts: dict[tuple[str, str], int] = {}
    # Grouped by every field the badge reads, so each group's badge is the one its cards show.
    rows = (
        BrokerConnection.objects.annotate(never_synced=Q(last_sync_at__isnull=True), failed=~Q(last_sync_error=""))
        .values("broker_type", "status", "sync_enabled", "next_attempt_reason", "never_synced", "failed")
        .annotate(n=Count("id"))
    )
    for row in rows:
        badge = display_status(
            SimpleNamespace(
                status=row["status"],
                sync_enabled=row["sync_enabled"],
                next_attempt_reason=row["next_attempt_reason"],
                last_sync_at=None if row["never_synced"] else True,
                last_sync_error=row["failed"],
            )
        )
        key = (row["broker_type"], str(badge))
        counts[key] = counts.get(key, 0) + row["n"]
    for (broker, status), n in sorted(counts.items()):
        connections.add_metric([broker, status], n)
    yield connections

    depth = GaugeMetricFamily("tj_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"])
    for queue in settings.CELERY_TASK_QUEUES:
        depth.add_metric([queue.name], sum(client.llen(queue.name + suffix) for suffix in PRIORITY_SUFFIXES))
    yield depth

    lag = GaugeMetricFamily("tj_beat_lag_seconds", "Seconds since beat's last dispatch (absent: never dispatched).")
    silence = heartbeat.seconds_since_dispatch()
    if silence is not None:
        lag.add_metric([], silence)
    yield lag


class SyncCollector:
    def collect(self):
        client = redis_client()
        yield from counters.counter_families(client)
        yield from _gauges(client)


@cache
def registry() -> CollectorRegistry:
    # Our collector only: process metrics of whichever web process answered would mislead.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncCollector())
    return registry


def scrape_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
        return True
    try:
        # Behind the reverse proxy REMOTE_ADDR is the proxy's (often this machine's) own address.
        address = ipaddress.ip_address(client_ip(request) or "")
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


@require_GET
def metrics_view(request):
    if not scrape_allowed(request):
        return HttpResponseForbidden(
            "Metrics need Authorization: Bearer <METRICS_TOKEN>, or a scraper in METRICS_ALLOWED_NETWORKS.\n",
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
