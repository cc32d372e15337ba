"""What every drill checks: no trade lost, none doubled, no connection left SYNCING, logs that tell the truth."""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from brokers.models import BrokerConnection, SyncLog
from journal.models import Trade
from tests import factories
from tests.e2e.realprocess import celery_processes


def alpaca_connection(trader, key_id: str) -> BrokerConnection:
    """An Alpaca connection with auto-sync off, so only the syncs a drill sends run."""
    return factories.alpaca_connection(trader, key_id, f"secret-{key_id}", label=f"Alpaca {key_id}", sync_enabled=False)


@contextlib.contextmanager
def beat_process(log_dir: Path, **env_extra: str):
    """Celery beat on its own, so a drill can kill and restart it under a running worker."""
    with celery_processes(log_dir, worker=False, **env_extra) as processes:
        yield processes["beat"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_lines(path: Path, *needles: str, limit: int = 15) -> str:
    """The last lines of a process log that mention any needle, for assertion messages."""
    if not path.exists():
        return f"({path.name} missing)"
    lines = path.read_text(errors="replace").splitlines()
    hits = [line for line in lines if any(n.lower() in line.lower() for n in needles)]
    return "\n".join(hits[-limit:]) or f"(nothing about {needles} in {path.name})"


def describe_logs(connection: BrokerConnection) -> str:
    return "; ".join(
        f"#{log.pk} {log.trigger} {log.status} attempt={log.attempt} +{log.trades_imported}/={log.trades_skipped}"
        f"{' ' + log.error_kind + ': ' + log.error_message[:80] if log.error_message else ''}"
        for log in SyncLog.objects.filter(connection=connection).order_by("started_at", "id")
    )


def assert_trades_exactly(connection: BrokerConnection, expected_ids: Iterable[str]) -> None:
    """Nothing lost, nothing doubled, nothing invented: the journal holds exactly these fills."""
    ids = list(Trade.objects.filter(account__connection=connection).values_list("broker_trade_id", flat=True))
    doubled = sorted(i for i, n in Counter(ids).items() if n > 1)
    expected = set(expected_ids)
    lost = sorted(expected - set(ids))
    invented = sorted(set(ids) - expected)
    assert not (doubled or lost or invented), (
        f"connection {connection.label}: {len(lost)} lost {lost[:3]}, {len(doubled)} doubled {doubled[:3]}, "
        f"{len(invented)} unexpected {invented[:3]}; runs: {describe_logs(connection)}"
    )


def assert_settled(connection: BrokerConnection, status: str = BrokerConnection.Status.CONNECTED) -> None:
    """The connection is out of SYNCING and no run of it is left open."""
    connection.refresh_from_db()
    running = SyncLog.objects.filter(connection=connection, status=SyncLog.Status.RUNNING).count()
    assert connection.status == status and not running, (
        f"connection {connection.label} is {connection.status} (expected {status}) with {running} run(s) "
        f"still RUNNING; last error {connection.last_sync_error!r}; runs: {describe_logs(connection)}"
    )


def assert_log_counts_truthful(connection: BrokerConnection) -> None:
    """The runs' imported counts add up to the trades the journal holds for the connection."""
    logs = SyncLog.objects.filter(connection=connection)
    imported = sum(log.trades_imported for log in logs)
    held = Trade.objects.filter(account__connection=connection).count()
    assert imported == held, (
        f"connection {connection.label}: the sync logs say {imported} trades were imported, "
        f"the journal holds {held}; runs: {describe_logs(connection)}"
    )
