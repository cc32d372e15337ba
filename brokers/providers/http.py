"""The one HTTP layer every provider uses: session, timeouts, rate limit, error mapping, logging."""

from __future__ import annotations

import random
import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
import structlog
from django.conf import settings

from brokers.providers import archive
from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerError,
    BrokerTimeoutError,
    BrokerUnavailableError,
    unreadable,
)
from brokers.providers.ratelimit import Scope, blocked, capped_wait, get_limiter
from telemetry import counters

log = structlog.get_logger("brokers.http")

# When a broker says 429 but not for how long, wait this long before anyone asks again.
DEFAULT_RATE_LIMIT_WAIT_S = 60.0
# Whole seconds, in ASCII only: str.isdigit() also accepts digits such as "²" that int() refuses.
_SECONDS = re.compile(r"[0-9]{1,12}")


def parse_retry_after(response: requests.Response, now: datetime | None = None) -> float | None:
    """Seconds to wait from Retry-After (seconds or an HTTP date) or X-Ratelimit-Reset (epoch).

    Capped at BROKER_RETRY_AFTER_MAX_S: one answer must not stop a broker for days.
    """
    now = now or datetime.now(UTC)
    value = response.headers.get("Retry-After")
    if value:
        value = value.strip()
        if _SECONDS.fullmatch(value):
            return capped_wait(float(value))
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return capped_wait((when - now).total_seconds())
    reset = (response.headers.get("X-Ratelimit-Reset") or "").strip()
    if _SECONDS.fullmatch(reset):
        return capped_wait(int(reset) - now.timestamp())
    return None


