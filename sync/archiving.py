"""The raw archive: each run's broker answers and imported files, kept compressed, secret-free, capped, pruned.

A sync records what each of its steps read (brokers.providers.archive) and keeps it here as one
RunArchive row per step; a file import keeps the file. Every part of a run counts against
ARCHIVE_MAX_BYTES_PER_RUN (compressed): a part that would pass it keeps no content and says so,
on its row and in the run's detail, so nobody counts on a reparse the archive cannot serve.
Parts older than ARCHIVE_RETENTION_DAYS are deleted by the daily prune.
"""

from __future__ import annotations

import gzip
import io
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import IO

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from brokers import crypto
from brokers.models import BrokerConnection, RunArchive, SyncLog
from brokers.providers.archive import SECRET_ANSWER_KEYS, Answer, Recorder, unpacked
from brokers.providers.errors import BrokerConfigurationError
from brokers.providers.registry import get_provider_class
from brokers.providers.types import AuthResult

log = structlog.get_logger("sync.archive")

CHUNK = 1 << 20


class _OverCap(Exception):
    pass


def run_secrets(connection: BrokerConnection, *sessions: AuthResult | None) -> list[str]:
    """Every secret a run of this connection may meet: its secret credentials, its sessions' tokens,
    and the installation's own keys (OAuth apps, SnapTrade, MetaApi)."""
    secrets = [settings.SNAPTRADE_CONSUMER_KEY, settings.METAAPI_TOKEN]
    secrets += [app["client_secret"] for app in settings.BROKER_OAUTH_APPS.values()]
    try:
        provider_class = get_provider_class(connection.broker_type)
        plain = {f.name for f in provider_class.credential_fields if not f.secret} | set(provider_class.link_fields)
    except BrokerConfigurationError:
        plain = set()
    # A value the provider does not declare plain (a login, a query id, a portal's link id) is a secret.
    secrets += [str(v) for k, v in connection.credentials.items() if k not in plain]
    for auth in sessions:
        if auth is None:
            continue
        secrets += [auth.token, auth.refresh_token]
        secrets += [str(v) for k, v in auth.extra.items() if _secret_name(k)]
    return [s for s in secrets if s]


def _secret_name(key: str) -> bool:
    lowered = key.lower()
    return bool(SECRET_ANSWER_KEYS.search(key)) or any(w in lowered for w in ("token", "secret", "password", "key"))


def keep_answers(
    sync_log_id: int, account_id: int | None, recorder: Recorder, connection: BrokerConnection, *sessions
) -> str:
    """Keep what a step read now; returns why it was not kept ("" when kept, or when it read nothing)."""
    if not recorder.answers:
        return ""
    packed, not_kept = _packed(recorder, connection, sessions)
    with transaction.atomic():
        # One part at a time per run: the account tasks of one run may finish together.
        SyncLog.objects.select_for_update().filter(pk=sync_log_id).first()
        if not not_kept:
            not_kept = _over_cap(_kept_by(sync_log_id), len(packed))
        _part(sync_log_id, account_id, recorder, packed, not_kept).save()
    return _said(sync_log_id, account_id, not_kept)


class RunParts:
    """What a run's steps read, held until the run writes its end, where it costs one INSERT.

    Only a run's first attempt holds its parts, its steps all in one task: no other task keeps
    parts of that run meanwhile, so the cap is counted here. Any other attempt (a resumed run, an
    account task of a chord) keeps each part as its step ends. A worker killed mid-run loses what
    its run held: that run's fills are read again by the next run, which keeps its own answers.
    """

    def __init__(self, sync_log_id: int, *, hold: bool):
        self.sync_log_id = sync_log_id
        self.hold = hold
        self._parts: list[RunArchive] = []
        self._kept = 0
        # The accounts of a run are read in threads of their own.
        self._lock = threading.Lock()

    def keep(self, account_id: int | None, recorder: Recorder, connection: BrokerConnection, *sessions) -> str:
        """Keep what a step read (now, or with the run's end); returns why it was not kept."""
        if not self.hold:
            return keep_answers(self.sync_log_id, account_id, recorder, connection, *sessions)
        if not recorder.answers:
            return ""
        packed, not_kept = _packed(recorder, connection, sessions)
        with self._lock:
            if not not_kept:
                not_kept = _over_cap(self._kept, len(packed))
            if not not_kept:
                self._kept += len(packed)
            self._parts.append(_part(self.sync_log_id, account_id, recorder, packed, not_kept))
        return _said(self.sync_log_id, account_id, not_kept)

    def write(self) -> None:
        """Write the parts held so far (inside the caller's transaction, when it has one)."""
        with self._lock:
            parts, self._parts = self._parts, []
        if parts:
            RunArchive.objects.bulk_create(parts)


