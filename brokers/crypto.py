"""Encryption at rest for credentials and tokens (Fernet, with several keys for rotation)."""

import json
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from brokers.providers.errors import BrokerAuthError, ErrorKind

# Typically the encryption key changed (e.g. new keys made instead of reusing var/local.env's).
UNREADABLE_MESSAGE = (
    "The saved credentials cannot be read with this installation's encryption key. Edit the "
    "connection and enter them again (or ask the operator to put back the key in "
    "FIELD_ENCRYPTION_KEYS they were saved with)."
)


class CredentialsUnreadable(BrokerAuthError):
    """Stored ciphertext that none of the configured keys can open.

    An auth error to the sync: no retry can help, and the trader (or operator) must act, so a
    sync, a test and a command all report this one message rather than "unexpected error".
    """

    kind = ErrorKind.CREDENTIALS_UNREADABLE

    def __init__(self, message: str = UNREADABLE_MESSAGE):
        super().__init__(message)


@cache
def _fernet() -> MultiFernet:
    keys = settings.FIELD_ENCRYPTION_KEYS
    if not keys:
        raise ImproperlyConfigured("Set FIELD_ENCRYPTION_KEYS to one or more Fernet keys (see .env.example).")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key; make one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'."
        ) from None


def check_keys() -> None:
    """Fail at start-up, not at the first sync, when the keys are missing or malformed."""
    _fernet()


def encrypt_json(value) -> str:
    return _fernet().encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()


def decrypt_json(ciphertext: str):
    try:
        return json.loads(_fernet().decrypt(ciphertext.encode()))
    except InvalidToken:
        raise CredentialsUnreadable() from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the newest key (the first in FIELD_ENCRYPTION_KEYS)."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable() from None