# Methods that mean the same when sent twice (RFC 9110): only these are sent again after a
# failure that may have reached the broker. Any request is sent again when it never left.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class BrokerHTTP:
    """A reused session for one provider. Every call books a rate-limit slot first.

    A transient failure of an idempotent request (no answer in time, a dropped connection,
    one of the provider's transient statuses) is sent again up to BROKER_HTTP_RETRIES times
    after a short jittered pause, each time through the limiter, before the error reaches
    the run (whose own retries are minutes apart). `retries` counts those resends.
    """

    def __init__(
        self,
        *,
        provider_key: str,
        display_name: str,
        base_url: str,
        limits_key: str = "",
        transient_statuses: frozenset[int] = frozenset({500, 502, 503, 504}),
    ):
        # Whom the requests are for (logs, counters, errors), and which rate_limits.toml table
        # they book: a second way to connect a broker books the broker's own table.
        self.provider_key = provider_key
        self.limits_key = limits_key or provider_key
        self.display_name = display_name
        self.base_url = base_url.rstrip("/")
        self.transient_statuses = transient_statuses
        self.session = requests.Session()
        self.session.headers["User-Agent"] = settings.BROKER_HTTP_USER_AGENT
        self.timeout = (settings.BROKER_HTTP_CONNECT_TIMEOUT_S, settings.BROKER_HTTP_READ_TIMEOUT_S)
        self.retries = 0

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: Scope = "",
        buckets: tuple[str, ...] | None = None,
        allow_statuses: tuple[int, ...] = (),
        idempotent: bool | None = None,
        weight: int = 1,
        **kwargs,
    ) -> requests.Response:
        """Send one request and return the response, or raise the matching BrokerError.

        scope names the credential for per-credential limits (see ratelimit.scope_for), or one
        credential per bucket (ratelimit.Scope);
        allow_statuses are statuses the caller interprets itself instead of the mapping;
        idempotent overrides the method's own meaning (e.g. a POST that only reads);
        weight is how many limiter slots the request takes (a ccxt endpoint's cost).
        The answer returned is kept by the read being recorded for the raw archive, and while a
        reparse replays one, comes from it instead (brokers.providers.archive).
        """
        url = path_or_url if "://" in path_or_url else f"{self.base_url}/{path_or_url.lstrip('/')}"
        read = archive.current()
        if isinstance(read, archive.Replayer):
            # A reparse: the archived answer, and no request leaves (brokers.providers.archive).
            return read.answer(method, url)
        idempotent = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent
        tries = 1 + settings.BROKER_HTTP_RETRIES
        attempt = 0
        while True:
            attempt += 1
            get_limiter().acquire(
                self.limits_key, scope=scope, buckets=buckets, display_name=self.display_name, weight=weight
            )
            try:
                response = self._send(method, url, **kwargs)
            except (BrokerTimeoutError, BrokerUnavailableError) as exc:
                if attempt < tries and (idempotent or not exc.request_sent):
                    self._pause_before_resend(attempt, method, url, exc.kind)
                    continue
                raise
            # A 3xx is not ok here: redirects are not followed, and error_for says so.
            if response.status_code in allow_statuses or response.status_code < 300:
                if read is not None:
                    read.add(method, url, response)
                return response
            error = self.error_for(response, scope=scope)
            if attempt < tries and idempotent and self._worth_resending(response, error):
                self._pause_before_resend(attempt, method, url, f"HTTP {response.status_code}")
                continue
            raise error

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        path = requests.utils.urlparse(url).path  # never the query: it may carry a token
        started = time.monotonic()
        try:
            # Never follow a redirect: it would carry the credential headers, a re-sent login
            # body or a token in the query to whatever host the answer names.
            response = self.session.request(method, url, timeout=self.timeout, allow_redirects=False, **kwargs)
        except requests.Timeout as exc:
            self._log(method, path, None, started)
            error = BrokerTimeoutError(f"{self.display_name} did not answer in time.", provider=self.provider_key)
            # A connect timeout means the request never left: safe to send again whatever it does.
            error.request_sent = not isinstance(exc, requests.ConnectTimeout)
            raise error from None
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ):
            # A connection dropped halfway through the body is an outage like any other.
            # The chained requests exception is dropped: its text holds the URL and query.
            self._log(method, path, None, started)
            raise BrokerUnavailableError(
                f"Could not reach {self.display_name}. If this lasts, check the broker's status page.",
                provider=self.provider_key,
            ) from None
        self._log(method, path, response.status_code, started)
        return response

    def _worth_resending(self, response: requests.Response, error: BrokerError) -> bool:
        # A broker that asks for a long wait gets it from the run's retry, not from a sleeping request.
        long_wait = (error.retry_after or 0) > settings.BROKER_RATE_LIMIT_MAX_SLEEP_S
        return response.status_code in self.transient_statuses and not long_wait

    def _pause_before_resend(self, attempt: int, method: str, url: str, reason: str) -> None:
        self.retries += 1
        counters.request_retried(broker=self.provider_key)
        pause = settings.BROKER_HTTP_RETRY_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        log.info(
            "broker_http_retry",
            broker=self.provider_key,
            method=method,
            path=requests.utils.urlparse(url).path,
            reason=reason,
            pause_s=round(pause, 2),
        )
        time.sleep(pause)

    def error_for(self, response: requests.Response, *, scope: Scope = "") -> BrokerError:
        status = response.status_code
        retry_after = parse_retry_after(response)
        name = self.display_name
        if 300 <= status < 400:
            # Not followed (see request): where it points is not said, it may hold a token.
            return BrokerAPIError(
                f"{name} answered with a redirect (HTTP {status}), which we do not follow so that "
                "credentials never go to another address. If the broker moved its API, please report it.",
                provider=self.provider_key,
                status_code=status,
                transient=False,
            )
        if status in (401, 403):
            return BrokerAuthError(
                f"{name} refused the credentials (HTTP {status}). "
                "Check them on the connection's page and save them again.",
                provider=self.provider_key,
                status_code=status,
            )
        if status == 429:
            wait = retry_after if retry_after is not None else DEFAULT_RATE_LIMIT_WAIT_S
            reason = f"{name} asked us to slow down (HTTP 429)."
            return blocked(self.limits_key, reason, wait, provider=self.provider_key, scope=scope, status_code=status)
        if status == 503:
            reason = f"{name} is temporarily unavailable (HTTP 503)."
            if retry_after is not None:
                # Scoped like a 429: one credential's answer does not stop every trader.
                get_limiter().block(self.limits_key, retry_after, scope=scope, reason=reason)
            return BrokerUnavailableError(
                reason,
                provider=self.provider_key,
                status_code=status,
                retry_after=retry_after,
            )
        if status >= 500:
            return BrokerAPIError(
                f"{name} had an internal error (HTTP {status}).",
                provider=self.provider_key,
                status_code=status,
                transient=True,
            )
        return BrokerAPIError(
            f"{name} rejected a request (HTTP {status}). This is likely a bug on our side; "
            "retrying will not help — please report it.",
            provider=self.provider_key,
            status_code=status,
            transient=False,
        )

    def json(self, response: requests.Response):
        """The body as JSON, or a transient BrokerAPIError for a truncated or garbled answer."""
        try:
            return response.json()
        except ValueError:
            raise unreadable(self.display_name, provider=self.provider_key, status_code=response.status_code) from None

    def _log(self, method, path, status, started):
        log.info(
            "broker_http",
            broker=self.provider_key,
            method=method,
            path=path,
            status=status,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
