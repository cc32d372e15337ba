"""The JSON API of broker connections, their sync logs, "Sync now" and the providers."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from brokers import catalogue, periodic_tasks, selectors, services, throttle
from brokers.models import INTERVAL_RULE, BrokerAccount, BrokerConnection, SyncLog
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class, provider_classes
from brokers.vocabulary import DisplayStatus, display_status


def drf_validation_error(exc: DjangoValidationError, credential_names: Iterable[str] = ()) -> ValidationError:
    """A services ValidationError in DRF's shape, {field: [rule]}, credential fields under "credentials".

    The providers name problems by credential field; nesting them mirrors the request body,
    so a client finds each message where it sent the value.
    """
    messages = exc.message_dict if hasattr(exc, "error_dict") else {NON_FIELD_ERRORS: exc.messages}
    credential_names = set(credential_names)
    detail: dict = {}
    credentials: dict = {}
    for field, errors in messages.items():
        if field in credential_names:
            credentials[field] = errors
        else:
            detail[api_settings.NON_FIELD_ERRORS_KEY if field == NON_FIELD_ERRORS else field] = errors
    if credentials:
        detail["credentials"] = credentials
    return ValidationError(detail)


def _credential_names(broker_type: str, submitted, top_level: Iterable[str]) -> set[str]:
    try:
        names = {f.name for f in get_provider_class(broker_type).credential_fields}
    except BrokerConfigurationError:
        names = set()
    # The provider also reports names it does not know, which can only come from the credentials.
    if isinstance(submitted, dict):
        names |= set(submitted)
    return names - set(top_level)


class IntervalField(serializers.IntegerField):
    """A JSON whole number; its range is the model's rule, applied by the services."""

    def __init__(self, **kwargs):
        # The bounds only document the range in the schema; the model enforces it.
        super().__init__(
            min_value=settings.SYNC_INTERVAL_SHORTEST_MIN, max_value=settings.SYNC_INTERVAL_LONGEST_MIN, **kwargs
        )
        self.validators = []

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            raise ValidationError([INTERVAL_RULE])
        return data


class AutoSyncField(serializers.BooleanField):
    """JSON true or false only: DRF would also take strings such as "yes"."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            raise ValidationError(["Auto-sync must be true or false."])
        return data


class TextField(serializers.CharField):
    """A JSON string only: DRF would turn {"label": 123} into "123"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise ValidationError(["Must be a string."])
        return super().to_internal_value(data)


