"""The operator commands: happy paths, refusals that change nothing, and no secret in any output."""

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django_celery_beat.models import PeriodicTask

from brokers.management.commands import create_connection
from brokers.models import BrokerConnection, SyncLog
from brokers.providers.registry import provider_classes
from journal.models import Trade

# An unknown broker type is answered with how many are registered, and where they are listed.
KNOWN_COUNT = len(provider_classes())
ROOT = Path(__file__).resolve().parents[2]
SECRET = "Zq9-recognisable-SECRET-7731"
UTC_ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def run(*args, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def refused(*args, **options) -> str:
    """The CommandError message of a command expected to refuse; asserts no secret leaks into it."""
    with pytest.raises(CommandError) as info:
        run(*args, **options)
    message = str(info.value)
    assert SECRET not in message
    return message


def manage(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "REDIS_URL": settings.REDIS_URL,
        "TEST_REDIS_PORT": os.environ["TEST_REDIS_PORT"],
    }
    # check=False: the tests assert the exit status themselves.
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def no_prompt(monkeypatch):
    """Fail the test if the command prompts."""

    def fail(prompt=""):
        raise AssertionError(f"unexpected prompt {prompt!r}")

    monkeypatch.setattr(create_connection.getpass, "getpass", fail)


@pytest.fixture
def make_demo(make_connection):
    """A demo connection whose on-commit first sync is dropped, so each test decides when to sync."""

    def make(owner=None, label="Demo", scenario="normal", enabled=True):
        credentials = {"api_key": SECRET, "scenario": scenario}
        return make_connection(
            first_sync=False, owner=owner, label=label, credentials=credentials, sync_enabled=enabled
        )

    return make


def state() -> tuple:
    return BrokerConnection.objects.count(), PeriodicTask.objects.count(), SyncLog.objects.count()


# list_providers


def test_list_providers_names_every_broker_and_marks_the_secret_fields():
    out, _ = run("list_providers")
    for key in ("demo", "tradovate", "ibkr_flex", "alpaca"):
        assert re.search(rf"^{key}: ", out, re.MULTILINE)
    assert "environments: demo (Demo (simulated money)), live (Live)" in out
    assert re.search(r"api_key — Demo API key \[required; secret: prompt or TJ_CRED_API_KEY\]", out)
    assert re.search(r"scenario — Scenario \[optional; --field scenario=\.\.\.; one of normal\|auth_error", out)
    assert re.search(r"password — Password \[required; secret", out)
    assert re.search(r"username — Username \[required; --field username", out)


def test_list_providers_runs_as_a_real_process():
    result = manage("list_providers")
    assert result.returncode == 0, result.stderr
    assert "tradovate: Tradovate" in result.stdout
    assert "TJ_CRED_SEC" in result.stdout


@pytest.mark.parametrize(
    "command", ["list_providers", "create_connection", "test_connection", "sync_connection", "sync_status"]
)
def test_every_command_has_help(command):
    result = manage(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


# create_connection


@pytest.mark.django_db
def test_create_reads_the_secret_from_the_environment(trader, monkeypatch, no_prompt):
    monkeypatch.setenv("TJ_CRED_API_KEY", SECRET)
    out, err = run(
        "create_connection",
        "--owner",
        "alice",
        "--broker",
        "demo",
        "--label",
        "Mine",
        "--field",
        "scenario=normal",
        "--interval",
        "30",
        "--disabled",
        "--no-input",
    )
    connection = BrokerConnection.objects.get()
    assert f"Created connection {connection.pk}: Mine (demo) for alice; auto-sync off." in out
    assert connection.owner == trader and connection.sync_interval_min == 30 and not connection.sync_enabled
    assert connection.credentials == {"api_key": SECRET, "scenario": "normal"}
    assert not PeriodicTask.objects.get(name=f"broker-sync:{connection.pk}").enabled
    assert SECRET not in out + err


@pytest.mark.django_db
def test_create_prompts_for_the_secret_with_getpass(trader, monkeypatch, django_capture_on_commit_callbacks):
    prompts = []
    monkeypatch.delenv("TJ_CRED_API_KEY", raising=False)
    monkeypatch.setattr(create_connection.getpass, "getpass", lambda prompt="": prompts.append(prompt) or SECRET)
    with django_capture_on_commit_callbacks(execute=False) as first_sync:
        out, err = run("create_connection", "--owner", "alice", "--broker", "demo", "--label", "Prompted")
    assert prompts == ["Demo API key: "]
    connection = BrokerConnection.objects.get()
    assert connection.credentials == {"api_key": SECRET}
    assert connection.sync_enabled and connection.sync_interval_min == settings.SYNC_INTERVAL_DEFAULT_MIN
    assert "auto-sync every 15 min, first sync queued" in out
    assert len(first_sync) == 1
    assert SECRET not in out + err


@pytest.mark.django_db
def test_create_takes_non_secret_fields_as_options_and_each_secret_from_the_environment(trader, monkeypatch, no_prompt):
    monkeypatch.setenv("TJ_CRED_PASSWORD", SECRET)
    monkeypatch.setenv("TJ_CRED_SEC", SECRET + "-sec")
    out, _ = run(
        "create_connection",
        "--owner",
        "alice",
        "--broker",
        "tradovate",
        "--label",
        "Futures",
        "--disabled",
        "--environment",
        "live",
        "--field",
        "username=alice",
        "--field",
        "app_id=TradeJournal",
        "--field",
        "app_version=1.0",
        "--field",
        "cid=1234",
        "--no-input",
    )
    connection = BrokerConnection.objects.get()
    assert connection.environment == "live"
    assert connection.credentials == {
        "username": "alice",
        "app_id": "TradeJournal",
        "app_version": "1.0",
        "cid": "1234",
        "password": SECRET,
        "sec": SECRET + "-sec",
    }
    assert "(tradovate, live)" in out and SECRET not in out


@pytest.mark.django_db
def test_a_secret_on_the_command_line_is_refused_without_echoing_it(trader, monkeypatch, no_prompt):
    monkeypatch.setenv("TJ_CRED_API_KEY", "from-env")
    message = refused(
        "create_connection", "--owner", "alice", "--broker", "demo", "--label", "X", "--field", f"api_key={SECRET}"
    )
    assert "api_key is a secret and is not accepted on the command line" in message
    assert "TJ_CRED_API_KEY" in message
    assert state() == (0, 0, 0)


def test_a_secret_on_the_command_line_is_refused_by_the_real_process():
    result = manage(
        "create_connection", "--owner", "alice", "--broker", "demo", "--label", "X", "--field", f"api_key={SECRET}"
    )
    assert result.returncode == 1
    assert "api_key is a secret" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_an_unknown_broker_exits_non_zero_naming_the_known_ones():
    result = manage("create_connection", "--owner", "alice", "--broker", "nope", "--label", "X")
    assert result.returncode == 1
    assert f"Unknown broker type 'nope'. The {KNOWN_COUNT} known types are listed by" in result.stderr


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--broker", "nope"], f"Unknown broker type 'nope'. The {KNOWN_COUNT} known types are listed by"),
        (["--interval", "4"], "Sync interval must be a whole number of minutes from 5 to 60."),
        (["--interval", "61"], "Sync interval must be a whole number of minutes from 5 to 60."),
        (["--interval", "ten"], "Sync interval must be a whole number of minutes from 5 to 60."),
        (["--owner", "mallory"], "No user named 'mallory'."),
        (
            ["--field", "scenario=sunny"],
            "scenario: Scenario must be one of: normal, auth_error, broker_down, account_down.",
        ),
        (["--field", "colour=blue"], "colour: Demo broker (simulated) takes no field named 'colour'."),
        (["--field", "scenario"], "--field takes NAME=VALUE, got 'scenario'."),
        (
            [
                "--broker",
                "tradovate",
                "--environment",
                "paper",
                "--field",
                "username=a",
                "--field",
                "app_id=b",
                "--field",
                "app_version=1",
                "--field",
                "cid=1",
            ],
            "environment: Environment must be one of: demo, live.",
        ),
        (["--broker", "tradovate"], "username: Username is required."),
    ],
)
def test_bad_input_is_refused_before_any_prompt_and_changes_nothing(trader, no_prompt, options, expected):
    # The defaults below, each unless the case gives its own.
    base = {"--owner": "alice", "--broker": "demo", "--label": "X"}
    args = [item for name, value in base.items() if name not in options for item in (name, value)]
    assert expected in refused("create_connection", *args, *options)
    assert state() == (0, 0, 0)


