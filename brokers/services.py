"""Every write to a connection goes through here, so its schedule always follows.

Pages, the admin, the API and the commands call these; each validates first with the
model's own rules (full_clean: a ValidationError naming the field and the rule, nothing
saved) and changes the connection and its PeriodicTask in one transaction. The callers
only translate that error into their own shape.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Mapping
from datetime import timedelta

import structlog
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from brokers import periodic_tasks
from brokers.crypto import CredentialsUnreadable
from brokers.models import INTERVAL_RULE, ApiToken, BrokerConnection, SnapTradeUser, SyncLog
from brokers.providers import snaptrade
from brokers.providers.errors import BrokerConfigurationError, BrokerError, BrokerRateLimitError, BrokerSetupError
from brokers.providers.registry import get_broker_provider, get_provider_class
from brokers.providers.snaptrade import SnapTradeKey
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerCredentials

log = structlog.get_logger("brokers.services")


def validate_credentials(broker_type: str, credentials: Mapping[str, str], environment: str) -> None:
    try:
        provider_class = get_provider_class(broker_type)
    except BrokerConfigurationError as exc:
        raise ValidationError({"broker_type": str(exc)}, code="unknown_broker") from None
    problems = provider_class.validate_credentials(credentials, environment)
    if problems:
        raise ValidationError(problems, code="invalid_credentials")


def validate_fields(**values) -> None:
    """The model's rules for just these fields, e.g. before a command prompts for secrets."""
    exclude = {f.name for f in BrokerConnection._meta.fields} - set(values)
    BrokerConnection(**values).clean_fields(exclude=exclude)


def _full_clean(connection: BrokerConnection, credentials: Mapping[str, str] | None = None) -> None:
    """The model's rules, and the provider's for the credentials, reported together."""
    errors: dict[str, list] = {}
    try:
        connection.full_clean()
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if credentials is not None and "broker_type" not in errors:
        try:
            validate_credentials(connection.broker_type, credentials, connection.environment)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(m for m in messages if m not in errors.get(field, []))
    if errors:
        raise ValidationError(errors)


def _stripped(credentials: Mapping[str, str]) -> dict[str, str]:
    return {k: v.strip() if isinstance(v, str) else v for k, v in credentials.items() if v is not None}


def _locked(connection_id: int) -> BrokerConnection:
    return BrokerConnection.objects.select_for_update().get(pk=connection_id)


