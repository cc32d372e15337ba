"""The contract every broker adapter fulfils. Providers take credentials and return plain values."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar

import structlog
from django.conf import settings

from brokers.providers.errors import BrokerAPIError, BrokerRateLimitError, UnreadableRow, unreadable
from brokers.providers.http import BrokerHTTP
from brokers.providers.ratelimit import Scope, blocked
from brokers.providers.runcache import RunCache
from brokers.providers.text import credential_problem, printable
from brokers.providers.types import (
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
    BrokerPosition,
    BrokerTrade,
    CredentialField,
    OAuthSpec,
)

log = structlog.get_logger("brokers.providers")
Row = TypeVar("Row")


class BrokerProvider(ABC):
    """One broker. Subclasses declare who they are and implement the four calls (get_positions too, where offered).

    Declarations:
      key                registry key, also the module name, the doc page and the limits table
      display_name       what a trader reads
      environments       (value, label) pairs, e.g. demo/live; empty if the broker has one
      credential_fields  what the connection form asks for
      base_urls          environment -> base URL; settings <KEY>_BASE_URL overrides them all
      sync_overlap       how far behind the cursor each sync looks again, for late fills
      max_history        how far back the first sync reaches
      history_reach      how far back the broker still returns a fill, when that is shorter than
                         max_history (Tradovate: the current trading day); None means max_history.
                         The calendar marks a day no successful sync read within this reach
      session_calendar   the exchange calendar of what the broker trades (brokers.sessions codes, e.g.
                         "CMES"), when it is one: with a history_reach, the card warns on the evening
                         a session closed that no sync has read yet
      token_renew_margin renew a token when less than this remains
      trades_ascending   get_trades yields oldest first, so progress can be saved batch by batch
      credentials_expire AuthResult.expires_at is when the trader's own credentials lapse (not a
                         session we renew), so the trader is warned before that day
      limits_key         the rate_limits.toml table this provider books, when it is a second way to
                         connect a broker whose limits it shares (e.g. "tradovate"); default its key
      oauth              an OAuthSpec when traders connect by signing in at the broker (subclass
                         brokers.providers.oauth.OAuthProvider); None for typed credentials
      portal             traders connect in an aggregator's connection portal (SnapTrade): like
                         OAuth, the session comes back from the broker's side, not from a form
      link_fields        names of the values the connect pages store with a portal's link (e.g.
                         which authorisation it is): accepted in the credentials, never on a form
      transient_statuses HTTP statuses a retry of the same idempotent request can cure (the HTTP
                         layer retries them a few times before the run's own retries); leave
                         500 out only where the broker documents a 500 as deterministic (the
                         same request would fail the same way)
      provisions         authenticate() creates something at the broker (MetaApi's MT account): the
                         connection is saved only once it worked, so its refusal is a form error and
                         the session it made is kept; forget() removes it when the connection goes

    notes: what a run should tell the trader beyond its counts (e.g. history the broker cut short);
    the run keeps them in the SyncLog's detail.
    """

    key: ClassVar[str]
    display_name: ClassVar[str]
    environments: ClassVar[tuple[tuple[str, str], ...]] = ()
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    base_urls: ClassVar[Mapping[str, str]] = {}
    sync_overlap: ClassVar[timedelta] = timedelta(hours=1)
    max_history: ClassVar[timedelta] = timedelta(days=30)
    history_reach: ClassVar[timedelta | None] = None
    session_calendar: ClassVar[str] = ""
    token_renew_margin: ClassVar[timedelta] = timedelta(minutes=15)
    trades_ascending: ClassVar[bool] = False
    credentials_expire: ClassVar[bool] = False
    # A 500 is usually one overloaded or restarting backend behind a balancer: the major cloud
    # SDKs resend idempotent reads after it, and a broker failing one read in three must not
    # fail every run.
    transient_statuses: ClassVar[frozenset[int]] = frozenset({500, 502, 503, 504})
    limits_key: ClassVar[str] = ""
    oauth: ClassVar[OAuthSpec | None] = None
    portal: ClassVar[bool] = False
    link_fields: ClassVar[tuple[str, ...]] = ()
    provisions: ClassVar[bool] = False

    def __init__(self, environment: str = ""):
        self.environment = environment or self.default_environment()
        self._http: BrokerHTTP | None = None
        # The sync run this instance works for (set by the registry); "" outside a run.
        self.run_id = ""
        self.notes: list[str] = []
        # The trader pressed Sync now (set by the run): a provider that rations its reads to what
        # the broker asks (SnapTrade) reads anyway.
        self.trader_asked = False
        # Why each row of the broker's answers that could not become a trade was left out.
        self.unreadable_rows: list[str] = []

    @classmethod
    def default_environment(cls) -> str:
        """The environment a connection gets when none is named: the first declared, "" when there are none."""
        return cls.environments[0][0] if cls.environments else ""

    @classmethod
    def signs_in_at_broker(cls) -> bool:
        """Whether traders connect (and reconnect) on the broker's own pages rather than a form."""
        return cls.oauth is not None or cls.portal

    @property
    def http(self) -> BrokerHTTP:
        if self._http is None:
            self._http = BrokerHTTP(
                provider_key=self.key,
                limits_key=self.limits_name,
                display_name=self.display_name,
                base_url=self.base_url(),
                transient_statuses=self.transient_statuses,
            )
        return self._http

    @classmethod
    def reach(cls) -> timedelta:
        """How long after a trading day's close a sync still reads that day's fills."""
        return cls.history_reach or cls.max_history

    def skip_unreadable(self, reason: str, **context: str) -> None:
        """Leave out a row of the broker's answer that cannot become a trade, and say so.

        One bad row must not stop every other fill of the account, nor vanish: the run writes
        the count and the reasons into the account's SyncLog detail and the run's message
        ("skipped N rows we could not read: …"). `reason` names the field, never a secret.
        """
        log.warning("broker_row_skipped", broker=self.key, reason=reason, **context)
        self.unreadable_rows.append(reason)

    def readable(self, rows: Iterable[Row], parse: Callable[[Row], BrokerTrade]) -> Iterator[BrokerTrade]:
        """parse(row) for every row; a row it refuses with UnreadableRow is left out and counted."""
        for row in rows:
            try:
                yield parse(row)
            except UnreadableRow as exc:
                self.skip_unreadable(str(exc))

    @property
    def limits_name(self) -> str:
        """The rate_limits.toml table (and limiter key) this provider's calls book."""
        return self.limits_key or self.key

    def unreadable(self, what: str = "an answer") -> BrokerAPIError:
        """The error for an answer of this broker we cannot read (a retry may get a whole one)."""
        return unreadable(self.display_name, provider=self.key, what=what)

    def blocked(
        self, reason: str, wait: float, *, scope: Scope = "", status_code: int | None = None
    ) -> BrokerRateLimitError:
        """Back every worker off this broker's limits for `wait`, and the error the step pauses on."""
        return blocked(self.limits_name, reason, wait, provider=self.key, scope=scope, status_code=status_code)

    @property
    def request_retries(self) -> int:
        """Requests this instance sent again after a transient failure (the run's detail counts them)."""
        return self._http.retries if self._http is not None else 0

    @property
    def run_cache(self) -> RunCache | None:
        """Storage the steps of this run share (another account's task may have fetched it); None outside a run."""
        return RunCache(self.run_id) if self.run_id else None

    def base_url(self) -> str:
        override = settings.BROKER_BASE_URLS.get(self.key)
        return override or self.base_urls.get(self.environment, "")

    @classmethod
    def environment_problem(cls, environment: str) -> str:
        """What is wrong with this environment for this broker ("" when it is fine)."""
        known = [e for e, _ in cls.environments]
        if known and environment not in known:
            return f"Environment must be one of: {', '.join(known)}."
        if not known and environment:
            return f"{cls.display_name} has no environments: leave the environment empty."
        return ""

    @classmethod
    def validate_credentials(cls, values: Mapping[str, str], environment: str = "") -> dict[str, str]:
        """Problems with what the trader typed, as {field name: message}; empty when fine."""
        problems = {}
        for f in cls.credential_fields:
            raw = values.get(f.name)
            if raw is not None and not isinstance(raw, str):
                problems[f.name] = f"{f.label} must be text."
                continue
            value = (raw or "").strip()
            problem = credential_problem(f.label, value, required=f.required, ascii_only=f.ascii_only)
            if problem:
                problems[f.name] = problem
            elif f.choices and value and value not in {c for c, _ in f.choices}:
                allowed = ", ".join(c for c, _ in f.choices)
                problems[f.name] = f"{f.label} must be one of: {allowed}."
        unknown = set(values) - {f.name for f in cls.credential_fields} - set(cls.link_fields)
        for name in sorted(unknown):
            problems[name] = f"{cls.display_name} takes no field named {printable(str(name))!r}."
        environment_problem = cls.environment_problem(environment)
        if environment_problem:
            problems["environment"] = environment_problem
        return problems

    @abstractmethod
    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        """Log in with the trader's credentials. Raises BrokerAuthError when refused."""

    @abstractmethod
    def refresh_token(self, auth: AuthResult) -> AuthResult:
        """Renew a session before it expires, without a new login.

        Raises BrokerAuthError when the session can no longer be renewed; the caller then
        logs in again with authenticate(). Brokers whose credentials never expire return auth.
        """

    @abstractmethod
    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        """The accounts this session can read (closed ones left out)."""

    @abstractmethod
    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        """Executions of one account in [since, until], fetched page by page as they are consumed."""

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition] | None:
        """The account's open positions at the broker, for reconciliation with the journal; None when not offered.

        The sync reads them before the fills, so every fill inside the positions is also in the
        fills it reads next (docs/architecture.md, "Reconciliation with the broker").
        """
        return None

    def suggestions(self, field: str, query: str, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """(value, label) pairs for a field declared with suggest=True, from what the trader typed so far."""
        return []

    def forget(self, credentials: BrokerCredentials, auth: AuthResult | None) -> None:
        """Remove what authenticate() provisioned at the broker, as the connection is deleted; most have nothing."""
        return
