"""/healthz (this process answers) and /readyz (database, Redis, a worker, beat), on django-health-check.

/healthz is the liveness probe: it touches nothing else, so a database outage does not get
every web process restarted. /readyz is the readiness and monitoring probe: 200 when every
check passes, 500 naming the failing one otherwise (?format=json for machines).
"""

from __future__ import annotations

import dataclasses
import datetime

from django.conf import settings
from django.http import HttpResponse
from health_check.base import HealthCheck
from health_check.checks import Database
from health_check.contrib.celery import Ping
from health_check.contrib.redis import Redis
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView
from redis import RedisError

from telemetry import heartbeat
from telemetry.redis_client import async_redis_client

LIVENESS_PATH = "/healthz"


def liveness_middleware(get_response):
    """Answer /healthz first, before host validation and HTTPS redirects, which a local probe would fail."""

    def middleware(request):
        if request.path_info.rstrip("/") == LIVENESS_PATH and request.method in {"GET", "HEAD"}:
            return HttpResponse("ok\n", content_type="text/plain")
        return get_response(request)

    return middleware


@dataclasses.dataclass
class BeatDispatching(HealthCheck):
    """Beat sent a message within BEAT_MAX_SILENCE_S (it sends the housekeeping task every minute)."""

    def run(self):
        try:
            silence = heartbeat.seconds_since_dispatch()
        except RedisError as exc:
            raise ServiceUnavailable("Cannot read beat's heartbeat from Redis") from exc
        if silence is None:
            raise ServiceUnavailable("Beat has not dispatched anything yet")
        if silence > settings.BEAT_MAX_SILENCE_S:
            raise ServiceUnavailable(f"Beat's last dispatch was {silence:.0f} s ago")


readiness_view = HealthCheckView.as_view(
    checks=(
        Database,
        (Redis, {"client_factory": async_redis_client}),
        # A worker answers a ping and between them they consume every queue (celery, sync-accounts).
        (Ping, {"timeout": datetime.timedelta(seconds=2)}),
        BeatDispatching,
    )
)