@sensitive_variables()
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
    refuse_oauth_without_sign_in(broker_type, auth)
    connection = BrokerConnection(
        owner=owner,
        broker_type=broker_type,
        label=label.strip() if isinstance(label, str) else label,
        environment=environment or _default_environment(broker_type),
        sync_enabled=sync_enabled,
        sync_interval_min=sync_interval_min,
    )
    stripped = _stripped(credentials)
    _full_clean(connection, stripped)
    connection.credentials = stripped
    connection.auth = auth or _provisioned(connection, stripped)
    connection.save()
    periodic_tasks.sync_schedule(connection)
    if connection.sync_enabled:
        periodic_tasks.request_sync_now(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    return connection


@sensitive_variables()
def _provisioned(connection: BrokerConnection, credentials: Mapping[str, str]) -> AuthResult | None:
    """For a broker that provisions at login (MetaApi), log in now: a refusal is the form's error, nothing saved."""
    provider = get_broker_provider(connection.broker_type, connection.environment)
    if not provider.provisions:
        return None
    try:
        return provider.authenticate(BrokerCredentials(values=dict(credentials), environment=connection.environment))
    except BrokerError as exc:
        message = exc.message
        if isinstance(exc, BrokerRateLimitError):
            message += f" Try again in {math.ceil(exc.retry_after or 1)} s."
        raise ValidationError({exc.field or NON_FIELD_ERRORS: message}, code=exc.kind) from None


def refuse_oauth_without_sign_in(broker_type: str, auth: AuthResult | None) -> None:
    try:
        provider_class = get_provider_class(broker_type)
    except BrokerConfigurationError:
        return  # _full_clean names the unknown broker type
    if provider_class.signs_in_at_broker() and auth is None:
        name = provider_class.display_name
        raise ValidationError(
            {"broker_type": f"{name} connects by signing in at {name}: use Connect with {name} on the brokers page."},
            code="oauth_only",
        )


def refuse_credentials_of_sign_in(broker_type: str) -> None:
    """A connection made on the broker's pages holds what its sign-in gave (a SnapTrade link id, ...):
    written over, the link would be lost for good and later connects would adopt it as a new one."""
    provider_class = get_provider_class(broker_type)
    if provider_class.signs_in_at_broker():
        name = provider_class.display_name
        raise ValidationError(
            {"credentials": f"A {name} connection has no credentials to write: press Reconnect to sign in again."},
            code="signs_in_at_broker",
        )


def _default_environment(broker_type: str) -> str:
    try:
        return get_provider_class(broker_type).default_environment()
    except BrokerConfigurationError:
        return ""


def update_sync_enabled(connection_id: int, enabled: bool) -> BrokerConnection:
    """Switch automatic sync on or off; switching it on also syncs right away."""
    if enabled is None:
        raise ValidationError({"sync_enabled": "Auto-sync must be true or false."}, code="invalid")
    return connection_update(connection_id, sync_enabled=enabled)


def update_sync_interval(connection_id: int, interval_min: int) -> BrokerConnection:
    if interval_min is None:
        raise ValidationError({"sync_interval_min": INTERVAL_RULE}, code="invalid")
    return connection_update(connection_id, sync_interval_min=interval_min)


@sensitive_variables()
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
    The same credentials saved again keep the session (a Tradovate login would cost one of the
    user's two sessions), unless the broker refused them: then saving means "try again".
    """
    connection = _locked(connection_id)
    if label is not None:
        connection.label = label.strip() if isinstance(label, str) else label
    turned_on = sync_enabled is True and not connection.sync_enabled
    if sync_enabled is not None:
        connection.sync_enabled = sync_enabled
    if sync_interval_min is not None:
        connection.sync_interval_min = sync_interval_min
    if credentials is not None:
        refuse_credentials_of_sign_in(connection.broker_type)
    stripped = None if credentials is None else _stripped(credentials)
    _full_clean(connection, stripped)
    resume = False
    if stripped is not None and (connection.credentials_rejected or stripped != _saved_credentials(connection)):
        connection.credentials = stripped
        resume = _reauthorised(connection, _provisioned(connection, stripped))
    connection.save()
    periodic_tasks.sync_schedule(connection)
    if connection.schedule_active and (turned_on or resume):
        periodic_tasks.request_sync_now(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    return connection


def _reauthorised(connection: BrokerConnection, auth: AuthResult | None) -> bool:
    """Take a new session (None: log in afresh) and clear a refused login; True if sync was on hold."""
    connection.auth = auth
    connection.authorised_at = timezone.now()
    was_held = connection.credentials_rejected
    connection.credentials_rejected = False
    if connection.status == BrokerConnection.Status.ERROR:
        connection.last_sync_error = ""
        connection.status = BrokerConnection.Status.CONNECTED
    return was_held


@sensitive_variables()
@transaction.atomic
def connection_reconnect(connection_id: int, auth: AuthResult) -> BrokerConnection:
    """Re-authorise a connection after a new sign-in: the same accounts, cursor, trades, history
    and schedule, and a sync at once."""
    connection = _locked(connection_id)
    _reauthorised(connection, auth)
    connection.save()
    periodic_tasks.sync_schedule(connection)
    if connection.schedule_active:
        periodic_tasks.request_sync_now(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    return connection


def _saved_credentials(connection: BrokerConnection) -> dict[str, str] | None:
    try:
        return connection.credentials
    except CredentialsUnreadable:
        return None  # no key opens them: whatever was typed replaces them


def connection_delete(connection_id: int) -> None:
    """Delete a connection with its accounts, trades, logs and schedule, and what it provisioned at the broker."""
    _forget_at_broker(connection_id)
    _delete(connection_id)


@transaction.atomic
def _delete(connection_id: int) -> None:
    periodic_tasks.delete_schedule(connection_id)
    BrokerConnection.objects.filter(pk=connection_id).delete()


@sensitive_variables()
def _forget_at_broker(connection_id: int) -> None:
    connection = BrokerConnection.objects.filter(pk=connection_id).first()
    try:
        provider = get_broker_provider(connection.broker_type, connection.environment) if connection else None
    except BrokerConfigurationError:
        return  # a broker no longer installed: nothing of ours can reach it
    if provider is None or not provider.provisions:
        return
    try:
        provider.forget(connection.broker_credentials(), connection.auth)
    except (BrokerError, CredentialsUnreadable) as exc:
        # The trader asked for the connection to go: it goes, and the operator learns what stayed behind.
        log.warning(
            "broker_provision_not_removed", connection_id=connection_id, broker=connection.broker_type, error=str(exc)
        )


@sensitive_variables()
def verify_credentials(
    *, broker_type: str, credentials: Mapping[str, str], environment: str = ""
) -> list[BrokerAccountInfo]:
    """Log in and list accounts without saving anything; raises ValidationError or BrokerError."""
    environment = environment or _default_environment(broker_type)
    validate_credentials(broker_type, credentials, environment)
    provider = get_broker_provider(broker_type, environment)
    auth = provider.authenticate(BrokerCredentials(values=dict(_stripped(credentials)), environment=environment))
    return provider.get_accounts(auth)


# --- SnapTrade registrations: one SnapTrade user per trader, under the key that signs their requests ---


def snaptrade_key_of(user: SnapTradeUser) -> SnapTradeKey:
    if user.personal_key:
        return SnapTradeKey(user.client_id, user.secrets["consumer_key"], personal=True)
    return snaptrade.operator_key()


def snaptrade_key_for(owner) -> SnapTradeKey | None:
    """The key the trader's requests are (or will be) signed with; None when neither they nor the operator has one."""
    user = SnapTradeUser.objects.filter(owner=owner).first()
    return snaptrade_key_of(user) if user is not None else snaptrade.operator_key()


def snaptrade_user_for(owner) -> SnapTradeUser | None:
    """The trader's SnapTrade user, registered now with the operator's key if there is none yet.

    None when neither the trader nor the operator has a key. A registration made under an
    operator key that has since changed cannot be used and is reported as a setup error.
    """
    user = SnapTradeUser.objects.filter(owner=owner).first()
    key = snaptrade.operator_key()
    if user is not None:
        if not user.personal_key and (key is None or key.client_id != user.client_id):
            raise BrokerSetupError(
                "Your SnapTrade registration was made with an API key this installation no longer has; "
                "ask the operator.",
                provider=snaptrade.SnapTradeProvider.key,
            )
        return user
    if key is None:
        return None
    return snaptrade_user_register(owner, key)


@sensitive_variables()
def snaptrade_user_register(owner, key: SnapTradeKey) -> SnapTradeUser:
    """Register the trader at SnapTrade under `key` (which checks the key) and keep the user secret encrypted."""
    # A random id: unique across installations, and it tells SnapTrade nothing about the trader.
    user_id = f"journal-{uuid.uuid4()}"
    secret = get_broker_provider(snaptrade.SnapTradeProvider.key).register_user(key, user_id)
    user = SnapTradeUser(owner=owner, client_id=key.client_id, user_id=user_id, personal_key=key.personal)
    secrets = {"user_secret": secret}
    if key.personal:
        secrets["consumer_key"] = key.consumer_key
    user.secrets = secrets
    try:
        with transaction.atomic():  # a savepoint: PostgreSQL refuses the next query after a failed one
            user.save()
    except IntegrityError:
        # Another tab registered the trader a moment ago: theirs is kept, ours stays unused.
        return SnapTradeUser.objects.get(owner=owner)
    return user


# --- API tokens ---


@sensitive_variables()
def api_token_create(
    *, owner, name: str, lifetime_days: int = settings.API_TOKEN_LIFETIME_DAYS
) -> tuple[ApiToken, str]:
    """Make a token for the API; returns the row and the token itself, which is kept nowhere: show it once."""
    token = secrets.token_urlsafe(32)
    row = ApiToken(
        owner=owner,
        name=name.strip(),
        digest=ApiToken.digest_of(token),
        prefix=token[:8],
        expires_at=timezone.now() + timedelta(days=lifetime_days),
    )
    row.full_clean()
    row.save()
    return row, token
