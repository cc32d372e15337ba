"""Beside `make run`: manage.py finds its settings in var/local.env, and a busy port is reported up front."""

import socket
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from config import localenv, run_local

ROOT = Path(__file__).resolve().parents[2]
# Run manage.py with var/local.env pointed at a temporary file, so the checkout's own is never touched.
MANAGE_WITH_LOCAL_ENV = (
    "import sys; from pathlib import Path; import config.localenv as l; l.LOCAL_ENV = Path(sys.argv[1]); "
    "from django.core.management import execute_from_command_line; "
    "execute_from_command_line(['manage.py', *sys.argv[2:]])"
)


def manage(local_env: Path, *args: str) -> subprocess.CompletedProcess:
    # No keys and no Redis in the environment, as in a second terminal next to `make run`.
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings"}
    return subprocess.run(
        [sys.executable, "-c", MANAGE_WITH_LOCAL_ENV, str(local_env), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_py_reads_what_make_run_wrote(tmp_path):
    local_env = tmp_path / "local.env"
    localenv.update(
        {
            "DJANGO_SECRET_KEY": "local-secret",
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "REDIS_URL": "redis://127.0.0.1:6390/0",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "LOG_FORMAT": "console",
        },
        local_env,
    )
    assert oct(local_env.stat().st_mode & 0o777) == "0o600"
    result = manage(local_env, "list_providers")
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "alpaca" in result.stdout


def test_without_local_env_the_error_says_not_to_make_new_keys(tmp_path):
    result = manage(tmp_path / "missing.env", "list_providers")
    assert result.returncode != 0
    assert "Set the environment variable DJANGO_SECRET_KEY" in result.stderr
    assert "start it once: it writes var/local.env" in result.stderr


def test_the_environment_wins_and_production_never_reads_the_file(tmp_path):
    local_env = tmp_path / "local.env"
    localenv.update({"DJANGO_SECRET_KEY": "from-file", "REDIS_URL": "redis://file:1/0"}, local_env)
    local = {"REDIS_URL": "redis://mine:2/0"}
    assert localenv.apply_in_local_mode(local, local_env)
    assert local == {"REDIS_URL": "redis://mine:2/0", "DJANGO_SECRET_KEY": "from-file"}
    production = {"DJANGO_SECRET_KEY": "set-by-the-operator"}
    assert not localenv.apply_in_local_mode(production, local_env)
    assert production == {"DJANGO_SECRET_KEY": "set-by-the-operator"}


def test_make_run_keeps_its_keys_and_redis_is_decided_afresh(tmp_path, monkeypatch):
    monkeypatch.setattr(localenv, "LOCAL_ENV", tmp_path / "local.env")
    first = run_local.local_settings()
    localenv.update({"REDIS_URL": "redis://127.0.0.1:6390/0"})
    again = run_local.local_settings()
    assert again == first and "REDIS_URL" not in again
    assert first["DJANGO_DEBUG"] == "1" and first["LOG_FORMAT"] == "console"
    assert localenv.read()["REDIS_URL"] == "redis://127.0.0.1:6390/0"


def test_a_busy_port_stops_make_run_before_anything_starts(monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(run_local, "WEB_ADDRESS", f"127.0.0.1:{port}")

        def nothing_may_start(*args, **kwargs):
            raise AssertionError("a process was started although the port is taken")

        monkeypatch.setattr(subprocess, "Popen", nothing_may_start)
        monkeypatch.setattr(subprocess, "run", nothing_may_start)
        monkeypatch.setattr(localenv, "update", nothing_may_start)
        assert run_local.main() == 1
    out = capsys.readouterr().out
    assert f"127.0.0.1:{port} is already in use" in out
    assert f"WEB_ADDRESS=127.0.0.1:{port + 1} make run" in out
