"""Prometheus metrics at /metrics: counters kept in Redis by whoever counts, gauges read at scrape time.

Why Redis and not prometheus-client's multiprocess mode: the events happen in Celery workers,
often on other machines than the web processes that answer the scrape, and multiprocess
mode only merges the processes of one host (through files in a shared directory). A few
Redis hash increments per sync cost less than a broker call, and any web process then
reports the totals of the whole deployment, with no per-host scrape target and no files to
clean up. Gauges (connections per status, queue depth, beat lag) are computed from the
database and Redis when Prometheus asks, so they are never stale.

The engine and the HTTP layer call the small functions below; none of them ever raises:
a lost count is better than a failed sync.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import cache

import redis
import structlog
from django.conf import settings
from django.db import transaction
from django.http import HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from config import beat

log = structlog.get_logger("config.metrics")

PREFIX = "tj:metrics:"
SYNCS = PREFIX + "syncs"  # "<broker>|<outcome>" -> runs
TRADES = PREFIX + "trades"  # "<broker>|imported" / "<broker>|skipped" -> trades
DURATION = PREFIX + "sync_duration"  # "<broker>|<le>", "<broker>|sum", "<broker>|count"
REQUEST_RETRIES = PREFIX + "request_retries"  # "<broker>" -> retried requests
RATE_LIMIT_WAITS = PREFIX + "rate_limit_waits"  # "<bucket>" -> waits
RATE_LIMIT_WAIT_SECONDS = PREFIX + "rate_limit_wait_seconds"  # "<bucket>" -> seconds waited
# Seconds; a sync is one login, an account listing and a few pages of fills per account.
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# The Celery queues (settings.CELERY_TASK_QUEUES); kombu keeps each priority level in its own list.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _write(event: str, fill) -> None:
    try:
        pipe = _redis().pipeline(transaction=False)
        fill(pipe)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics_write_failed", metric=event, error=str(exc))


# --- what the engine and the HTTP layer call ----------------------------------------------


def run_finished(sync_log) -> None:
    """A run's SyncLog was closed (SUCCESS, PARTIAL, FAILED, INTERRUPTED or SKIPPED), with its whole-run counts."""
    broker = sync_log.connection.broker_type
    duration_s = (sync_log.duration_ms or 0) / 1000
    outcome, imported, skipped = sync_log.status, sync_log.trades_imported, sync_log.trades_skipped

    def fill(pipe):
        pipe.hincrby(SYNCS, f"{broker}|{outcome}", 1)
        pipe.hincrby(TRADES, f"{broker}|imported", imported)
        pipe.hincrby(TRADES, f"{broker}|skipped", skipped)
        for le in DURATION_BUCKETS:
            if duration_s <= le:
                pipe.hincrby(DURATION, f"{broker}|{le}", 1)
        pipe.hincrby(DURATION, f"{broker}|count", 1)
        pipe.hincrbyfloat(DURATION, f"{broker}|sum", duration_s)

    # Counted when the run's row is committed, so a rolled-back close is not counted.
    transaction.on_commit(lambda: _write("run_finished", fill))


def request_retried(*, broker: str) -> None:
    """The HTTP layer is about to retry one broker request (a short, request-level retry)."""
    _write("request_retried", lambda pipe: pipe.hincrby(REQUEST_RETRIES, broker, 1))


def rate_limit_waited(*, bucket: str, seconds: float) -> None:
    """A call had to wait `seconds` for room in a rate-limit bucket (slept, or re-queued the task)."""

    def fill(pipe):
        pipe.hincrby(RATE_LIMIT_WAITS, bucket, 1)
        pipe.hincrbyfloat(RATE_LIMIT_WAIT_SECONDS, bucket, seconds)

    _write("rate_limit_waited", fill)


# --- scrape ------------------------------------------------------------------------------


def _split(field: bytes) -> tuple[str, str]:
    first, _, second = field.decode().rpartition("|")
    return first, second


def _counters(client: redis.Redis):
    syncs = CounterMetricFamily("tj_syncs", "Sync runs finished, by broker and outcome.", labels=["broker", "outcome"])
    for field, value in client.hgetall(SYNCS).items():
        syncs.add_metric(list(_split(field)), int(value))
    yield syncs

    trades = {
        kind: CounterMetricFamily(f"tj_trades_{kind}", f"Trades {kind} by syncs.", labels=["broker"])
        for kind in ("imported", "skipped")
    }
    for field, value in client.hgetall(TRADES).items():
        broker, kind = _split(field)
        trades[kind].add_metric([broker], int(value))
    yield from trades.values()

    per_broker: dict[str, dict[str, float]] = {}
    for field, value in client.hgetall(DURATION).items():
        broker, key = _split(field)
        per_broker.setdefault(broker, {})[key] = float(value)
    duration = HistogramMetricFamily("tj_sync_duration_seconds", "Duration of finished sync runs.", labels=["broker"])
    for broker, values in sorted(per_broker.items()):
        buckets = [(str(le), values.get(str(le), 0.0)) for le in DURATION_BUCKETS]
        buckets.append(("+Inf", values.get("count", 0.0)))
        duration.add_metric([broker], buckets, sum_value=values.get("sum", 0.0))
    yield duration

    retries = CounterMetricFamily(
        "tj_broker_request_retries", "Broker HTTP requests retried by the HTTP layer.", labels=["broker"]
    )
    for field, value in client.hgetall(REQUEST_RETRIES).items():
        retries.add_metric([field.decode()], int(value))
    yield retries

    waits = CounterMetricFamily("tj_rate_limit_waits", "Waits for a rate-limit slot, by bucket.", labels=["bucket"])
    for field, value in client.hgetall(RATE_LIMIT_WAITS).items():
        waits.add_metric([field.decode()], int(value))
    yield waits
    waited = CounterMetricFamily(
        "tj_rate_limit_wait_seconds", "Seconds spent waiting for rate-limit slots, by bucket.", labels=["bucket"]
    )
    for field, value in client.hgetall(RATE_LIMIT_WAIT_SECONDS).items():
        waited.add_metric([field.decode()], float(value))
    yield waited


def _gauges(client: redis.Redis):
    from django.db.models import Count

    from brokers.models import BrokerConnection

    connections = GaugeMetricFamily(
        "tj_connections",
        "Broker connections by broker and status (PAUSED: auto-sync off).",
        labels=["broker", "status"],
    )
    counts: dict[tuple[str, str], int] = {}
    rows = BrokerConnection.objects.values("broker_type", "status", "sync_enabled").annotate(n=Count("id"))
    for row in rows:
        key = (row["broker_type"], row["status"] if row["sync_enabled"] else "PAUSED")
        counts[key] = counts.get(key, 0) + row["n"]
    for (broker, status), n in sorted(counts.items()):
        connections.add_metric([broker, status], n)
    yield connections

    depth = GaugeMetricFamily("tj_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"])
    for queue in settings.CELERY_TASK_QUEUES:
        depth.add_metric([queue.name], sum(client.llen(queue.name + suffix) for suffix in PRIORITY_SUFFIXES))
    yield depth

    lag = GaugeMetricFamily("tj_beat_lag_seconds", "Seconds since beat's last dispatch (absent: never dispatched).")
    silence = beat.seconds_since_dispatch()
    if silence is not None:
        lag.add_metric([], silence)
    yield lag


class SyncCollector:
    def collect(self):
        client = _redis()
        yield from _counters(client)
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
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
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
