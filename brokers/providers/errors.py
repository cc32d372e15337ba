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
"""


class BrokerError(Exception):
    transient = False
    kind = "broker_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        # Seconds the broker asked us to wait (Retry-After), when it said so.
        self.retry_after = None if retry_after is None else max(0.0, float(retry_after))

    def __str__(self) -> str:
        return self.message


class BrokerAuthError(BrokerError):
    kind = "auth"


class BrokerSetupError(BrokerError):
    kind = "setup"


class BrokerRateLimitError(BrokerError):
    transient = True
    kind = "rate_limit"

    def __init__(self, message: str, *, retry_after: float, **kwargs):
        super().__init__(message, retry_after=retry_after, **kwargs)


class BrokerAPIError(BrokerError):
    kind = "api"

    def __init__(self, message: str, *, transient: bool = False, **kwargs):
        super().__init__(message, **kwargs)
        self.transient = transient


class BrokerTimeoutError(BrokerError):
    transient = True
    kind = "timeout"
    # False when the request never reached the broker (a connect timeout): any method may be resent.
    request_sent = True


class BrokerUnavailableError(BrokerError):
    transient = True
    kind = "unavailable"
    request_sent = True


class BrokerConfigurationError(Exception):
    """A mistake in our configuration, not a broker failure: fix the setting it names."""


class UnreadableRow(ValueError):
    """One row of a broker's answer we cannot turn into a trade; the message says why, never a secret."""
