"""The deployment's counters, kept in Redis by whoever counts and read by /metrics (sync/metrics.py).

Why Redis and not prometheus-client's multiprocess mode: the events happen in Celery workers,
often on other machines than the web processes that answer the scrape, and multiprocess
mode only merges the processes of one host (through files in a shared directory). A few
Redis hash increments per sync cost less than a broker call, and any web process then
reports the totals of the whole deployment, with no per-host scrape target and no files to
clean up. Gauges (connections per status, queue depth, beat lag) are computed from the
database and Redis when Prometheus asks (sync/metrics.py), so they are never stale.

The run and the HTTP layer call the small functions below; none of them ever raises:
a lost count is better than a failed sync.
"""

from __future__ import annotations

import redis
import structlog
from django.db import transaction
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from telemetry.redis_client import redis_client

log = structlog.get_logger("telemetry.counters")

PREFIX = "tj:metrics:"
SYNCS = PREFIX + "syncs"  # "<broker>|<outcome>" -> runs
TRADES = PREFIX + "trades"  # "<broker>|imported" / "<broker>|skipped" -> trades
DURATION = PREFIX + "sync_duration"  # "<broker>|<le>", "<broker>|sum", "<broker>|count"
REQUEST_RETRIES = PREFIX + "request_retries"  # "<broker>" -> retried requests
RATE_LIMIT_WAITS = PREFIX + "rate_limit_waits"  # "<bucket>" -> waits
RATE_LIMIT_WAIT_SECONDS = PREFIX + "rate_limit_wait_seconds"  # "<bucket>" -> seconds waited
# Seconds; a sync is one login, an account listing and a few pages of fills per account.
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _write(event: str, fill) -> None:
    try:
        pipe = redis_client().pipeline(transaction=False)
        fill(pipe)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics_write_failed", metric=event, error=str(exc))


# --- what the run and the HTTP layer call ------------------------------------------------


def run_finished(*, broker: str, outcome: str, imported: int, skipped: int, duration_s: float) -> None:
    """A run was closed (SUCCESS, PARTIAL, FAILED, INTERRUPTED or SKIPPED), with its whole-run counts."""

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


# --- what /metrics reads ------------------------------------------------------------------


def _split(field: bytes) -> tuple[str, str]:
    first, _, second = field.decode().rpartition("|")
    return first, second


def counter_families(client: redis.Redis):
    """The counters above as Prometheus metric families."""
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