def _credentials_field(**kwargs) -> serializers.DictField:
    return serializers.DictField(
        child=TextField(allow_blank=True, trim_whitespace=False),
        write_only=True,
        help_text="The provider's credential fields (see /api/providers/). Never returned.",
        **kwargs,
    )


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a 2xx that silently ignored one would look accepted."""

    def validate(self, attrs):
        submitted = self.initial_data if isinstance(self.initial_data, dict) else {}
        refused = sorted(set(submitted) - set(self.fields))
        if refused:
            shown = set(ConnectionSerializer.Meta.fields)
            raise ValidationError(
                {name: ["This field cannot be changed." if name in shown else "Unknown field."] for name in refused}
            )
        return attrs


class AccountSerializer(serializers.ModelSerializer):
    class Meta:
        model = BrokerAccount
        fields = ["id", "external_id", "name", "currency"]


class ConnectionSerializer(serializers.ModelSerializer):
    provider_name = serializers.CharField(read_only=True)
    display_status = serializers.SerializerMethodField()
    next_sync_at = serializers.SerializerMethodField()
    accounts = AccountSerializer(many=True, read_only=True)

    class Meta:
        model = BrokerConnection
        fields = [
            "id",
            "broker_type",
            "provider_name",
            "label",
            "environment",
            "status",
            "display_status",
            "sync_enabled",
            "sync_interval_min",
            "last_sync_at",
            "last_success_at",
            "last_sync_error",
            "next_sync_at",
            "next_attempt_at",
            "accounts",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(
            choices=DisplayStatus.values,
            help_text="NEW: never synced yet. SYNCING: a run is on, or waits out a broker's limit "
            "(next_attempt_at says until when). RETRYING: an attempt failed; last_sync_error says which and "
            "why, next_attempt_at when the next one runs. CONNECTED: the last run succeeded. PARTIAL: it "
            "succeeded but an account failed (last_sync_error names it). ERROR: the last run failed after its "
            "last attempt. PAUSED: auto-sync is off.",
        )
    )
    def get_display_status(self, connection: BrokerConnection) -> str:
        return display_status(connection)

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_next_sync_at(self, connection: BrokerConnection) -> str | None:
        # A list passes every PeriodicTask in the context, so it costs one query, not one per row.
        task = selectors.periodic_task_of(connection, self.context.get("periodic_tasks", {}))
        when = selectors.next_sync_at(connection, task)
        return None if when is None else serializers.DateTimeField().to_representation(when)


class ConnectionCreateSerializer(StrictSerializer):
    broker_type = TextField(max_length=40, help_text="A provider key from /api/providers/.")
    label = TextField(max_length=100)
    environment = TextField(
        max_length=20,
        required=False,
        allow_blank=True,
        help_text="One of the provider's environments; default its first. Empty for a broker that has none.",
    )
    credentials = _credentials_field()
    sync_enabled = AutoSyncField(default=True)
    sync_interval_min = IntervalField(default=settings.SYNC_INTERVAL_DEFAULT_MIN)


class ConnectionUpdateSerializer(StrictSerializer):
    label = TextField(max_length=100, required=False)
    sync_enabled = AutoSyncField(required=False)
    sync_interval_min = IntervalField(required=False)
    credentials = _credentials_field(required=False)


class SyncLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncLog
        fields = [
            "id",
            "trigger",
            "status",
            "started_at",
            "finished_at",
            "duration_ms",
            "trades_imported",
            "trades_skipped",
            "attempt",
            "task_id",
            "error_kind",
            "error_message",
            "detail",
            "undone_at",
            "trades_undone",
        ]
        read_only_fields = fields


class SyncQueuedSerializer(serializers.Serializer):
    task_id = serializers.CharField(help_text="The run's id: its SyncLog rows carry it as task_id.")
    logs_url = serializers.URLField(help_text="This connection's logs, filtered to this run.")


class RateLimitedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    retry_after = serializers.IntegerField(help_text="Seconds to wait before the next request (also in Retry-After).")


class ChoiceSerializer(serializers.Serializer):
    value = serializers.CharField()
    label = serializers.CharField()


class CredentialFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    secret = serializers.BooleanField()
    required = serializers.BooleanField()
    help_text = serializers.CharField()
    choices = ChoiceSerializer(many=True)


class BrokerageSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The brokerage, exchange or prop firm as traders know it.")
    listed_as = serializers.CharField(
        help_text="Its name through this provider, where that names one market of it (Binance COIN-M is a way into "
        "Binance) or its crypto side (Alpaca Crypto)."
    )
    counted_under = serializers.ChoiceField(
        choices=catalogue.ROUTES,
        allow_null=True,
        help_text="The route `manage.py list_brokers` counts it under (once, however many reach it); null for the "
        "demo broker and MetaTrader's any-broker route, which are not counted.",
    )
    market = serializers.ChoiceField(choices=catalogue.MARKETS, help_text="What it trades, as the picker groups it.")
    connects = serializers.CharField(help_text="How: API key, sign in at the broker, through SnapTrade or MetaApi.")
    needs = serializers.CharField(help_text="What the trader needs before starting.")
    query = serializers.DictField(
        child=serializers.CharField(),
        help_text="What choosing it preselects: ProjectX's `firm` (send it in `credentials`), SnapTrade's "
        "`brokerage` slug (the portal opens on it).",
    )
    add_url = serializers.CharField(help_text="The add page of this brokerage, with those values chosen.")


class ProviderSerializer(serializers.Serializer):
    key = serializers.CharField()
    display_name = serializers.CharField()
    environments = ChoiceSerializer(many=True)
    credential_fields = CredentialFieldSerializer(many=True)
    brokerages = BrokerageSerializer(
        many=True,
        help_text="The brokerages reached through this provider: the one catalogue the broker picker shows and "
        "`manage.py list_brokers` counts.",
    )


def _choices(pairs) -> list[dict[str, str]]:
    return [{"value": value, "label": label} for value, label in pairs]


def _provider_data(provider_class) -> dict:
    return {
        "key": provider_class.key,
        "display_name": provider_class.display_name,
        "environments": _choices(provider_class.environments),
        "credential_fields": [
            {
                "name": f.name,
                "label": f.label,
                "secret": f.secret,
                "required": f.required,
                "help_text": f.help_text,
                "choices": _choices(f.choices),
            }
            for f in provider_class.credential_fields
        ],
    }


def _rate_limited(detail: str, wait: int) -> Response:
    return Response(
        {"detail": detail, "retry_after": wait},
        status=status.HTTP_429_TOO_MANY_REQUESTS,
        headers={"Retry-After": str(wait)},
    )


class ConnectionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """The trader's own broker connections."""

    serializer_class = ConnectionSerializer
    lookup_value_converter = "int"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    # JSON only: an HTML form re-rendered after a refused request would show the typed credentials.
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def get_queryset(self):
        return BrokerConnection.objects.filter(owner=self.request.user).prefetch_related("accounts")

    def _shown(self, connection_id: int) -> dict:
        return ConnectionSerializer(
            self.get_queryset().get(pk=connection_id), context=self.get_serializer_context()
        ).data

    def list(self, request, *args, **kwargs):
        connections = list(self.get_queryset())
        tasks = selectors.periodic_tasks_for(connections)
        context = {**self.get_serializer_context(), "periodic_tasks": tasks}
        return Response(ConnectionSerializer(connections, many=True, context=context).data)

    @extend_schema(request=ConnectionCreateSerializer, responses={201: ConnectionSerializer})
    @method_decorator(sensitive_variables())
    def create(self, request, *args, **kwargs):
        serializer = ConnectionCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            connection = services.connection_create(owner=request.user, **data)
        except DjangoValidationError as exc:
            raise drf_validation_error(
                exc, _credential_names(data["broker_type"], data["credentials"], serializer.fields)
            ) from None
        return Response(self._shown(connection.pk), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=ConnectionUpdateSerializer, responses={200: ConnectionSerializer, 429: RateLimitedSerializer}
    )
    @method_decorator(sensitive_variables())
    def partial_update(self, request, *args, **kwargs):
        connection = self.get_object()
        serializer = ConnectionUpdateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data.get("sync_enabled") and not connection.sync_enabled:
            # Switching auto-sync on syncs at once: it shares the allowance of Sync now.
            wait = throttle.sync_now_wait(request, connection.pk)
            if wait is not None:
                return _rate_limited(
                    f"Auto-sync was switched on too often for this connection (each time starts a sync); "
                    f"try again in {wait} seconds.",
                    wait,
                )
        try:
            services.connection_update(connection.pk, **serializer.validated_data)
        except DjangoValidationError as exc:
            names = _credential_names(
                connection.broker_type, serializer.validated_data.get("credentials"), serializer.fields
            )
            raise drf_validation_error(exc, names) from None
        except BrokerConnection.DoesNotExist:
            # Deleted by another request between the lookup and the locked update.
            raise NotFound() from None
        return Response(self._shown(connection.pk))

    def perform_destroy(self, instance):
        services.connection_delete(instance.pk)


