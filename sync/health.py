"""/healthz (this process answers) and /readyz (database, Redis, a worker, beat), on django-health-check.

/healthz is the liveness probe: it touches nothing else, so a database outage does not get
every web process restarted. /readyz is the readiness and monitoring probe: 200 when every
check passes, 500 otherwise. Anyone gets just "up" or "down"; an operator (the METRICS_TOKEN
bearer, or a staff user) gets each check by name, with the failing one's reason (?format=json for
machines), since those name hosts and ports. The checks run at most once at a time per process
and their result is kept READINESS_CACHE_S: the Celery ping waits its whole timeout, and an
anonymous probe must not hold a web worker that long on every request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hmac
import math
import threading
import time

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse
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


class ReadinessView(HealthCheckView):
    """django-health-check's view, run through the cache, with the details for operators only."""

    checks = (
        Database,
        (Redis, {"client_factory": async_redis_client}),
        # A worker answers a ping and between them they consume every queue (celery, sync-accounts).
        (Ping, {"timeout": datetime.timedelta(seconds=2)}),
        BeatDispatching,
    )

    async def get(self, request, *args, **kwargs):
        self.results = await sync_to_async(_latest_results, thread_sensitive=False)(self)
        up = not any(result.error for result in self.results)
        status = 200 if up else 500
        wants_json = request.GET.get("format") == "json" or "application/json" in request.headers.get("accept", "")
        if not await _operator(request):
            if wants_json:
                return JsonResponse({"status": "up" if up else "down"}, status=status)
            return HttpResponse("up\n" if up else "down\n", content_type="text/plain", status=status)
        if wants_json:
            return self.render_to_response_json(status)
        return self.render_to_response(self.get_context_data(**kwargs), status=status)

    async def run_checks(self) -> list:
        with self.get_executor() as executor:
            return await asyncio.gather(*(check.get_result(executor) for check in self.get_checks()))


_results_lock = threading.Lock()
_results: tuple[float, list] = (-math.inf, [])


def _latest_results(view: ReadinessView) -> list:
    """The checks' results, at most READINESS_CACHE_S old; callers meanwhile wait for the one run."""
    global _results
    with _results_lock:
        if time.monotonic() - _results[0] >= settings.READINESS_CACHE_S:
            _results = (time.monotonic(), async_to_sync(view.run_checks)())
        return _results[1]


async def _operator(request) -> bool:
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
        return True
    user = await request.auser()
    return user.is_staff


readiness_view = ReadinessView.as_view()
