"""No secret in plain text (issue 25): the development server's request log (make run) goes through the same
redaction as every other line."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_development_servers_request_log_shows_no_code_state_or_token(tmp_path):
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "runserver-test",
        "DJANGO_DEBUG": "true",
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "LOG_FORMAT": "console",
        "PYTHONUNBUFFERED": "1",
    }
    # As make run starts it (config/run_local.py).
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "runserver did not start"
                time.sleep(0.2)
        for path in (
            "/brokers/oauth/callback/?code=CODE-SECRET&state=STATE-SECRET",
            "/api/connections/?token=TOKEN-SECRET",
            "/no-such-page/?token=TOKEN-SECRET",
        ):
            requests.get(f"http://127.0.0.1:{port}{path}", timeout=10, allow_redirects=False)
    finally:
        server.terminate()
        log = server.communicate(timeout=20)[0]
    assert "/brokers/oauth/callback/" in log, log
    for secret in ("CODE-SECRET", "STATE-SECRET", "TOKEN-SECRET"):
        assert secret not in log, log