class ConnectionSyncView(APIView):
    """Queue a sync of one connection now, at most SYNC_NOW_RATE_LIMIT times per trader and connection."""

    renderer_classes = [JSONRenderer]

    @extend_schema(
        request=None,
        responses={202: SyncQueuedSerializer, 429: RateLimitedSerializer},
        operation_id="connections_sync_create",
    )
    def post(self, request, pk: int):
        connection = get_object_or_404(BrokerConnection, pk=pk, owner=request.user)
        wait = throttle.sync_now_wait(request, connection.pk)
        if wait is not None:
            return _rate_limited(f"Too many syncs requested for this connection; try again in {wait} seconds.", wait)
        task_id = periodic_tasks.request_sync_now(connection.pk, trigger=SyncLog.Trigger.MANUAL.value)
        logs_url = request.build_absolute_uri(reverse("api:connection-logs", args=[connection.pk]))
        return Response(
            {"task_id": task_id, "logs_url": f"{logs_url}?task_id={task_id}"}, status=status.HTTP_202_ACCEPTED
        )


class SyncLogPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


@extend_schema(
    parameters=[OpenApiParameter("task_id", str, description="Only the rows of this run (the id Sync now returned).")]
)
class ConnectionLogList(generics.ListAPIView):
    """One connection's sync runs, newest first."""

    serializer_class = SyncLogSerializer
    pagination_class = SyncLogPagination
    queryset = SyncLog.objects.none()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.queryset
        connection = get_object_or_404(BrokerConnection, pk=self.kwargs["pk"], owner=self.request.user)
        logs = connection.sync_logs.order_by("-started_at", "-id")
        task_id = self.request.query_params.get("task_id")
        return logs.filter(task_id=task_id) if task_id else logs


class ProviderList(APIView):
    """The brokers a trader can connect, with the fields each asks for."""

    @extend_schema(responses=ProviderSerializer(many=True))
    def get(self, request):
        reached: dict[str, list[dict]] = {}
        for brokerage in catalogue.catalogue().brokerages:
            for way in brokerage.ways:
                reached.setdefault(way.provider, []).append(
                    {
                        "name": brokerage.name,
                        "listed_as": way.name,
                        "counted_under": brokerage.counted_under,
                        "market": brokerage.market,
                        "connects": way.how,
                        "needs": way.needs,
                        "query": dict(way.chosen),
                        "add_url": way.url,
                    }
                )
        data = [_provider_data(cls) | {"brokerages": reached.get(key, [])} for key, cls in provider_classes().items()]
        return Response(ProviderSerializer(data, many=True).data)
