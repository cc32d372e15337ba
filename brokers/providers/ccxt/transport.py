"""ccxt's synchronous client on our rules: its requests go through BrokerHTTP, its errors become ours.

ccxt sends every request through `exchange.session.request(...)` after calling
`exchange.throttle(cost)` with the endpoint's cost. We hand it a session whose request is
BrokerHTTP.request (our timeouts, User-Agent, redirect policy, secret-free log line, resends
of transient failures, the Redis limiter) and a throttle that only notes the cost, so the
limiter books that many slots for the key on every worker instead of ccxt sleeping in-process.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import requests

from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerError,
    BrokerTimeoutError,
    BrokerUnavailableError,
    unreadable,
)
from brokers.providers.http import DEFAULT_RATE_LIMIT_WAIT_S, BrokerHTTP
from brokers.providers.ratelimit import blocked

# Limiter slots per unit of ccxt endpoint cost: costs come in fractions (OKX 1.67, Kraken 0.5),
# so a slot is a tenth of a cost unit rather than rounding every call up to a whole one.
SLOTS_PER_COST = 10

# ccxt logs whole requests (headers with the API key, signed bodies) at DEBUG; it gets a logger
# that drops everything, and our own broker_http line (method, path, status, time) says the rest.
# Made outside logging's registry (not getLogger): a later dictConfig re-enables every
# registered logger it does not name, this one it cannot reach, and it has no parent to pass to.
SILENT_LOGGER = logging.Logger("ccxt-silenced", level=logging.CRITICAL + 1)
SILENT_LOGGER.disabled = True
SILENT_LOGGER.propagate = False

T = TypeVar("T")


def slots_for(cost: float | None) -> int:
    return max(1, math.ceil((1 if cost is None else cost) * SLOTS_PER_COST))


class SessionThroughBrokerHTTP:
    """The part of requests.Session that ccxt uses, answered by BrokerHTTP."""

    def __init__(self, http: BrokerHTTP, scope: str):
        self.http = http
        self.scope = scope
        # ccxt merges these into every request and clears the cookies before each one.
        self.headers: dict[str, str] = {}
        self.cookies = requests.cookies.RequestsCookieJar()
        self._slots = 1
        # Refusals ccxt reads itself: exchanges put their own error codes in these bodies
        # (Binance -2015 "invalid API key", OKX 50111), which ccxt turns into named errors.
        # 429 and every 5xx stay with BrokerHTTP: it blocks, resends, and a 5xx stays transient
        # whatever code the body carries.
        self._ccxt_reads = tuple(s for s in range(400, 500) if s != 429)

    def throttle(self, cost: float | None = None) -> None:
        """ccxt's per-request hook: remember the next request's cost for the limiter."""
        self._slots = slots_for(cost)

    def request(self, method: str, url: str, *, data=None, headers=None, files=None, **_ccxt_transport):
        # ccxt's own timeout, proxies and verify are dropped: BrokerHTTP's settings apply.
        # Every call this family makes reads (markets, balances, trades), so any of them may be resent.
        return self.http.request(
            method,
            url,
            scope=self.scope,
            weight=self._slots,
            idempotent=True,
            allow_statuses=self._ccxt_reads,
            data=data,
            headers=headers,
            files=files,
        )

    def close(self) -> None:
        """Nothing to close: BrokerHTTP's session outlives one ccxt client."""


class ArgumentsMissing(BrokerAPIError):
    """ccxt's ArgumentsRequired: the call needs a value we did not give. For fetchMyTrades without
    a market that means the exchange lists trades per market only, and the caller asks per market;
    anywhere else it reaches the run with its message."""


def call(provider_key: str, name: str, scope: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one ccxt method; its exceptions become our error tree, with our words and no secret.

    ccxt's messages hold URLs and response bodies, so they are never passed on.
    """
    ccxt = importlib.import_module("ccxt")
    try:
        return fn(*args, **kwargs)
    except BrokerError:
        raise
    except ccxt.ArgumentsRequired:
        raise ArgumentsMissing(
            f"{name} needs a value the journal's connection form does not ask for (such as a subaccount id) "
            "to read your trades. Retrying will not help — please report it, naming the exchange.",
            provider=provider_key,
        ) from None
    except ccxt.NotSupported:
        raise BrokerAPIError(
            f"{name} does not let its API read the trades of this account type. Retrying will not help: "
            "delete this account's connection, or report it if the exchange shows these trades on its website.",
            provider=provider_key,
        ) from None
    except ccxt.InvalidNonce:
        raise BrokerAPIError(
            f"{name} refused the request's timestamp (the clocks disagree or two requests crossed). "
            "The sync will try again shortly.",
            provider=provider_key,
            transient=True,
        ) from None
    except ccxt.BadSymbol:
        raise BrokerAPIError(
            f"{name} no longer lists a market we asked about (delisted or renamed). The market list is "
            "reloaded within a few hours and the sync will try again then.",
            provider=provider_key,
            transient=True,
        ) from None
    except ccxt.PermissionDenied:
        raise BrokerAuthError(
            f"{name} accepted the API key but it may not read balances or trade history. Give the key "
            "read permission in your API settings there (trading and withdrawals can stay off).",
            provider=provider_key,
        ) from None
    except ccxt.AccountSuspended:
        raise BrokerAuthError(
            f"{name} says the account is suspended or frozen. Resolve it with {name}, then save the "
            "credentials again on the connection's page.",
            provider=provider_key,
        ) from None
    except ccxt.AuthenticationError:
        raise BrokerAuthError(
            f"{name} refused the API credentials. Check every field (key, secret, passphrase where asked) "
            "and that the key is still active, then save them again on the connection's page.",
            provider=provider_key,
        ) from None
    except (ccxt.RateLimitExceeded, ccxt.DDoSProtection):
        reason = f"{name} asked us to slow down."
        raise blocked(provider_key, reason, DEFAULT_RATE_LIMIT_WAIT_S, provider=provider_key, scope=scope) from None
    except ccxt.RequestTimeout:
        raise BrokerTimeoutError(f"{name} did not answer in time.", provider=provider_key) from None
    except ccxt.OnMaintenance:
        raise BrokerUnavailableError(
            f"{name} is down for maintenance. The sync will try again later.", provider=provider_key
        ) from None
    except (ccxt.ExchangeNotAvailable, ccxt.NetworkError):
        raise BrokerUnavailableError(
            f"Could not reach {name}, or it said it is unavailable. If this lasts, check its status page.",
            provider=provider_key,
        ) from None
    except ccxt.BadResponse:
        raise unreadable(name, provider=provider_key) from None
    except ccxt.BaseError as exc:
        raise BrokerAPIError(
            f"{name} rejected a request ({type(exc).__name__}). Retrying will not help — please report it.",
            provider=provider_key,
        ) from None
    except (KeyError, IndexError, TypeError, ValueError):
        # ccxt's parsers meeting a body that is not the documented shape (a half answer, HTML).
        raise unreadable(name, provider=provider_key) from None
