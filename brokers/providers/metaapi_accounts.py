"""MetaApi's provisioning API as the MetaTrader provider uses it: one request with its error mapping,
the life of a MetaApi account this journal adds (find, add, update the password), and the server search.

Written from MetaApi's documentation (docs/brokers/metatrader.md); the provider (metaapi.py) adds
deployment and the deals on top.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import requests
import structlog
from django.conf import settings
from django.utils.crypto import salted_hmac

from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerError,
    BrokerRateLimitError,
    BrokerSetupError,
    unreadable,
)
from brokers.providers.http import DEFAULT_RATE_LIMIT_WAIT_S, BrokerHTTP, parse_retry_after
from brokers.providers.ratelimit import blocked, capped_wait, get_limiter, scope_for
from brokers.providers.text import printable

log = structlog.get_logger("brokers.metaapi")

# Marks the MetaApi accounts this journal made: only those are reused and removed, never an
# account the trader added to their own MetaApi dashboard by hand.
TAG = "trading-journal"
GONE = {"DELETING", "DELETE_FAILED", "DRAFT"}
PROVISIONING_BUCKETS = ("requests", "provisioning")
REQUEST_BUCKETS = ("requests",)
# The server search runs as traders type: its own bucket, so typing never starves a sync.
SEARCH_BUCKETS = ("search",)
SERVERS_CACHE_S = 24 * 3600
# MetaApi bills refused adds and advises against repeating them: the same login and password
# are not sent again for a day after the broker refused them.
REFUSAL_MEMORY_S = 24 * 3600
# How long an add answered 202 (settings detection, about a minute) may be repeated as the same add.
TRANSACTION_LIFE_S = 15 * 60


class MetaApiAccounts:
    """MetaApi's provisioning calls on the provider's BrokerHTTP, errors in the trader's words."""

    def __init__(self, http: BrokerHTTP, *, key: str, limits_name: str):
        self.http = http
        self.key = key
        self.limits_name = limits_name

    def call(
        self,
        token: str,
        own: bool,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        allow: tuple[int, ...] = (),
        buckets: tuple[str, ...] = REQUEST_BUCKETS,
        idempotent: bool | None = None,
    ) -> requests.Response:
        scope = scope_for(token)
        response = self.http.request(
            method,
            path_or_url,
            scope=scope,
            buckets=buckets,
            allow_statuses=(401, 403, 429, *allow),
            idempotent=idempotent,
            params=params,
            json=json,
            headers={"auth-token": token, **(headers or {})},
        )
        status = response.status_code
        if status == 429:
            raise self.rate_limited(response, scope)
        if status in (401, 403):
            raise self.token_refused(status, own)
        return response

    def token_refused(self, status: int, own: bool) -> BrokerError:
        what = "refused" if status == 401 else "does not allow this request with"
        if own:
            return BrokerAuthError(
                f"MetaApi {what} your token (HTTP {status}). Create a token with access to the MetaApi and "
                "provisioning APIs at app.metaapi.cloud/token and save it on this connection.",
                provider=self.key,
                status_code=status,
                field="metaapi_token",
            )
        return BrokerSetupError(
            f"MetaApi {what} this installation's token (HTTP {status}); the operator must replace METAAPI_TOKEN.",
            provider=self.key,
            status_code=status,
        )

    def rate_limited(self, response: requests.Response, scope: str) -> BrokerRateLimitError:
        """Wait until MetaApi's recommendedRetryTime (or Retry-After), and make every worker wait."""
        body = body_of(response)
        metadata = body.get("metadata") if isinstance(body, dict) else None
        wait = None
        recommended = metadata.get("recommendedRetryTime") if isinstance(metadata, dict) else None
        if isinstance(recommended, str):
            try:
                wait = (parse_time(recommended) - datetime.now(UTC)).total_seconds()
            except ValueError:
                wait = None
        if wait is None:
            wait = parse_retry_after(response)
        wait = max(1.0, capped_wait(wait if wait is not None else DEFAULT_RATE_LIMIT_WAIT_S))
        reason = "MetaApi asked us to slow down (HTTP 429): its CPU credits for this token are used up for now."
        return blocked(self.limits_name, reason, wait, provider=self.key, scope=scope, status_code=429)

    def find(self, token: str, own: bool, platform: str, server: str, login: str) -> dict | None:
        params = {"query": login, "platform": platform, "limit": 1000}
        response = self.call(token, own, "GET", "/users/current/accounts", params=params)
        body = self.http.json(response)
        rows = body.get("items") if isinstance(body, dict) else body
        for row in rows if isinstance(rows, list) else []:
            if (
                str(row.get("login")) == login
                and row.get("server") == server
                and TAG in (row.get("tags") or [])
                and row.get("state") not in GONE
            ):
                return row
        return None

    def create(
        self, token: str, own: bool, platform: str, server: str, login: str, password: str, refusal: str
    ) -> dict:
        body = {
            "name": f"{platform.upper()} {login} ({server})",
            "login": login,
            "password": password,
            "server": server,
            "platform": platform,
            "type": "cloud-g2",
            "magic": 0,
            "manualTrades": True,
            # High reliability bills two slots for a terminal that only reads history.
            "reliability": "regular",
            "tags": [TAG],
            "metastatsApiEnabled": False,
            "riskManagementApiEnabled": False,
        }
        if settings.METAAPI_REGION:
            body["region"] = settings.METAAPI_REGION
        # The same add sent again after a 202 (in a later attempt, maybe another worker) carries
        # the same id, as MetaApi's SDK does; a new add later gets a new one.
        client = get_limiter().client
        pending = f"metatrader:adding:{digest(token, platform, server, login, password)}"
        transaction = client.get(pending)
        transaction = transaction.decode() if transaction else uuid.uuid4().hex
        client.set(pending, transaction, ex=TRANSACTION_LIFE_S)
        headers = {"transaction-id": transaction}
        response = self.call(
            token,
            own,
            "POST",
            "/users/current/accounts",
            json=body,
            headers=headers,
            allow=(202, 400),
            buckets=PROVISIONING_BUCKETS,
        )
        if response.status_code == 202:
            client.expire(pending, TRANSACTION_LIFE_S)
            wait = max(1.0, parse_retry_after(response) or DEFAULT_RATE_LIMIT_WAIT_S)
            raise BrokerRateLimitError(
                "MetaApi is still detecting your broker's server settings (it takes about a minute the first time).",
                provider=self.key,
                retry_after=wait,
            )
        client.delete(pending)
        if response.status_code == 400:
            raise self.provisioning_error(response, server, refusal)
        created = self.http.json(response)
        if not isinstance(created, dict) or not metaapi_id(created):
            raise unreadable("MetaApi", provider=self.key)
        log.info("metaapi_account_provisioned", account_id=metaapi_id(created), platform=platform)
        return {**created, "type": body["type"]}

    def update(self, token: str, own: bool, account: dict, password: str) -> None:
        """Send the password again: the trader may have saved a new investor password."""
        body = {"name": account.get("name") or "", "password": password, "server": account.get("server")}
        response = self.call(
            token, own, "PUT", f"/users/current/accounts/{metaapi_id(account)}", json=body, allow=(400,)
        )
        if response.status_code == 400:
            raise self.provisioning_error(response, str(account.get("server")), "")

    def provisioning_error(self, response: requests.Response, server: str, refusal: str) -> BrokerError:
        body = body_of(response)
        code = error_code(body)
        shown = printable(server)
        if code == "E_SRV_NOT_FOUND":
            suggestions = suggested_servers(body)
            hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
            return BrokerAuthError(
                f"MetaApi does not know the server {shown!r}. Choose your broker's server from the list as you type "
                f"(the name your MetaTrader terminal shows when you log in).{hint}",
                provider=self.key,
                status_code=400,
                field="server",
            )
        if code == "E_AUTH":
            if refusal:
                get_limiter().client.set(refusal, "1", ex=REFUSAL_MEMORY_S)
            return self.refused_login(remembered=False)
        if code == "E_SERVER_TIMEZONE":
            return BrokerSetupError(
                f"MetaApi could not detect the settings of the server {shown!r} by itself. Trying again will not "
                "help: MetaApi needs a provisioning profile for this server (ask MetaApi support or the operator).",
                provider=self.key,
                status_code=400,
                field="server",
            )
        if code == "E_RESOURCE_SLOTS":
            return BrokerSetupError(
                "MetaApi says this MetaTrader account needs more resource slots than it can give it. The owner of "
                "the MetaApi token must allow more slots (a paid option) in the MetaApi dashboard.",
                provider=self.key,
                status_code=400,
            )
        return BrokerAPIError(
            f"MetaApi refused to add the account (HTTP 400, {printable(code) or 'no code'}). Retrying will not "
            "help — please report it.",
            provider=self.key,
            status_code=400,
        )

    def refused_login(self, *, remembered: bool) -> BrokerAuthError:
        again = (
            " The same login and password were refused earlier today, and MetaApi charges for each refused "
            "attempt, so they were not sent again."
            if remembered
            else ""
        )
        return BrokerAuthError(
            "Your broker's server refused this login and password. Enter the investor (read-only) password of "
            f"this account, and check the login number and the server.{again}",
            provider=self.key,
            status_code=400,
            field="investor_password",
        )

    def known_servers(self, query: str, platform: str) -> list[tuple[str, str]]:
        """(server, broker company) pairs MetaApi knows for what the trader typed; cached for a day.

        Uses the operator's token: without one the trader types the server name as the terminal shows it.
        """
        token = operator_token()
        words = " ".join(query.split()).lower()[:64]
        version = "4" if platform == "mt4" else "5"
        if not token or len(words) < 2:
            return []
        client = get_limiter().client
        cache_key = f"metatrader:servers:{version}:{hashlib.sha256(words.encode()).hexdigest()[:24]}"
        cached = client.get(cache_key)
        if cached:
            return [tuple(pair) for pair in json.loads(cached)]
        path = f"/known-mt-servers/{version}/search"
        response = self.call(token, False, "GET", path, params={"query": words}, buckets=SEARCH_BUCKETS)
        body = self.http.json(response)
        pairs = sorted(
            (str(server), str(broker))
            for broker, servers in (body.items() if isinstance(body, dict) else [])
            if isinstance(servers, list)
            for server in servers
        )
        client.set(cache_key, json.dumps(pairs), ex=SERVERS_CACHE_S)
        return pairs


def operator_token() -> str:
    return settings.METAAPI_TOKEN


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def metaapi_id(account: Mapping[str, Any]) -> str:
    return str(account.get("_id") or account.get("id") or "")


def error_code(body: Any) -> str:
    """The validation code: older answers put it in `details`, newer ones in `details.code`."""
    if not isinstance(body, dict):
        return ""
    details = body.get("details")
    if isinstance(details, str):
        return details
    if isinstance(details, dict):
        return str(details.get("code") or "")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("code") or "")
    return ""


def suggested_servers(body: Any) -> list[str]:
    found = body.get("serversByBrokers") if isinstance(body, dict) else None
    if not isinstance(found, dict) and isinstance(body, dict) and isinstance(body.get("details"), dict):
        found = body["details"].get("serversByBrokers")
    if not isinstance(found, dict):
        return []
    return [printable(str(s)) for servers in found.values() if isinstance(servers, list) for s in servers][:5]


def body_of(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def digest(*parts: str) -> str:
    # Keyed: an investor password is short, and a plain hash of it in a Redis key could be guessed back.
    return salted_hmac("brokers.metaapi", "\x1f".join(parts), algorithm="sha256").hexdigest()