@pytest.mark.django_db
def test_a_missing_secret_without_a_prompt_is_refused(trader, monkeypatch):
    monkeypatch.delenv("TJ_CRED_API_KEY", raising=False)
    message = refused("create_connection", "--owner", "alice", "--broker", "demo", "--label", "X", "--no-input")
    assert "Demo API key (api_key) is required: set TJ_CRED_API_KEY" in message
    assert state() == (0, 0, 0)


@pytest.mark.django_db
def test_the_services_own_checks_apply_after_the_secrets(trader, monkeypatch):
    monkeypatch.setenv("TJ_CRED_API_KEY", SECRET)
    message = refused("create_connection", "--owner", "alice", "--broker", "demo", "--label", "  ", "--no-input")
    assert message == "label: This field cannot be blank."
    assert state() == (0, 0, 0)


# test_connection


@pytest.mark.django_db
def test_test_connection_lists_the_accounts(make_demo):
    connection = make_demo()
    out, err = run("test_connection", str(connection.pk))
    assert f"Connection {connection.pk} (Demo): logged in to Demo broker (simulated), 2 account(s)." in out
    assert "DEMO-FUT-1  Demo futures  USD" in out and "DEMO-STK-1  Demo stocks  USD" in out
    assert SECRET not in out + err
    assert SyncLog.objects.count() == 0 and connection.accounts.count() == 0


