"""A simulated broker that needs no network: deterministic accounts and fills that keep coming.

Time is cut into slots of DEMO_FILL_EVERY_S seconds. In each slot an account may place one
order, filled at once or in two or three partial fills; whether it trades, what, and at
what price follow from a hash of (account, slot), so every call sees the same history and
new fills appear as the clock moves on. The "scenario" field lets a trader or a test see
how the product handles a broker that refuses the login or is down.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError, BrokerUnavailableError
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
    BrokerTrade,
    CredentialField,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Instrument:
    symbol: str
    asset_class: str
    base_price: Decimal
    tick: Decimal
    multiplier: Decimal
    max_qty: int
    fee_per_unit: Decimal
    min_fee: Decimal


FUTURES = (
    Instrument("ESZ6", "FUT", Decimal("5900"), Decimal("0.25"), Decimal("50"), 4, Decimal("2.25"), Decimal("0")),
    Instrument("NQZ6", "FUT", Decimal("21000"), Decimal("0.25"), Decimal("20"), 2, Decimal("2.25"), Decimal("0")),
    Instrument("MESZ6", "FUT", Decimal("5900"), Decimal("0.25"), Decimal("5"), 10, Decimal("0.62"), Decimal("0")),
    Instrument("CLF7", "FUT", Decimal("70"), Decimal("0.01"), Decimal("1000"), 3, Decimal("2.50"), Decimal("0")),
)
STOCKS = (
    Instrument("AAPL", "STK", Decimal("230"), Decimal("0.01"), Decimal("1"), 200, Decimal("0.005"), Decimal("1")),
    Instrument("MSFT", "STK", Decimal("420"), Decimal("0.01"), Decimal("1"), 100, Decimal("0.005"), Decimal("1")),
    Instrument("SPY", "STK", Decimal("590"), Decimal("0.01"), Decimal("1"), 100, Decimal("0.005"), Decimal("1")),
    Instrument("TSLA", "STK", Decimal("250"), Decimal("0.01"), Decimal("1"), 150, Decimal("0.005"), Decimal("1")),
)
ACCOUNTS = {
    "DEMO-FUT-1": ("Demo futures", FUTURES),
    "DEMO-STK-1": ("Demo stocks", STOCKS),
}


def _roll(*parts) -> int:
    """A deterministic pseudo-random number for these parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class DemoProvider(BrokerProvider):
    key = "demo"
    display_name = "Demo broker (simulated)"
    credential_fields = (
        CredentialField(
            "api_key",
            "Demo API key",
            secret=True,
            help_text="Any text works: the demo broker simulates fills and needs no account.",
        ),
        CredentialField(
            "scenario",
            "Scenario",
            required=False,
            help_text="Simulate a healthy broker, a refused login, a broker that is down, "
            "or one whose stocks account cannot be read.",
            choices=(
                ("normal", "Healthy"),
                ("auth_error", "Refuses the login"),
                ("broker_down", "Down"),
                ("account_down", "Stocks account unavailable"),
            ),
        ),
    )
    sync_overlap = timedelta(minutes=10)
    max_history = timedelta(days=2)
    trades_ascending = True
    token_renew_margin = timedelta(minutes=5)

    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        scenario = credentials.get("scenario", "normal")
        if scenario == "auth_error":
            raise BrokerAuthError(
                "The demo broker refused the login (scenario 'Refuses the login'). "
                "Edit the connection and choose the Healthy scenario.",
                provider=self.key,
            )
        if scenario == "broker_down":
            raise BrokerUnavailableError(
                "The demo broker is down (scenario 'Down').",
                provider=self.key,
            )
        token = hashlib.sha256(f"demo-session:{credentials['api_key']}".encode()).hexdigest()
        return AuthResult(token=token, expires_at=datetime.now(UTC) + timedelta(hours=1), extra={"scenario": scenario})

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        return AuthResult(token=auth.token, expires_at=datetime.now(UTC) + timedelta(hours=1), extra=auth.extra)

    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        return [BrokerAccountInfo(external_id=ext, name=name, currency="USD") for ext, (name, _) in ACCOUNTS.items()]

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        if auth.extra.get("scenario") == "account_down" and account.external_id == "DEMO-STK-1":
            raise BrokerUnavailableError(
                "The demo broker cannot read the stocks account right now (scenario 'Stocks account unavailable').",
                provider=self.key,
            )
        every = settings.DEMO_FILL_EVERY_S
        until = min(until, datetime.now(UTC))
        first = max(0, math.floor((since - EPOCH).total_seconds() / every))
        last = math.floor((until - EPOCH).total_seconds() / every)
        for slot in range(first, last + 1):
            for trade in self._slot_fills(account.external_id, slot, every):
                if since <= trade.executed_at <= until:
                    yield trade

    def _slot_fills(self, account_id: str, slot: int, every: int) -> list[BrokerTrade]:
        if _roll(account_id, slot, "trades") % 10 >= 7:
            return []
        _, instruments = ACCOUNTS[account_id]
        inst = instruments[_roll(account_id, slot, "instrument") % len(instruments)]
        side = BUY if _roll(account_id, slot, "side") % 2 else SELL
        total_qty = 1 + _roll(account_id, slot, "qty") % inst.max_qty
        parts = 1 if total_qty == 1 else 1 + _roll(account_id, slot, "parts") % min(3, total_qty)
        start = EPOCH + timedelta(seconds=slot * every)
        # A slow drift plus noise, so a day of fills looks like a market, not a constant.
        drift = Decimal(str(round(math.sin(slot / 40) * 0.01, 6)))
        fills, remaining = [], total_qty
        for part in range(parts):
            qty = remaining if part == parts - 1 else max(1, total_qty // parts)
            remaining -= qty
            noise = Decimal(_roll(account_id, slot, part, "px") % 200 - 100) / Decimal(50000)
            price = (inst.base_price * (1 + drift + noise) / inst.tick).quantize(Decimal(1), ROUND_HALF_UP) * inst.tick
            fee = max(inst.min_fee, inst.fee_per_unit * qty).quantize(Decimal("0.01"))
            executed_at = start + timedelta(seconds=(part + 1) * every / (parts + 2))
            fill_id = f"{account_id}-{slot}-{part + 1}"
            fills.append(
                BrokerTrade(
                    broker_trade_id=fill_id,
                    account_external_id=account_id,
                    symbol=inst.symbol,
                    side=side,
                    quantity=Decimal(qty),
                    price=price,
                    fees=fee,
                    currency="USD",
                    executed_at=executed_at.replace(microsecond=0),
                    asset_class=inst.asset_class,
                    multiplier=inst.multiplier,
                    order_id=f"{account_id}-order-{slot}",
                    raw={
                        "fill_id": fill_id,
                        "order_id": f"{account_id}-order-{slot}",
                        "symbol": inst.symbol,
                        "side": side,
                        "qty": qty,
                        "price": str(price),
                        "fee": str(fee),
                        "time": executed_at.replace(microsecond=0).isoformat(),
                        "partial": parts > 1,
                    },
                )
            )
        return fills


PROVIDERS = (DemoProvider,)
