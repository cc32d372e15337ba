"""Every write to a connection goes through here, so its schedule always follows.

Pages, the admin, the API and the commands call these; each validates first (a
ValidationError naming the field and the rule, nothing saved) and changes the connection
and its PeriodicTask in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from brokers import schedules
from brokers.models import BrokerConnection
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_broker_provider, get_provider_class
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerCredentials

INTERVAL_RULE = (
    f"Sync interval must be a whole number of minutes from {settings.SYNC_INTERVAL_MIN} "
    f"to {settings.SYNC_INTERVAL_MAX}."
)


def validate_interval(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError({"sync_interval_min": INTERVAL_RULE}, code="invalid")
    if not settings.SYNC_INTERVAL_MIN <= value <= settings.SYNC_INTERVAL_MAX:
        raise ValidationError({"sync_interval_min": INTERVAL_RULE}, code="out_of_range")
    return value


def validate_enabled(value) -> bool:
    if not isinstance(value, bool):
        raise ValidationError({"sync_enabled": "Auto-sync must be true or false."}, code="invalid")
    return value


def validate_credentials(broker_type: str, credentials: Mapping[str, str], environment: str) -> None:
    try:
        provider_class = get_provider_class(broker_type)
    except BrokerConfigurationError as exc:
        raise ValidationError({"broker_type": str(exc)}, code="unknown_broker") from None
    problems = provider_class.validate_credentials(credentials, environment)
    if problems:
        raise ValidationError(problems, code="invalid_credentials")


def _locked(connection_id: int) -> BrokerConnection:
    return BrokerConnection.objects.select_for_update().get(pk=connection_id)


@transaction.atomic
def connection_create(
    *,
    owner,
    broker_type: str,
    label: str,
    credentials: Mapping[str, str],
    environment: str = "",
    sync_enabled: bool = True,
    sync_interval_min: int = settings.SYNC_INTERVAL_DEFAULT_MIN,
    auth: AuthResult | None = None,
) -> BrokerConnection:
    """Create a connection and its schedule; with auto-sync on, the first sync starts at once.

    A broker that connects by OAuth sign-in takes no credentials but the session (auth) its
    callback obtained; without one it is refused, since nothing could ever sync.
    """
    validate_enabled(sync_enabled)
    validate_interval(sync_interval_min)
    environment = environment or _default_environment(broker_type)
    validate_credentials(broker_type, credentials, environment)
    if get_provider_class(broker_type).oauth is not None and auth is None:
        name = get_provider_class(broker_type).display_name
        raise ValidationError(
            {"broker_type": f"{name} connects by signing in at {name}: use Connect with {name} on the brokers page."},
            code="oauth_only",
        )
    connection = BrokerConnection(
        owner=owner,
        broker_type=broker_type,
        label=(label or "").strip(),
        environment=environment,
        sync_enabled=sync_enabled,
        sync_interval_min=sync_interval_min,
    )
    connection.credentials = {k: v.strip() for k, v in credentials.items() if v is not None}
    connection.auth = auth
    connection.full_clean()
    connection.save()
    schedules.sync_schedule(connection)
    if connection.sync_enabled:
        schedules.request_sync_now(connection.pk, trigger="manual")
    return connection


def _default_environment(broker_type: str) -> str:
    try:
        envs = get_provider_class(broker_type).environments
    except BrokerConfigurationError:
        return ""
    return envs[0][0] if envs else ""


@transaction.atomic
def update_sync_enabled(connection_id: int, enabled: bool) -> BrokerConnection:
    """Switch automatic sync on or off; switching it on also syncs right away."""
    validate_enabled(enabled)
    connection = _locked(connection_id)
    was_enabled = connection.sync_enabled
    connection.sync_enabled = enabled
    connection.save(update_fields=["sync_enabled", "updated_at"])
    schedules.sync_schedule(connection)
    if enabled and not was_enabled and connection.schedule_active:
        schedules.request_sync_now(connection.pk, trigger="manual")
    return connection


@transaction.atomic
def update_sync_interval(connection_id: int, interval_min: int) -> BrokerConnection:
    validate_interval(interval_min)
    connection = _locked(connection_id)
    connection.sync_interval_min = interval_min
    connection.save(update_fields=["sync_interval_min", "updated_at"])
    schedules.sync_schedule(connection)
    return connection


@transaction.atomic
def connection_update(
    connection_id: int,
    *,
    label: str | None = None,
    credentials: Mapping[str, str] | None = None,
    sync_enabled: bool | None = None,
    sync_interval_min: int | None = None,
) -> BrokerConnection:
    """Change any of label, credentials, auto-sync and interval at once (all validated first).

    New credentials clear a refused login and the stored session, so sync resumes by itself.
    """
    if sync_enabled is not None:
        validate_enabled(sync_enabled)
    if sync_interval_min is not None:
        validate_interval(sync_interval_min)
    connection = _locked(connection_id)
    if credentials is not None:
        validate_credentials(connection.broker_type, credentials, connection.environment)
    if label is not None:
        connection.label = label.strip()
    resume = False
    if credentials is not None:
        connection.credentials = {k: v.strip() for k, v in credentials.items() if v is not None}
        resume = _reauthorised(connection, None)
    turned_on = sync_enabled is True and not connection.sync_enabled
    if sync_enabled is not None:
        connection.sync_enabled = sync_enabled
    if sync_interval_min is not None:
        connection.sync_interval_min = sync_interval_min
    connection.full_clean()
    connection.save()
    schedules.sync_schedule(connection)
    if connection.schedule_active and (turned_on or resume):
        schedules.request_sync_now(connection.pk, trigger="manual")
    return connection


def _reauthorised(connection: BrokerConnection, auth: AuthResult | None) -> bool:
    """Take a new session (None: log in afresh) and clear a refused login; True if sync was on hold."""
    connection.auth = auth
    was_held = connection.credentials_rejected
    connection.credentials_rejected = False
    if connection.status == BrokerConnection.Status.ERROR:
        connection.last_sync_error = ""
        connection.status = BrokerConnection.Status.CONNECTED
    return was_held


@transaction.atomic
def connection_reconnect(connection_id: int, auth: AuthResult) -> BrokerConnection:
    """Re-authorise a connection after a new sign-in: the same accounts, cursor, trades, history
    and schedule, and a sync at once."""
    connection = _locked(connection_id)
    _reauthorised(connection, auth)
    connection.save()
    schedules.sync_schedule(connection)
    if connection.schedule_active:
        schedules.request_sync_now(connection.pk, trigger="manual")
    return connection


@transaction.atomic
def connection_delete(connection_id: int) -> None:
    """Delete a connection with its accounts, trades, logs and schedule."""
    schedules.delete_schedule(connection_id)
    BrokerConnection.objects.filter(pk=connection_id).delete()


def verify_credentials(
    *, broker_type: str, credentials: Mapping[str, str], environment: str = ""
) -> list[BrokerAccountInfo]:
    """Log in and list accounts without saving anything; raises ValidationError or BrokerError."""
    environment = environment or _default_environment(broker_type)
    validate_credentials(broker_type, credentials, environment)
    provider = get_broker_provider(broker_type, environment)
    auth = provider.authenticate(BrokerCredentials(values=dict(credentials), environment=environment))
    return provider.get_accounts(auth)
