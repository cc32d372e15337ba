"""Connections to brokers, the accounts found under them, and one log row per sync run."""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.functional import cached_property

from brokers import crypto
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class
from brokers.providers.types import AuthResult, BrokerCredentials
from brokers.validators import refuse_control_characters

# The one wording of the interval rule: pages, API, admin and commands all show this.
INTERVAL_RANGE = f"{settings.SYNC_INTERVAL_SHORTEST_MIN} to {settings.SYNC_INTERVAL_LONGEST_MIN}"
INTERVAL_RULE = f"Sync interval must be a whole number of minutes from {INTERVAL_RANGE}."


def validate_broker_type(value: str) -> None:
    try:
        get_provider_class(value)
    except BrokerConfigurationError as exc:
        raise ValidationError(str(exc), code="unknown_broker") from None


def validate_sync_interval(value: int) -> None:
    if not settings.SYNC_INTERVAL_SHORTEST_MIN <= value <= settings.SYNC_INTERVAL_LONGEST_MIN:
        raise ValidationError(INTERVAL_RULE, code="out_of_range")


class WholeMinutesField(models.PositiveSmallIntegerField):
    """Minutes as a whole number only: Django's own field would turn 15.5 into 15 and "15" into 15."""

    def to_python(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(INTERVAL_RULE, code="invalid")
        return value

    @cached_property
    def validators(self):
        # validate_sync_interval is the whole range rule; Django's own "greater than or equal
        # to 0" and database-range checks would only repeat it in other words.
        return list(self._validators)


class BrokerConnection(models.Model):
    class Status(models.TextChoices):
        """What is stored; the badge a trader sees is brokers.vocabulary.display_status."""

        CONNECTED = "CONNECTED", "Connected"
        SYNCING = "SYNCING", "Syncing"
        ERROR = "ERROR", "Error"

    class NextAttempt(models.TextChoices):
        RETRY = "retry", "retry after a failure"
        RATE_LIMIT = "rate_limit", "a broker's limit"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="broker_connections")
    broker_type = models.CharField(max_length=40, validators=[validate_broker_type])
    label = models.CharField(max_length=100, validators=[refuse_control_characters])
    # One of the provider's environments; empty for a broker that has none.
    environment = models.CharField(max_length=20, blank=True)
    # Fernet ciphertext of the credentials dict; read through .credentials only.
    credentials_ciphertext = models.TextField(editable=False)
    # Fernet ciphertext of the broker session (token, expiry, refresh token, extra), so syncs reuse it.
    session_ciphertext = models.TextField(blank=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CONNECTED)
    sync_enabled = models.BooleanField(default=True)
    sync_interval_min = WholeMinutesField(
        default=settings.SYNC_INTERVAL_DEFAULT_MIN,
        validators=[validate_sync_interval],
        help_text=f"Minutes between automatic syncs ({INTERVAL_RANGE}).",
    )
    # Set when the broker refused the credentials: automatic sync waits until they are fixed.
    credentials_rejected = models.BooleanField(default=False)
    # When the trader last signed in again or saved new credentials: a run that began before cannot
    # have tried them, so its refusal does not hold them (sync.runs).
    authorised_at = models.DateTimeField(null=True, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_sync_error = models.TextField(blank=True)
    # While a run waits: when it goes on, and why it waits. None and "" otherwise.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_reason = models.CharField(max_length=10, blank=True, choices=NextAttempt.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["label", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(sync_interval_min__gte=settings.SYNC_INTERVAL_SHORTEST_MIN)
                & Q(sync_interval_min__lte=settings.SYNC_INTERVAL_LONGEST_MIN),
                name="sync_interval_min_in_range",
                violation_error_message=INTERVAL_RULE,
            ),
        ]

    def __str__(self):
        return f"{self.label} ({self.broker_type})"

    def clean(self):
        try:
            provider_class = get_provider_class(self.broker_type)
        except BrokerConfigurationError:
            return  # broker_type's own validator says so
        problem = provider_class.environment_problem(self.environment)
        if problem:
            raise ValidationError({"environment": problem}, code="invalid_environment")

    @property
    def credentials(self) -> dict[str, str]:
        return crypto.decrypt_json(self.credentials_ciphertext) if self.credentials_ciphertext else {}

    @credentials.setter
    def credentials(self, values: dict[str, str]) -> None:
        self.credentials_ciphertext = crypto.encrypt_json(dict(values))

    def broker_credentials(self) -> BrokerCredentials:
        return BrokerCredentials(values=self.credentials, environment=self.environment)

    @property
    def auth(self) -> AuthResult | None:
        if not self.session_ciphertext:
            return None
        data = crypto.decrypt_json(self.session_ciphertext)
        expires = datetime.fromisoformat(data["expires_at"]) if data.get("expires_at") else None
        issued = datetime.fromisoformat(data["issued_at"]) if data.get("issued_at") else None
        refresh_ends = datetime.fromisoformat(data["refresh_expires_at"]) if data.get("refresh_expires_at") else None
        return AuthResult(
            token=data["token"],
            expires_at=expires,
            extra=data.get("extra") or {},
            issued_at=issued,
            refresh_token=data.get("refresh_token") or "",
            refresh_expires_at=refresh_ends,
        )

    @auth.setter
    def auth(self, value: AuthResult | None) -> None:
        if value is None:
            self.session_ciphertext = ""
            return
        self.session_ciphertext = crypto.encrypt_json(
            {
                "token": value.token,
                "expires_at": value.expires_at.isoformat() if value.expires_at else None,
                "issued_at": value.issued_at.isoformat() if value.issued_at else None,
                "extra": dict(value.extra),
                "refresh_token": value.refresh_token,
                "refresh_expires_at": value.refresh_expires_at.isoformat() if value.refresh_expires_at else None,
            }
        )

    @property
    def provider_name(self) -> str:
        try:
            return get_provider_class(self.broker_type).display_name
        except BrokerConfigurationError:
            return self.broker_type

    @property
    def signs_in_at_broker(self) -> bool:
        """Connected on the broker's (or SnapTrade's) own pages, so Reconnect goes back there."""
        try:
            return get_provider_class(self.broker_type).signs_in_at_broker()
        except BrokerConfigurationError:
            return False

    @property
    def link_expires_at(self) -> datetime | None:
        """When the trader must sign in again (an OAuth refresh token's hard end); None if never."""
        try:
            auth = self.auth if self.signs_in_at_broker else None
        except crypto.CredentialsUnreadable:
            # No key opens the session: the next sync says so, with what to do; the pages still work.
            return None
        return auth.refresh_expires_at if auth is not None else None

    @property
    def schedule_active(self) -> bool:
        """Whether beat should run this connection: switched on and not waiting for new credentials."""
        return self.sync_enabled and not self.credentials_rejected


