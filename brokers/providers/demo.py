"""A simulated broker that needs no network: deterministic accounts and fills that keep coming.

Time is cut into slots of DEMO_FILL_EVERY_S seconds. In each slot an account may place one
order, filled at once or in two or three partial fills; whether it trades, what, and at
what price follow from a hash of (account, slot), so every call sees the same history and
new fills appear as the clock moves on. The demo trader scalps: the last slot of every hour
closes whatever is open, so the broker's positions are the hour's fills, and a sync reads
fills from the start of the hour (the journal then holds every fill behind each position
and reconciliation has something true to compare). The "scenario" field lets a trader or a test see
how the product handles a broker that refuses the login or is down.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from django.conf import settings

from brokers.providers.base import BrokerProvider
from brokers.providers.errors import BrokerAuthError, BrokerUnavailableError
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

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# The demo trader is flat at the end of every block of this many seconds (an hour).
FLAT_EVERY_S = 3600


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
        yield from self._fills(account.external_id, since, until)

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition]:
        """What the fills of the current hour leave open (every earlier hour ended flat)."""
        now = datetime.now(UTC)
        held: dict[str, Decimal] = {}
        last: dict[str, Decimal] = {}
        for trade in self._fills(account.external_id, now, now):
            signed = trade.quantity if trade.side == BUY else -trade.quantity
            held[trade.symbol] = held.get(trade.symbol, Decimal(0)) + signed
            last[trade.symbol] = trade.price
        # The simulated market's price is its last fill's.
        return [
            BrokerPosition(symbol=symbol, quantity=q, mark_price=last[symbol])
            for symbol, q in sorted(held.items())
            if q
        ]

    def _fills(self, account_id: str, since: datetime, until: datetime) -> Iterator[BrokerTrade]:
        """The account's fills from the start of since's hour to until (never past now)."""
        every = settings.DEMO_FILL_EVERY_S
        until = min(until, datetime.now(UTC))
        since = _block_start(since)
        first = max(0, math.floor((since - EPOCH).total_seconds() / every))
        last = math.floor((until - EPOCH).total_seconds() / every)
        for slot in range(first, last + 1):
            for trade in self._slot_fills(account_id, slot, every):
                if since <= trade.executed_at <= until:
                    yield trade

    def _slot_fills(self, account_id: str, slot: int, every: int) -> Sequence[BrokerTrade]:
        if _is_last_of_block(slot, every):
            return _flattening_fills(account_id, slot, every)
        return _order_fills(account_id, slot, every)


def _block_start(moment: datetime) -> datetime:
    seconds = max(0, math.floor((moment - EPOCH).total_seconds()))
    return EPOCH + timedelta(seconds=seconds - seconds % FLAT_EVERY_S)


def _is_last_of_block(slot: int, every: int) -> bool:
    return (slot + 1) * every // FLAT_EVERY_S != slot * every // FLAT_EVERY_S


@lru_cache(maxsize=256)
def _flattening_fills(account_id: str, slot: int, every: int) -> tuple[BrokerTrade, ...]:
    """One market order per instrument the block's earlier slots left open, closing it."""
    block = slot * every // FLAT_EVERY_S
    first = math.ceil(block * FLAT_EVERY_S / every)
    held: dict[str, Decimal] = {}
    for earlier in range(first, slot):
        for trade in _order_fills(account_id, earlier, every):
            signed = trade.quantity if trade.side == BUY else -trade.quantity
            held[trade.symbol] = held.get(trade.symbol, Decimal(0)) + signed
    _, instruments = ACCOUNTS[account_id]
    start = EPOCH + timedelta(seconds=slot * every)
    # Halfway to the slot's end or the block's, whichever comes first: never in the next block.
    executed_at = (start + timedelta(seconds=min(every, (block + 1) * FLAT_EVERY_S - slot * every) / 2)).replace(
        microsecond=0
    )
    order_id = f"{account_id}-flat-{slot}"
    fills = []
    for inst in instruments:
        quantity = held.get(inst.symbol, Decimal(0))
        if not quantity:
            continue
        side = SELL if quantity > 0 else BUY
        price = _price(inst, account_id, slot, 0)
        fill_id = f"{account_id}-{slot}-flat-{inst.symbol}"
        fills.append(_fill(inst, account_id, fill_id, order_id, side, abs(quantity), price, executed_at, False))
    return tuple(fills)


def _price(inst: Instrument, account_id: str, slot: int, part: int) -> Decimal:
    # A slow drift plus noise, so a day of fills looks like a market, not a constant.
    drift = Decimal(str(round(math.sin(slot / 40) * 0.01, 6)))
    noise = Decimal(_roll(account_id, slot, part, "px") % 200 - 100) / Decimal(50000)
    return (inst.base_price * (1 + drift + noise) / inst.tick).quantize(Decimal(1), ROUND_HALF_UP) * inst.tick


def _fill(inst, account_id, fill_id, order_id, side, qty, price, executed_at, partial) -> BrokerTrade:
    fee = max(inst.min_fee, inst.fee_per_unit * qty).quantize(Decimal("0.01"))
    return BrokerTrade(
        broker_trade_id=fill_id,
        account_external_id=account_id,
        symbol=inst.symbol,
        side=side,
        quantity=Decimal(qty),
        price=price,
        fees=fee,
        currency="USD",
        executed_at=executed_at,
        asset_class=inst.asset_class,
        multiplier=inst.multiplier,
        order_id=order_id,
        raw={
            "fill_id": fill_id,
            "order_id": order_id,
            "symbol": inst.symbol,
            "side": side,
            "qty": int(qty),
            "price": str(price),
            "fee": str(fee),
            "time": executed_at.isoformat(),
            "partial": partial,
        },
    )


def _order_fills(account_id: str, slot: int, every: int) -> list[BrokerTrade]:
    """The slot's order, if the account places one: filled at once or in two or three parts."""
    if _roll(account_id, slot, "trades") % 10 >= 7:
        return []
    _, instruments = ACCOUNTS[account_id]
    inst = instruments[_roll(account_id, slot, "instrument") % len(instruments)]
    side = BUY if _roll(account_id, slot, "side") % 2 else SELL
    total_qty = 1 + _roll(account_id, slot, "qty") % inst.max_qty
    parts = 1 if total_qty == 1 else 1 + _roll(account_id, slot, "parts") % min(3, total_qty)
    start = EPOCH + timedelta(seconds=slot * every)
    fills, remaining = [], total_qty
    for part in range(parts):
        qty = remaining if part == parts - 1 else max(1, total_qty // parts)
        remaining -= qty
        executed_at = (start + timedelta(seconds=(part + 1) * every / (parts + 2))).replace(microsecond=0)
        fill_id = f"{account_id}-{slot}-{part + 1}"
        order_id = f"{account_id}-order-{slot}"
        price = _price(inst, account_id, slot, part)
        fills.append(_fill(inst, account_id, fill_id, order_id, side, qty, price, executed_at, parts > 1))
    return fills


PROVIDERS = (DemoProvider,)
