"""Drill: a broker that misbehaves in every documented way, against a real worker.

Each connection has its own key, account and fills on the loopback ScriptedAlpaca, and its own
scripted faults; all of them sync at once on one worker, as a bad evening at a broker
would look. Retry delays are 1 s and the read timeout 1 s so the storm passes in seconds.
"""

import pytest

from brokers.models import BrokerConnection, SyncLog
from tests.e2e.drills.support import (
    alpaca_connection,
    assert_log_counts_truthful,
    assert_settled,
    assert_trades_exactly,
    describe_logs,
)
from tests.e2e.realprocess import celery_processes, finished_logs, send_sync, wait_for
from tests.fakes.alpaca import ScriptedAlpaca

pytestmark = [pytest.mark.realprocess, pytest.mark.drill, pytest.mark.django_db(transaction=True)]

FILLS = 250  # three pages of Alpaca's 100
ALPACA_REFUSED = "Alpaca refused the API keys (HTTP 401)"


def worker_env(broker: ScriptedAlpaca, **extra: str) -> dict[str, str]:
    return {
        "ALPACA_BASE_URL": broker.url,
        "SYNC_RETRY_DELAYS_S": "1,1,1",
        "BROKER_HTTP_READ_TIMEOUT_S": "1",
        **extra,
    }


def sync_all_and_wait(connections, tmp_path, env, timeout=150):
    with celery_processes(tmp_path, beat=False, concurrency=3, **env):
        for connection in connections.values():
            send_sync(connection)
        wait_for(
            lambda: all(
                finished_logs(c).exists() and not c.sync_logs.filter(status=SyncLog.Status.RUNNING).exists()
                for c in connections.values()
            ),
            timeout,
            interval=0.5,
            message="every run of the storm to end",
        )


def test_broker_storm_retries_to_success_and_fails_truthfully(trader, tmp_path, real_queue):
    """Breaks: the broker answers 500s, hangs past the read timeout, sends HTML or half a JSON
    document, asks to slow down (429 + Retry-After), refuses keys it accepted a moment
    before (401 on fills after a good account call, once and for good), and fails past
    every retry.

    Checks: transient faults retry to SUCCESS with every fill imported exactly once; a 401
    on a reused session logs in exactly once more; a 401 that persists ends in ERROR with
    Alpaca's own auth message and no retries; exhausted retries end FAILED with the last
    error; every connection leaves SYNCING; one SyncLog per run, counts matching the journal.
    """
    scripts = {
        "AK500": ("fills", "500", "500"),
        "AKTIMEOUT": ("fills", "timeout"),
        "AKGARBAGE": ("account", "garbage"),
        "AKTRUNC": ("fills", "truncated"),
        "AK429ACC": ("account", "429"),
        "AK429FILLS": ("fills", "ok", "429"),
        "AK401ONCE": ("fills", "401"),
        "AK401": ("fills", "401", "401"),
        # A 500 on a read is resent by the HTTP layer twice before the run's own retry counts it:
        # failing for good takes three 500s on each of the four attempts.
        "AK500EVER": ("fills", *["500"] * 12),
    }
    with ScriptedAlpaca(dict.fromkeys(scripts, FILLS)) as broker:
        connections = {key: alpaca_connection(trader, key) for key in scripts}
        for key, (call, *faults) in scripts.items():
            broker.fail(key, call, *faults)
        sync_all_and_wait(connections, tmp_path, worker_env(broker))

    def run_of(key):
        logs = list(SyncLog.objects.filter(connection=connections[key]))
        assert len(logs) == 1, f"{key}: one run expected, got {describe_logs(connections[key])}"
        return logs[0]

    recovered = [k for k in scripts if k not in {"AK401", "AK500EVER"}]
    for key in recovered:
        log = run_of(key)
        assert log.status == SyncLog.Status.SUCCESS, f"{key}: {describe_logs(connections[key])}; {broker.served(key)}"
        assert_trades_exactly(connections[key], broker.ids(key))
        assert_log_counts_truthful(connections[key])
        assert_settled(connections[key])
    # An unreadable account answer fails start_run: the connection task itself retried once.
    assert run_of("AKGARBAGE").attempt == 2
    # The session was reused for the fills; the 401 made the engine log in exactly once more.
    assert broker.served("AK401ONCE").count("account:ok") == 3, broker.served("AK401ONCE")

    refused = run_of("AK401")
    assert refused.status == SyncLog.Status.FAILED and refused.error_kind == "auth", describe_logs(connections["AK401"])
    assert ALPACA_REFUSED in refused.error_message
    # One login again after the first 401, then no retry: a refused key is the trader's to fix.
    assert broker.served("AK401") == ["account:ok", "account:ok", "fills:401", "account:ok", "fills:401"]
    assert_settled(connections["AK401"], BrokerConnection.Status.ERROR)
    connections["AK401"].refresh_from_db()
    assert connections["AK401"].credentials_rejected and ALPACA_REFUSED in connections["AK401"].last_sync_error

    exhausted = run_of("AK500EVER")
    assert exhausted.status == SyncLog.Status.FAILED and exhausted.error_kind == "unavailable"
    assert "HTTP 500" in exhausted.error_message
    assert broker.count("AK500EVER", "fills") == 12  # four attempts of three sends each
    assert_trades_exactly(connections["AK500EVER"], ())
    assert_settled(connections["AK500EVER"], BrokerConnection.Status.ERROR)


def test_a_connection_dropped_mid_answer_is_retried(trader, tmp_path, real_queue):
    """Breaks: the broker announces a whole page (Content-Length) and closes the connection
    halfway through it, as a proxy restart or a network blip does.

    Checks: like any broken connection it is transient: the account retries and the run
    ends SUCCESS with every fill exactly once, the connection CONNECTED.
    """
    with ScriptedAlpaca({"AKCUT": FILLS}) as broker:
        connection = alpaca_connection(trader, "AKCUT")
        broker.fail("AKCUT", "fills", "ok", "cut")
        sync_all_and_wait({"AKCUT": connection}, tmp_path, worker_env(broker))
    log = SyncLog.objects.get(connection=connection)
    assert log.status == SyncLog.Status.SUCCESS, f"{describe_logs(connection)}; {broker.served('AKCUT')}"
    assert_trades_exactly(connection, broker.ids("AKCUT"))
    assert_settled(connection)


def test_a_retry_after_committed_batches_counts_the_whole_run(trader, tmp_path, real_queue):
    """Breaks: with one page per import batch, the third page fails (HTTP 500) after the
    first two pages were committed; the retry reads them again.

    Checks: nothing lost or doubled, SUCCESS, and the run's SyncLog counts every trade the
    run added, including those its failed attempt committed.
    """
    with ScriptedAlpaca({"AKPAGE3": FILLS}) as broker:
        connection = alpaca_connection(trader, "AKPAGE3")
        broker.fail("AKPAGE3", "fills", "ok", "ok", "500")
        sync_all_and_wait({"AKPAGE3": connection}, tmp_path, worker_env(broker, SYNC_IMPORT_BATCH_SIZE="100"))
    assert SyncLog.objects.get(connection=connection).status == SyncLog.Status.SUCCESS, describe_logs(connection)
    assert_trades_exactly(connection, broker.ids("AKPAGE3"))
    assert_settled(connection)
    assert_log_counts_truthful(connection)
