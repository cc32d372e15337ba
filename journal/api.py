"""The JSON API of the journal: the trader's trades and round trips (cursor-paginated), open positions, the calendar."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time

from django.db import models
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from journal.models import EARLIEST_TRADE_DATE, LATEST_TRADE_DATE, REPORTED_FIELDS, TRADE_DATE_RULE, RoundTrip, Trade
from journal.numbers import plain
from journal.selectors import calendar_days, open_positions_of, round_trips_visible_to, trades_visible_to, valued

# Ids are 64-bit: a larger one cannot exist, and the database would refuse it with an error.
MAX_ID = 2**63 - 1
EARLIEST = datetime.combine(EARLIEST_TRADE_DATE, time.min, UTC)
LATEST = datetime.combine(LATEST_TRADE_DATE, time.max, UTC)


def trade_moment(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise serializers.ValidationError(TRADE_DATE_RULE)
    return value


class TradeFilterSerializer(serializers.Serializer):
    account = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Only this account (its id)."
    )
    connection = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Only this connection (its id)."
    )
    symbol = serializers.CharField(required=False, max_length=64, help_text="Only this symbol (any case).")
    since = serializers.DateTimeField(
        required=False, validators=[trade_moment], help_text="Executed at or after this moment (ISO 8601)."
    )
    until = serializers.DateTimeField(
        required=False, validators=[trade_moment], help_text="Executed before this moment (ISO 8601)."
    )


class PlainDecimalField(serializers.DecimalField):
    """Every digit the broker sent and no padding: "0.000732004", not "0.000732004000000000"."""

    def to_representation(self, value):
        return plain(value)


class PlainDecimalsSerializer(serializers.ModelSerializer):
    """A model's decimals as PlainDecimalField writes them."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DecimalField: PlainDecimalField,
    }


class TradeSerializer(PlainDecimalsSerializer):
    account_external_id = serializers.CharField(source="account.external_id", read_only=True)
    connection = serializers.IntegerField(source="account.connection_id", read_only=True)

    class Meta:
        model = Trade
        # The broker's own record (raw) stays in the admin: it may hold fields no trader needs.
        fields = [
            "id",
            "connection",
            "account",
            "account_external_id",
            *(name for name in REPORTED_FIELDS if name != "raw"),
            "imported_at",
        ]
        read_only_fields = fields


class TradePagination(CursorPagination):
    # A cursor, not page numbers: syncs keep inserting newer trades, which would shift every page.
    ordering = ("-executed_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500
    invalid_cursor = "Invalid cursor: use the next or previous link of an earlier answer."

    def decode_cursor(self, request):
        """The cursor, or a 400 naming it: a tampered one must not reach the database."""
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: [self.invalid_cursor]}) from None
        if cursor is not None and cursor.position is not None:
            try:
                moment = parse_datetime(cursor.position)
            except ValueError:
                moment = None
            if moment is None or moment.tzinfo is None or not EARLIEST <= moment <= LATEST:
                raise ValidationError({self.cursor_query_param: [self.invalid_cursor]})
        return cursor


class TradeList(generics.ListAPIView):
    """The trader's trades (deleted ones left out), newest first."""

    serializer_class = TradeSerializer
    pagination_class = TradePagination
    queryset = Trade.objects.none()

    @extend_schema(parameters=[TradeFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        filters = TradeFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        trades = trades_visible_to(self.request.user).select_related("account")
        if "account" in wanted:
            trades = trades.filter(account_id=wanted["account"])
        if "connection" in wanted:
            trades = trades.filter(account__connection_id=wanted["connection"])
        if "symbol" in wanted:
            trades = trades.filter(symbol__iexact=wanted["symbol"])
        if "since" in wanted:
            trades = trades.filter(executed_at__gte=wanted["since"])
        if "until" in wanted:
            trades = trades.filter(executed_at__lt=wanted["until"])
        return trades


class RoundTripFilterSerializer(serializers.Serializer):
    account = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Only this account (its id)."
    )
    symbol = serializers.CharField(required=False, max_length=64, help_text="Only this symbol (any case).")
    open = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Only open (true) or closed (false)."
    )


