"""Production logs: one JSON object per line for Django's, Celery's, gunicorn's, Python's and our own lines."""

import json
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
# A process with the production settings that logs the way each part of the stack does.
LOG_EACH_KIND = """
import logging, warnings
import django
django.setup()
import structlog
from gunicorn.glogging import SafeAtoms
logging.getLogger("django.request").warning("Forbidden: %s", "/metrics")
logging.getLogger("celery.worker.strategy").info("Task %s received", "sync.tasks.sync_connection[abc]")
structlog.get_logger("sync").info("sync_started", connection_id=7, password="hunter2-SECRET")
warnings.warn("a library warns")
atoms = {"h": "10.0.0.9", "m": "GET", "U": "/api/trades/", "q": "token=SECRET-IN-QUERY", "s": "200", "D": "1500",
         "r": "GET /api/trades/?token=SECRET-IN-QUERY HTTP/1.1"}
logging.getLogger("gunicorn.access").info('%(h)s "%(r)s" %(s)s', SafeAtoms(atoms))
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("django.request").exception("Internal Server Error: %s", "/brokers/")
"""


def run_with(log_format: str) -> list[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": "logging-test",
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "LOG_FORMAT": log_format,
    }
    result = subprocess.run(
        [sys.executable, "-c", LOG_EACH_KIND], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


def test_production_lines_are_json_objects_with_level_logger_and_time():
    lines = run_with("json")
    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    by_logger = {r["logger"]: r for r in records}
    assert set(by_logger) == {
        "django.request",
        "celery.worker.strategy",
        "sync",
        "py.warnings",
        "gunicorn.access",
        "axes.apps",
    }
    assert all({"event", "level", "logger", "timestamp"} <= set(r) for r in records)
    assert by_logger["sync"]["password"] == "[redacted]"
    access = by_logger["gunicorn.access"]
    assert access | {"timestamp": None} == {
        "event": "http_request",
        "method": "GET",
        "path": "/api/trades/",
        "status": "200",
        "duration_ms": 1.5,
        "remote_addr": "10.0.0.9",
        "level": "info",
        "logger": "gunicorn.access",
        "timestamp": None,
    }
    error = [r for r in records if r["event"] == "Internal Server Error: /brokers/"][0]
    assert "ZeroDivisionError" in error["exception"]
    assert "SECRET" not in "\n".join(lines)


def test_the_local_console_format_is_readable_text():
    lines = run_with("console")
    assert any("sync_started" in line and "connection_id=7" in line for line in lines)
    assert not any(line.startswith("{") for line in lines)
    assert "hunter2-SECRET" not in "\n".join(lines)