class BrokerAccount(models.Model):
    connection = models.ForeignKey(BrokerConnection, on_delete=models.CASCADE, related_name="accounts")
    external_id = models.CharField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    # Executions up to this moment are in the journal; the next sync starts here less the overlap.
    sync_cursor = models.DateTimeField(null=True, blank=True)
    # The day an aggregator last refreshed its copy of the account's history (SnapTrade's sync
    # status): its trades are as fresh as this, whatever our own last sync.
    broker_refreshed_on = models.DateField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    # A file without the broker's ids put fills here under content keys (docs/file-import.md): each
    # sync then replaces the ones it delivers under the broker's id. False costs a sync nothing.
    has_file_fills = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["external_id"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "external_id"], name="unique_account_per_connection"),
        ]

    def __str__(self):
        return self.name or self.external_id


class SyncLog(models.Model):
    class Trigger(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        MANUAL = "manual", "Manual"
        RETRY = "retry", "Retry"
        # A broker export the trader imported (sync.files): it reads no broker, so it covers no trading day.
        FILE = "file", "File import"
        # Archived broker answers read again by today's parser (manage.py reparse): no broker is asked.
        REPARSE = "reparse", "Reparse"

    class Status(models.TextChoices):
        RUNNING = "RUNNING", "Running"
        SUCCESS = "SUCCESS", "Success"
        PARTIAL = "PARTIAL", "Partial"
        FAILED = "FAILED", "Failed"
        SKIPPED = "SKIPPED", "Skipped"
        INTERRUPTED = "INTERRUPTED", "Interrupted"

    connection = models.ForeignKey(BrokerConnection, on_delete=models.CASCADE, related_name="sync_logs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.SCHEDULED)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    trades_imported = models.PositiveIntegerField(default=0)
    trades_skipped = models.PositiveIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=1)
    # Requests sent again after a transient failure (timeouts, 500/502/503/504), every step together.
    request_retries = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    error_kind = models.CharField(max_length=30, blank=True)
    error_message = models.TextField(blank=True)
    # Per account: {"<external id>": {"imported": n, "skipped": n, "error": "..."}}, plus
    # "busted": n when the broker voided (busted) n fills the journal held, now tombstones.
    detail = models.JSONField(default=dict, blank=True)
    # Undone (sync.undo): the fills the run added were removed then, by whom, and how many.
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trades_undone = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["connection", "-started_at"], name="synclog_conn_started")]

    def __str__(self):
        return f"{self.connection} {self.status} {self.started_at:%Y-%m-%d %H:%M}"


