"""Trades: one row per broker execution, never two for the same fill; and the trader's profile."""

import zoneinfo
from datetime import date
from functools import cache
from importlib import resources

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

# The dates a search of trades may name. Wider ranges cannot hold a trade, and the ends of
# Python's calendar overflow once a time zone shifts them (9999-12-31 plus one day).
EARLIEST_TRADE_DATE = date(1900, 1, 1)
LATEST_TRADE_DATE = date(2999, 12, 31)
TRADE_DATE_RULE = f"Enter a date from {EARLIEST_TRADE_DATE:%Y-%m-%d} to {LATEST_TRADE_DATE:%Y-%m-%d}."


# Quantities, prices, fees, strikes and multipliers keep every digit a broker sends: crypto
# venues price tokens and charge fees to 18 decimals (a KuCoin fee of 0.000732004 USDT), and
# 20 integer digits hold any notional. PostgreSQL stores numeric(38, 18) exactly.
EXACT = {"max_digits": 38, "decimal_places": 18}


class Trade(models.Model):
    class Side(models.TextChoices):
        BUY = "BUY", "Buy"
        SELL = "SELL", "Sell"

    account = models.ForeignKey("brokers.BrokerAccount", on_delete=models.CASCADE, related_name="trades")
    broker_trade_id = models.CharField(max_length=128)
    order_id = models.CharField(max_length=128, blank=True)
    symbol = models.CharField(max_length=64)
    asset_class = models.CharField(max_length=10, default="STK")
    side = models.CharField(max_length=4, choices=Side.choices)
    quantity = models.DecimalField(**EXACT)
    price = models.DecimalField(**EXACT)
    fees = models.DecimalField(**EXACT, default=0)
    # The currency the fee was charged in when it is not `currency` (crypto exchanges often
    # charge in the bought coin or their own token); empty means `currency`.
    fee_currency = models.CharField(max_length=16, blank=True)
    # Further charges of the same fill, each in its own currency: [{"currency": "GT", "cost": "2.2"}]
    # (costs as exact text). Never summed into `fees`: the currencies differ.
    other_fees = models.JSONField(default=list, blank=True)
    # ISO codes for brokers; crypto quote currencies are longer (USDT, FDUSD).
    currency = models.CharField(max_length=16, default="USD")
    # Point value: price × quantity × multiplier is the money that changed hands.
    multiplier = models.DecimalField(**EXACT, default=1)
    # Options: expiry, strike and right (C or P); empty for everything else.
    expiry = models.DateField(null=True, blank=True)
    strike = models.DecimalField(**EXACT, null=True, blank=True)
    option_right = models.CharField(max_length=1, blank=True)
    # Units of the account's base currency per unit of `currency`, where the broker says.
    fx_rate_to_base = models.DecimalField(max_digits=24, decimal_places=10, null=True, blank=True)
    executed_at = models.DateTimeField()
    raw = models.JSONField(default=dict)
    imported_at = models.DateTimeField()
    # A trade the trader deleted stays as a tombstone, so the next sync does not bring it back.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-executed_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "broker_trade_id"], name="unique_trade_per_account"),
        ]
        indexes = [
            models.Index(fields=["account", "-executed_at"], name="trade_account_executed"),
            # The trades page, newest first across a trader's accounts: read from the top of this
            # index instead of sorting every fill (100 ms of a 100,000-fill page on PostgreSQL).
            models.Index(fields=["-executed_at", "-id"], name="trade_newest"),
        ]

    def __str__(self):
        return f"{self.side} {self.quantity} {self.symbol} @ {self.price}"


# What a broker reports of one execution (brokers.providers.types.BrokerTrade has each): the one
# description of a trade's fields that the import writes, the API shows and the admin lists.
REPORTED_FIELDS = (
    "broker_trade_id",
    "order_id",
    "symbol",
    "asset_class",
    "side",
    "quantity",
    "price",
    "fees",
    "fee_currency",
    "other_fees",
    "currency",
    "multiplier",
    "expiry",
    "strike",
    "option_right",
    "fx_rate_to_base",
    "executed_at",
    "raw",
)


