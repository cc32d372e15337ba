"""Alpaca (Trading API v2): one API key pair per account, fills from the account activities."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAPIError, BrokerAuthError, UnreadableRow
from brokers.providers.ratelimit import scope_for
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
    BrokerPosition,
    BrokerTrade,
    CredentialField,
)

PAGE_SIZE = 100  # the most Alpaca returns per page
SIDES = {"buy": BUY, "sell": SELL, "sell_short": SELL}
CLOSED_STATUS = "ACCOUNT_CLOSED"
# Data calls book this bucket only; Alpaca Connect's token requests have their own ("auth").
DATA_BUCKETS = ("requests",)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AlpacaProvider(BrokerProvider):
    key = "alpaca"
    display_name = "Alpaca"
    environments = (("paper", "Paper trading"), ("live", "Live"))
    credential_fields = (
        CredentialField(
            "key_id",
            "API key ID",
            # Not a password on its own, but half of the pair and enough to name the account.
            secret=True,
            help_text="In the Alpaca dashboard, open API keys and generate a key. "
            "Paper and live accounts have different keys: use the keys of the environment you chose.",
        ),
        CredentialField(
            "secret_key",
            "API secret key",
            secret=True,
            help_text="Shown once, next to the key ID, when you generate the key in the Alpaca dashboard "
            "(API keys). If you lost it, generate a new key pair.",
        ),
    )
    base_urls = {
        "paper": "https://paper-api.alpaca.markets",
        "live": "https://api.alpaca.markets",
    }
    # Re-reading the last hour costs about one page and catches fills posted after their time.
    sync_overlap = timedelta(hours=1)
    # 90 days is about 18,000 fills for a very active trader: one rate-limit window of pages.
    max_history = timedelta(days=90)
    # Fills are requested with direction=asc, so the engine saves progress after each batch and
    # a backfill paused by the rate limit resumes where it stopped.
    trades_ascending = True

    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        key_id, secret_key = credentials["key_id"].strip(), credentials["secret_key"].strip()
        account = self._get_account(self._key_headers(key_id, secret_key), scope_for(key_id))
        # Alpaca keys never expire: the "session" is the key pair itself, stored encrypted.
        token = json.dumps({"key_id": key_id, "secret_key": secret_key})
        extra = {
            "account_id": account.get("id", ""),
            "account_number": account.get("account_number", ""),
            "currency": account.get("currency") or "USD",
        }
        return AuthResult(token=token, expires_at=None, extra=extra)

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        return auth

    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        account = self._get_account(*self._session_headers(auth))
        if account.get("status") == CLOSED_STATUS:
            return []
        external_id = account.get("account_number") or account.get("id")
        if not external_id:
            raise BrokerAPIError(
                "Alpaca sent an account without a number. Retrying will not help — please report it.",
                provider=self.key,
            )
        return [
            BrokerAccountInfo(
                external_id=external_id,
                name=f"Alpaca {self._environment_label} {external_id}",
                currency=account.get("currency") or "USD",
                extra={"account_id": account.get("id", ""), "status": account.get("status", "")},
            )
        ]

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        headers, scope = self._session_headers(auth)
        params = {
            "after": _rfc3339(since),
            "until": _rfc3339(until),
            "direction": "asc",
            "page_size": PAGE_SIZE,
        }
        while True:
            response = self._request("v2/account/activities/FILL", headers, scope, params=params)
            page = self.http.json(response)
            if not isinstance(page, list):
                raise self.unreadable()
            # Every item is an execution: "fill" completes an order, "partial_fill" is part of one.
            yield from self.readable(page, lambda item: self._trade(item, account))
            if len(page) < PAGE_SIZE:
                return
            params = {**params, "page_token": page[-1]["id"]}

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition]:
        """GET /v2/positions: every open position of the account the keys belong to."""
        headers, scope = self._session_headers(auth)
        items = self.http.json(self._request("v2/positions", headers, scope))
        if not isinstance(items, list):
            raise self.unreadable("the positions")
        return [self._position(item) for item in items]

    def _position(self, item: Mapping[str, Any]) -> BrokerPosition:
        try:
            quantity = Decimal(item["qty"])
            # Alpaca signs a short's qty; the side says it too, so either alone is enough.
            if item.get("side") == "short" and quantity > 0:
                quantity = -quantity
            average, current = item.get("avg_entry_price"), item.get("current_price")
            return BrokerPosition(
                symbol=item["symbol"],
                quantity=quantity,
                average_price=Decimal(average) if average else None,
                mark_price=Decimal(current) if current else None,
            )
        except (KeyError, TypeError, ValueError, InvalidOperation):
            raise self.unreadable("a position") from None

    def _trade(self, item: Mapping[str, Any], account: BrokerAccountInfo) -> BrokerTrade:
        try:
            side = SIDES[item["side"]]
            executed_at = datetime.fromisoformat(item["transaction_time"]).astimezone(UTC)
            return BrokerTrade(
                broker_trade_id=item["id"],
                account_external_id=account.external_id,
                symbol=item["symbol"],
                side=side,
                quantity=Decimal(item["qty"]),
                price=Decimal(item["price"]),
                executed_at=executed_at,
                # Alpaca charges no commission; regulatory fees come as separate non-trade activities.
                fees=Decimal("0"),
                currency=account.currency,
                order_id=item.get("order_id") or "",
                raw=dict(item),
            )
        except (KeyError, TypeError, ValueError, InvalidOperation):
            raise UnreadableRow(
                f"fill {item.get('id') or 'without id'}: no side, quantity, price or time we can read"
            ) from None

    def _get_account(self, headers: dict[str, str], scope: str) -> dict[str, Any]:
        account = self.http.json(self._request("v2/account", headers, scope))
        if not isinstance(account, dict):
            raise self.unreadable()
        return account

    def _request(self, path: str, headers: dict[str, str], scope: str, **kwargs) -> requests.Response:
        response = self.http.request(
            "GET", path, scope=scope, buckets=DATA_BUCKETS, allow_statuses=(401, 403), headers=headers, **kwargs
        )
        if response.status_code in (401, 403):
            status = response.status_code
            raise BrokerAuthError(self._refused(status), provider=self.key, status_code=status)
        return response

    def _refused(self, status: int) -> str:
        # The shared message cannot know that paper and live keys differ, the usual mistake here.
        return (
            f"Alpaca refused the API keys (HTTP {status}) for the {self._environment_label} "
            "environment. Paper and live accounts have different keys: check that these keys belong "
            "to this environment, or generate new ones in the Alpaca dashboard (API keys) and save "
            "them on the connection's page."
        )

    @staticmethod
    def _key_headers(key_id: str, secret_key: str) -> dict[str, str]:
        return {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key}

    def _session_headers(self, auth: AuthResult) -> tuple[dict[str, str], str]:
        """The headers of every call with this session, and its rate-limit scope."""
        key_id, secret_key = self._keys(auth)
        return self._key_headers(key_id, secret_key), scope_for(key_id)

    @property
    def _environment_label(self) -> str:
        return dict(self.environments).get(self.environment, self.environment)

    def _keys(self, auth: AuthResult) -> tuple[str, str]:
        try:
            keys = json.loads(auth.token)
            return keys["key_id"], keys["secret_key"]
        except (ValueError, TypeError, KeyError):
            # The engine answers an auth error on a stored session with a fresh login.
            raise BrokerAuthError(
                "The saved Alpaca session could not be read. We will log in again with your API keys; "
                "if this persists, save the keys again on the connection's page.",
                provider=self.key,
            ) from None


PROVIDERS = (AlpacaProvider,)