@pytest.mark.django_db
def test_test_connection_fails_with_the_brokers_message(make_demo):
    connection = make_demo(scenario="auth_error")
    before = BrokerConnection.objects.filter(pk=connection.pk).values().get()
    message = refused("test_connection", str(connection.pk))
    assert message.startswith("Demo broker (simulated): The demo broker refused the login")
    assert BrokerConnection.objects.filter(pk=connection.pk).values().get() == before


@pytest.mark.django_db
def test_test_connection_of_an_unknown_id():
    assert refused("test_connection", "42") == "No connection with id 42"


# sync_connection


@pytest.mark.django_db
def test_sync_connection_runs_inline_and_prints_counts_matching_the_database(make_demo):
    connection = make_demo()
    out, err = run("sync_connection", str(connection.pk))
    sync_log = SyncLog.objects.get(connection=connection)
    assert sync_log.status == SyncLog.Status.SUCCESS and sync_log.trigger == SyncLog.Trigger.MANUAL
    imported = Trade.objects.filter(account__connection=connection).count()
    assert imported > 0
    assert f"Sync of connection {connection.pk}: SUCCESS" in out
    assert f"imported: {imported}\n" in out
    assert "skipped:  0\n" in out
    assert re.search(r"duration: \d+ ms", out)
    for account in connection.accounts.all():
        count = Trade.objects.filter(account=account).count()
        assert f"account {account.external_id}: imported {count}, skipped 0" in out
    assert SECRET not in out + err


@pytest.mark.django_db
def test_a_failed_inline_sync_prints_the_error_and_exits_non_zero(make_demo):
    connection = make_demo(scenario="broker_down")
    with pytest.raises(CommandError) as info:
        call_command("sync_connection", str(connection.pk), stdout=(out := StringIO()))
    assert "The demo broker is down" in str(info.value)
    assert f"Sync of connection {connection.pk}: FAILED" in out.getvalue()
    assert "error: The demo broker is down" in out.getvalue()


@pytest.mark.django_db
def test_sync_connection_async_queues_the_task_and_prints_its_id(make_demo):
    connection = make_demo()
    out, _ = run("sync_connection", str(connection.pk), "--async")
    task_id = re.search(r"Queued the sync of connection \d+: task id (\S+)", out).group(1)
    # Tasks are eager in the tests: the queued run has already happened under that id.
    assert SyncLog.objects.get(connection=connection).task_id == task_id


@pytest.mark.django_db
def test_sync_connection_of_an_unknown_id_changes_nothing(make_demo):
    make_demo()
    before = state()
    assert refused("sync_connection", "42") == "No connection with id 42"
    assert refused("sync_connection", "42", "--async") == "No connection with id 42"
    assert state() == before


# sync_status


@pytest.mark.django_db
def test_sync_status_shows_each_connection_with_paused_and_error_rows(make_demo, other_trader):
    healthy = make_demo(label="Healthy")
    paused = make_demo(label="Paused", enabled=False)
    broken = make_demo(owner=other_trader, label="Broken", scenario="auth_error")
    run("sync_connection", str(healthy.pk))
    with pytest.raises(CommandError):
        run("sync_connection", str(broken.pk))

    out, err = run("sync_status")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "OWNER",
        "BROKER",
        "LABEL",
        "STATUS",
        "LAST",
        "SYNC",
        "NEXT",
        "SYNC",
        "LAST",
        "ERROR",
    ]
    rows = {int(line.split()[0]): line for line in lines[1:]}
    assert set(rows) == {healthy.pk, paused.pk, broken.pk}
    assert re.match(
        rf"{healthy.pk}\s+alice\s+demo\s+Healthy\s+CONNECTED\s+{UTC_ISO}\s+{UTC_ISO}\s+-$", rows[healthy.pk]
    )
    assert re.match(rf"{paused.pk}\s+alice\s+demo\s+Paused\s+PAUSED\s+-\s+-\s+-$", rows[paused.pk])
    # Refused credentials hold the schedule, so there is no next sync.
    assert re.match(
        rf"{broken.pk}\s+bob\s+demo\s+Broken\s+ERROR\s+{UTC_ISO}\s+-\s+The demo broker refused the login",
        rows[broken.pk],
    )
    assert SECRET not in out + err

    mine, _ = run("sync_status", "--owner", "bob")
    assert [int(line.split()[0]) for line in mine.splitlines()[1:]] == [broken.pk]


@pytest.mark.django_db
def test_sync_status_with_nothing_to_show_and_with_an_unknown_owner(trader):
    assert run("sync_status")[0] == "No connections.\n"
    assert run("sync_status", "--owner", "alice")[0] == "No connections.\n"
    assert refused("sync_status", "--owner", "mallory") == "No user named 'mallory'."