# Runs that asked no broker anything (a file import, a reparse of archived answers): they cover no
# trading day, compare no positions, and say nothing of what the broker lists.
READ_NO_BROKER = (SyncLog.Trigger.FILE, SyncLog.Trigger.REPARSE)


class RunArchive(models.Model):
    """What one part of a run read, kept compressed for a reparse: a read's broker answers, or an imported file.

    One row per account step of a sync (and one for its connection step: login, account list), and
    one per imported file. A part over the run's size cap (ARCHIVE_MAX_BYTES_PER_RUN) keeps no
    content and says so in not_kept, as does the run's detail. No secret is in content
    (brokers.providers.archive, sync.archiving).
    """

    class Kind(models.TextChoices):
        ANSWERS = "answers", "Broker answers"
        FILE = "file", "Imported file"

    sync_log = models.ForeignKey(SyncLog, on_delete=models.CASCADE, related_name="archives")
    # None for the connection step's answers (login, account list), which belong to no one account.
    account = models.ForeignKey(BrokerAccount, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # Gzip: the answers as JSON (method, path, status, content type, body), or the file's bytes.
    content = models.BinaryField(editable=False)
    size = models.PositiveIntegerField(default=0, help_text="Compressed bytes kept.")
    answers = models.PositiveIntegerField(default=0)
    # The window the account's read asked for: a reparse asks for the same, so the same pages.
    read_since = models.DateTimeField(null=True, blank=True)
    read_until = models.DateTimeField(null=True, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    not_kept = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sync_log", "id"]
        indexes = [models.Index(fields=["created_at"], name="runarchive_created")]

    def __str__(self):
        part = self.file_name or (str(self.account) if self.account_id else "connection")
        return f"{self.get_kind_display()}: {part}"


class SnapTradeUser(models.Model):
    """A trader's registration as a SnapTrade user: made once, used by all their SnapTrade connections.

    The user secret (and a Personal key's consumer key) are Fernet ciphertext, read through
    .secrets only and never shown. client_id says which API key the user was registered under.
    """

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="snaptrade_user")
    client_id = models.CharField(max_length=200)
    user_id = models.CharField(max_length=100, unique=True)
    # True when the trader's own Personal key signs the requests, not the operator's.
    personal_key = models.BooleanField(default=False)
    secrets_ciphertext = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"SnapTrade user of {self.owner}"

    @property
    def secrets(self) -> dict[str, str]:
        return crypto.decrypt_json(self.secrets_ciphertext)

    @secrets.setter
    def secrets(self, values: dict[str, str]) -> None:
        self.secrets_ciphertext = crypto.encrypt_json(dict(values))


class KnownProvider(models.Model):
    """Provider keys this installation has seen, so the managers hear of each new broker once."""

    key = models.CharField(max_length=40, unique=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.key


class ApiToken(models.Model):
    """A key for the JSON API (Authorization: Token <key>): shown once when made, kept only as its SHA-256,
    valid until expires_at, revoked by deleting the row (Admin -> API tokens)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. 'my export script'.")
    # A token is 43 random URL-safe characters: a fast hash is enough, and a lookup by it is one index read.
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # Its first characters, so that the trader and the admin can tell tokens apart; not enough to use it.
    prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.name})"

    @staticmethod
    def digest_of(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