class RoundTripSerializer(PlainDecimalsSerializer):
    account_external_id = serializers.CharField(source="account.external_id", read_only=True)
    fills = serializers.PrimaryKeyRelatedField(many=True, read_only=True, help_text="The ids of its trades.")

    class Meta:
        model = RoundTrip
        fields = [
            "id",
            "account",
            "account_external_id",
            "symbol",
            "expiry",
            "strike",
            "option_right",
            "asset_class",
            "currency",
            "multiplier",
            "side",
            "opened_at",
            "closed_at",
            "trading_day",
            "size",
            "entry_average",
            "exit_average",
            "open_quantity",
            "open_average",
            "gross_pnl",
            "fees",
            "net_pnl",
            "other_fees",
            "gross_pnl_base",
            "net_pnl_base",
            "fill_count",
            "fills",
        ]
        read_only_fields = fields


class RoundTripPagination(TradePagination):
    ordering = ("-opened_at", "-id")


class RoundTripList(generics.ListAPIView):
    """The trader's round trips from flat to flat, newest first; an open one is an open position."""

    serializer_class = RoundTripSerializer
    pagination_class = RoundTripPagination
    queryset = RoundTrip.objects.none()

    @extend_schema(parameters=[RoundTripFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        filters = RoundTripFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        wanted = filters.validated_data
        trips = round_trips_visible_to(self.request.user).prefetch_related("fills")
        if "account" in wanted:
            trips = trips.filter(account_id=wanted["account"])
        if "symbol" in wanted:
            trips = trips.filter(symbol__iexact=wanted["symbol"])
        if wanted.get("open") is not None:
            trips = trips.filter(closed_at__isnull=wanted["open"])
        return trips


class PositionSerializer(RoundTripSerializer):
    mark_price = PlainDecimalField(
        max_digits=38,
        decimal_places=18,
        read_only=True,
        allow_null=True,
        help_text="The broker's last reported price of one unit; null when its syncs gave none.",
    )
    mark_as_of = serializers.DateTimeField(read_only=True, allow_null=True, help_text="When that price held.")
    unrealised_pnl = PlainDecimalField(
        max_digits=38,
        decimal_places=18,
        read_only=True,
        allow_null=True,
        help_text="(mark_price − open_average) × open_quantity × multiplier, in the instrument's currency; "
        "null (unknown) without a price.",
    )

    class Meta(RoundTripSerializer.Meta):
        fields = [*RoundTripSerializer.Meta.fields, "mark_price", "mark_as_of", "unrealised_pnl"]
        read_only_fields = fields


class PositionList(generics.ListAPIView):
    """The trader's open positions: the round trips not yet back to flat, valued at the broker's last price."""

    serializer_class = PositionSerializer
    pagination_class = None
    queryset = RoundTrip.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        return valued(open_positions_of(self.request.user).prefetch_related("fills"))


class CalendarQuerySerializer(serializers.Serializer):
    month = serializers.RegexField(r"^\d{4}-(0[1-9]|1[0-2])$", help_text="The month, YYYY-MM.")
    account = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text="Only this account (its id)."
    )

    def validate_month(self, value):
        if not EARLIEST_TRADE_DATE.year <= int(value[:4]) <= LATEST_TRADE_DATE.year:
            raise serializers.ValidationError(TRADE_DATE_RULE)
        return value


class CalendarDaySerializer(serializers.Serializer):
    trading_day = serializers.DateField()
    round_trips = serializers.IntegerField(help_text="Round trips closed on this trading day.")
    net_pnl = serializers.DictField(
        child=PlainDecimalField(max_digits=38, decimal_places=18),
        help_text="Net P&L after fees, per currency.",
    )


class CalendarView(generics.GenericAPIView):
    """Each trading day of a month with round trips closed: how many, and their net P&L per currency."""

    serializer_class = CalendarDaySerializer
    pagination_class = None

    @extend_schema(parameters=[CalendarQuerySerializer], responses=CalendarDaySerializer(many=True))
    def get(self, request):
        query = CalendarQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        year, month = map(int, query.validated_data["month"].split("-"))
        first = date(year, month, 1)
        last = date(year, month, calendar.monthrange(year, month)[1])
        days = calendar_days(request.user, first, last, query.validated_data.get("account"))
        rows = [
            {"trading_day": day, "round_trips": values["count"], "net_pnl": values["net"]}
            for day, values in sorted(days.items())
        ]
        return Response(CalendarDaySerializer(rows, many=True).data)
