"""Typed broker errors: what went wrong, whether a retry can help, and what the trader should do.

BrokerError
 ├── BrokerAuthError          the trader must act (wrong or expired credentials): never retried
 ├── BrokerSetupError         an aggregator refused the API key itself (SnapTrade's signature):
 │                            whoever owns the key must fix it; never retried
 ├── BrokerRateLimitError     the broker (or our limiter) says wait: carries retry_after seconds
 ├── BrokerAPIError           a bad status or an unreadable answer: .transient says if a retry helps
 ├── BrokerTimeoutError       no answer in time (transient)
 └── BrokerUnavailableError   could not connect, or the broker says it is down (transient)
BrokerConfigurationError      our own mistake (unknown broker type, missing setting): outside
                              the tree so that no retry of BrokerError ever swallows it.
UnreadableRow                 one row of an answer cannot become a trade: not a failure of the
                              call; the provider leaves the row out and the run counts it
                              (BrokerProvider.skip_unreadable).

Messages are shown to traders: they say what happened and what to do, and never hold a secret.
Each error has a kind (ErrorKind), the one vocabulary a run records in SyncLog.error_kind;
brokers/vocabulary.py gives each kind its advice on the page.
"""

from enum import StrEnum


class ErrorKind(StrEnum):
    """Why a run or a step failed: the broker errors' kinds below, then the run's own."""

    AUTH = "auth"  # the broker refused the trader's credentials or link
    SETUP = "setup"  # the broker refused the API key itself (an aggregator's key)
    RATE_LIMIT = "rate_limit"  # the broker (or our limiter) said wait
    TIMEOUT = "timeout"  # no answer in time
    UNAVAILABLE = "unavailable"  # could not connect, or the broker failed in a way a retry can cure
    API = "api"  # a refused request or an answer we could not read; a retry does not help
    CREDENTIALS_UNREADABLE = "credentials_unreadable"  # our encryption key cannot read what is stored
    ACCOUNT = "account"  # a run in which some accounts failed and the others synced
    SUPERSEDED = "superseded"  # a newer run of the connection took over
    DATABASE = "database"  # the journal's own database did not answer
    INTERNAL = "internal"  # a bug on our side


class BrokerError(Exception):
    transient = False
    kind = ErrorKind.API

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
        field: str = "",
    ):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        # The credential field the broker refused, when it says which (a form puts the message there).
        self.field = field
        # Seconds the broker asked us to wait (Retry-After), when it said so.
        self.retry_after = None if retry_after is None else max(0.0, float(retry_after))

    def __str__(self) -> str:
        return self.message


class BrokerAuthError(BrokerError):
    kind = ErrorKind.AUTH


class BrokerSetupError(BrokerError):
    kind = ErrorKind.SETUP


class BrokerRateLimitError(BrokerError):
    transient = True
    kind = ErrorKind.RATE_LIMIT

    def __init__(self, message: str, *, retry_after: float, **kwargs):
        super().__init__(message, retry_after=retry_after, **kwargs)


class BrokerAPIError(BrokerError):
    def __init__(self, message: str, *, transient: bool = False, **kwargs):
        super().__init__(message, **kwargs)
        self.transient = transient

    @property
    def kind(self) -> ErrorKind:
        # A failure a retry can cure (an HTTP 500 on a read) is the broker failing for a
        # moment, and the trader is told so, not asked to check their API permissions.
        return ErrorKind.UNAVAILABLE if self.transient else ErrorKind.API


class BrokerTimeoutError(BrokerError):
    transient = True
    kind = ErrorKind.TIMEOUT
    # False when the request never reached the broker (a connect timeout): any method may be resent.
    request_sent = True


class BrokerUnavailableError(BrokerError):
    transient = True
    kind = ErrorKind.UNAVAILABLE
    request_sent = True


class BrokerConfigurationError(Exception):
    """A mistake in our configuration, not a broker failure: fix the setting it names."""


def unreadable(name: str, *, provider: str, what: str = "an answer", status_code: int | None = None) -> BrokerAPIError:
    """The broker answered in a shape we cannot read (truncated, garbled, not the documented one).

    Transient: a half answer is usually whole on the next try.
    """
    return BrokerAPIError(
        f"{name} sent {what} we could not read.", provider=provider, status_code=status_code, transient=True
    )


class UnreadableRow(ValueError):
    """One row of a broker's answer we cannot turn into a trade; the message says why, never a secret."""