class RoundTrip(models.Model):
    """One position of one instrument from flat to flat, computed from the fills (journal.positions).

    Open while closed_at is null: then it is the account's open position in that instrument
    (open_quantity, signed, at the FIFO cost open_average). Never edited by hand: each import
    recomputes the instruments it touched.
    """

    class Side(models.TextChoices):
        LONG = "LONG", "Long"
        SHORT = "SHORT", "Short"

    account = models.ForeignKey("brokers.BrokerAccount", on_delete=models.CASCADE, related_name="round_trips")
    # The instrument: a trade's symbol, and for options its expiry, strike and right.
    symbol = models.CharField(max_length=64)
    expiry = models.DateField(null=True, blank=True)
    strike = models.DecimalField(**EXACT, null=True, blank=True)
    option_right = models.CharField(max_length=1, blank=True)
    asset_class = models.CharField(max_length=10)
    currency = models.CharField(max_length=16)
    multiplier = models.DecimalField(**EXACT)
    side = models.CharField(max_length=5, choices=Side.choices)
    opened_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    # The instrument's trading day of the close (journal.lots.trading_day): the calendar's day.
    trading_day = models.DateField(null=True, blank=True)
    size = models.DecimalField(**EXACT)
    entry_average = models.DecimalField(**EXACT)
    exit_average = models.DecimalField(**EXACT, null=True, blank=True)
    open_quantity = models.DecimalField(**EXACT, default=0)
    open_average = models.DecimalField(**EXACT, null=True, blank=True)
    gross_pnl = models.DecimalField(**EXACT)
    fees = models.DecimalField(**EXACT)
    net_pnl = models.DecimalField(**EXACT)
    # Fees charged in other currencies than `currency`, {currency: amount as text}: not in net_pnl.
    other_fees = models.JSONField(default=dict, blank=True)
    # In the account's base currency; null when a fill of the round trip carries no FX rate.
    gross_pnl_base = models.DecimalField(**EXACT, null=True, blank=True)
    net_pnl_base = models.DecimalField(**EXACT, null=True, blank=True)
    fill_count = models.PositiveIntegerField()
    fills = models.ManyToManyField(Trade, related_name="round_trips")

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [
            models.Index(fields=["account", "-opened_at"], name="roundtrip_account_opened"),
            models.Index(fields=["account", "trading_day"], name="roundtrip_account_day"),
            models.Index(fields=["account", "symbol"], name="roundtrip_account_symbol"),
        ]

    def __str__(self):
        return f"{self.side} {self.size} {self.symbol} {self.opened_at:%Y-%m-%d %H:%M}"

    @property
    def duration(self):
        return self.closed_at - self.opened_at if self.closed_at else None


@cache
def _known_time_zones() -> frozenset[str]:
    # Scanning the tz database is slow and it does not change while the process runs.
    return frozenset(zoneinfo.available_timezones())


@cache
def _places() -> frozenset[str]:
    """The tz database's own pick of zones to offer (zone.tab: one per region of each country, current names).

    It leaves out aliases and oddities a trader never means — US/Eastern, Etc/GMT+5, Factory,
    localtime, Asia/Calcutta — which all stay valid for a profile that has one.
    """
    table = (resources.files("tzdata.zoneinfo") / "zone.tab").read_text()
    rows = (line.split("\t") for line in table.splitlines() if line and not line.startswith("#"))
    return frozenset(row[2] for row in rows) & _known_time_zones()


def time_zone_choices(current: str | None = None) -> list:
    """UTC, then the places grouped by region (with the trader's current zone, whatever it is)."""
    names = set(_places())
    if current and current != "UTC":
        names.add(current)
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(names):
        region, _, place = name.partition("/")
        groups.setdefault(region, []).append((name, place.replace("_", " ")))
    return [("UTC", "UTC"), *groups.items()]


def validate_time_zone(value: str) -> None:
    if value not in _known_time_zones():
        raise ValidationError(f"{value!r} is not a time zone name such as Europe/Berlin.", code="unknown_time_zone")


class TraderProfile(models.Model):
    """What a trader sets for themselves; today the time zone their pages show times in."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="trader_profile")
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])

    def __str__(self):
        return f"{self.user} ({self.time_zone})"
