"""The plain values that providers take and return; they never see a Django model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Any

BUY = "BUY"
SELL = "SELL"


@dataclass(frozen=True)
class CredentialField:
    """One value a trader types into the connection form."""

    name: str
    label: str
    secret: bool = False
    required: bool = True
    help_text: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    # The form offers the provider's suggestions (BrokerProvider.suggestions) as the trader types.
    suggest: bool = False
    # False only for a value the broker takes in a JSON body (a login name, a password): everything
    # else reaches a header, a signature or a URL, which carry ASCII only (text.credential_problem).
    ascii_only: bool = True


@dataclass(frozen=True)
class BrokerCredentials:
    """What the trader gave us, decrypted only for the call; repr never shows the values."""

    values: Mapping[str, str] = field(repr=False)
    environment: str = ""

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name) or default


@dataclass(frozen=True)
class AuthResult:
    """A session with the broker: the token, when it expires (aware UTC, None if unknown), extras.

    issued_at is when we obtained it (the engine stamps it), so a token whose whole life is
    shorter than the renewal margin is renewed at half its life rather than at every use.
    """

    token: str = field(repr=False)
    expires_at: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    issued_at: datetime | None = None
    # OAuth: the refresh token, and its hard end (the trader must sign in again after it).
    refresh_token: str = field(default="", repr=False)
    refresh_expires_at: datetime | None = None

    def expires_within(self, margin: timedelta, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at - margin <= now

    def renew_margin(self, margin: timedelta) -> timedelta:
        """`margin`, or half the token's life when its whole life is shorter than that."""
        if self.expires_at is None or self.issued_at is None:
            return margin
        return min(margin, (self.expires_at - self.issued_at) / 2)


@dataclass(frozen=True)
class OAuthSpec:
    """How a broker's OAuth2 authorization-code sign-in works (the operator's app is configured apart).

    access_lifetime     how long an access token lives when the token answer does not say (None:
                        until revoked)
    refresh_lifetime    the refresh token's hard end counted from the trader's consent (None: no
                        hard end); past it only a new sign-in helps, so the trader is warned before
    client_auth         "basic": the app authenticates with HTTP Basic; "post": in the form body
    """

    authorize_url: str
    token_url: str
    scopes: tuple[str, ...] = ()
    pkce: bool = True
    access_lifetime: timedelta | None = timedelta(minutes=30)
    refresh_lifetime: timedelta | None = None
    client_auth: str = "basic"


@dataclass(frozen=True)
class BrokerAccountInfo:
    """One account under a connection, as the broker names it."""

    external_id: str
    name: str
    currency: str = "USD"
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Fee:
    """One charge of a fill in one currency, as the broker reported it (a rebate is negative)."""

    currency: str
    cost: Decimal


@dataclass(frozen=True)
class BrokerTrade:
    """One execution (fill). Quantity is always positive; side says the direction.

    fees is a cost (>= 0) in fee_currency, or in `currency` when that is empty; other_fees are
    the fill's further charges, each in its own currency (a crypto exchange may charge the
    trade's currency, its own token and points at once): never summed across currencies.
    executed_at is aware and in UTC; raw is the broker's own record, kept for audits and for
    fields we do not read yet. busted: the broker cancelled this fill after the fact (it never
    happened); the journal keeps it only as a tombstone (journal.importing).
    """

    broker_trade_id: str
    account_external_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    executed_at: datetime
    fees: Decimal = Decimal("0")
    currency: str = "USD"
    fee_currency: str = ""
    asset_class: str = "STK"
    multiplier: Decimal = Decimal("1")
    order_id: str = ""
    expiry: date | None = None
    strike: Decimal | None = None
    option_right: str = ""
    # Units of the account's base currency per unit of `currency`, where the broker says.
    fx_rate_to_base: Decimal | None = None
    busted: bool = False
    other_fees: tuple[Fee, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    def __post_init__(self):
        if self.side not in (BUY, SELL):
            raise ValueError(f"side must be {BUY} or {SELL}, got {self.side!r}")
        for name in ("quantity", "price", "fees", "multiplier"):
            if not isinstance(getattr(self, name), Decimal):
                raise TypeError(f"{name} must be a Decimal")
        if self.quantity <= 0:
            raise ValueError("quantity must be positive; the side carries the direction")
        if self.fees < 0:
            raise ValueError("fees must be a cost (>= 0)")
        if self.executed_at.tzinfo is None or self.executed_at.utcoffset() != timedelta(0):
            raise ValueError("executed_at must be an aware datetime in UTC")


@dataclass(frozen=True)
class BrokerPosition:
    """One open position as the broker reports it. quantity is signed: short is negative.

    average_price where the broker gives one; expiry, strike and option_right name an option
    series as BrokerTrade does. as_of is when the broker's figure was true, for a broker
    whose report lags (a statement's end); None means at the moment of the request.
    mark_price is the broker's price of one unit (as fills are priced) at that moment, where it
    gives one: the journal values the open position at it (unrealised P&L).
    """

    symbol: str
    quantity: Decimal
    average_price: Decimal | None = None
    expiry: date | None = None
    strike: Decimal | None = None
    option_right: str = ""
    as_of: datetime | None = None
    mark_price: Decimal | None = None

    def __post_init__(self):
        if not isinstance(self.quantity, Decimal):
            raise TypeError("quantity must be a Decimal")
        if self.mark_price is not None and not isinstance(self.mark_price, Decimal):
            raise TypeError("mark_price must be a Decimal")
        if self.as_of is not None and (self.as_of.tzinfo is None or self.as_of.utcoffset() != timedelta(0)):
            raise ValueError("as_of must be an aware datetime in UTC")


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` calls in any `window_s` seconds, per broker or per credential."""

    name: str
    limit: int
    window_s: float
    per_credential: bool = False