def _packed(recorder: Recorder, connection: BrokerConnection, sessions) -> tuple[bytes, str]:
    """The step's answers without a secret, compressed, or why they cannot be kept."""
    try:
        secrets = run_secrets(connection, *sessions)
    except crypto.CredentialsUnreadable:
        # Without the credentials nothing can be checked for them: nothing is kept.
        return b"", "the credentials could not be read to remove them"
    return recorder.packed(secrets), ""


def _part(sync_log_id: int, account_id: int | None, recorder: Recorder, packed: bytes, not_kept: str) -> RunArchive:
    return RunArchive(
        sync_log_id=sync_log_id,
        account_id=account_id,
        kind=RunArchive.Kind.ANSWERS,
        content=b"" if not_kept else packed,
        size=0 if not_kept else len(packed),
        answers=len(recorder.answers),
        read_since=recorder.since,
        read_until=recorder.until,
        not_kept=not_kept,
    )


def _said(sync_log_id: int, account_id: int | None, not_kept: str) -> str:
    if not not_kept:
        return ""
    log.warning("answers_not_archived", sync_log_id=sync_log_id, account_id=account_id, reason=not_kept)
    return f"Broker answers not archived: {not_kept}."


def _kept_by(sync_log_id: int) -> int:
    return RunArchive.objects.filter(sync_log_id=sync_log_id).aggregate(n=Sum("size"))["n"] or 0


def _over_cap(kept: int, size: int) -> str:
    cap = settings.ARCHIVE_MAX_BYTES_PER_RUN
    if cap <= 0:
        return "the archive is off on this installation (ARCHIVE_MAX_BYTES_PER_RUN=0)"
    if kept + size > cap:
        return f"{size:,} compressed bytes would pass the run's cap of {cap:,} (ARCHIVE_MAX_BYTES_PER_RUN)"
    return ""


def keep_file(sync_log_id: int, account_id: int, stream: IO[bytes], name: str) -> str:
    """Keep an imported file, compressed as it streams; returns why it was not kept ("" when kept).

    Compression stops as soon as the file passes what the run may still keep, so a file far over
    the cap costs no more memory than the cap.
    """
    cap = settings.ARCHIVE_MAX_BYTES_PER_RUN
    if cap <= 0:
        not_kept, packed = "the archive is off on this installation (ARCHIVE_MAX_BYTES_PER_RUN=0)", b""
    else:
        room = cap - _kept_by(sync_log_id)
        try:
            packed, not_kept = _compressed(stream, room), ""
        except _OverCap:
            packed = b""
            not_kept = f"the file compressed passes the run's cap of {cap:,} bytes (ARCHIVE_MAX_BYTES_PER_RUN)"
    RunArchive.objects.create(
        sync_log_id=sync_log_id,
        account_id=account_id,
        kind=RunArchive.Kind.FILE,
        content=packed,
        size=len(packed),
        file_name=name[:200],
        not_kept=not_kept,
    )
    return f"File not archived: {not_kept}." if not_kept else ""


def _compressed(stream: IO[bytes], room: int) -> bytes:
    stream.seek(0)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6) as packing:
        while chunk := stream.read(CHUNK):
            packing.write(chunk)
            if buffer.tell() > room:
                raise _OverCap()
    stream.seek(0)
    if buffer.tell() > room:
        raise _OverCap()
    return buffer.getvalue()


def prune_archives(now: datetime | None = None) -> int:
    """Delete archived parts past ARCHIVE_RETENTION_DAYS; their runs' logs stay."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.ARCHIVE_RETENTION_DAYS)
    deleted, _ = RunArchive.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def answers_of(parts: Iterable[RunArchive]) -> list[Answer]:
    """The answers of these parts, in order, from the parts that kept theirs."""
    return [answer for part in parts if part.content for answer in unpacked(bytes(part.content))]
