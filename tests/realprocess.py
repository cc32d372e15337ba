"""Start real Celery worker and beat processes against the test database and the test Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from brokers import schedules
from brokers.models import SyncLog
from config.celery_app import app as celery_app

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The test database (not the dev one) as a DATABASE_URL the child processes understand."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        FIELD_ENCRYPTION_KEYS=",".join(settings.FIELD_ENCRYPTION_KEYS),
        SYNC_INTERVAL_UNIT="seconds",
        LOG_FORMAT="console",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def celery_command(kind: str, log_dir: Path, concurrency: int = 2) -> list[str]:
    command = [sys.executable, "-m", "celery", "-A", "config", kind, "-l", "INFO"]
    if kind == "worker":
        return [*command, "--concurrency", str(concurrency), "--without-mingle", "--without-gossip"]
    return [*command, "--max-interval", "1", "--schedule", str(log_dir / "beat-schedule")]


def kill9(process: subprocess.Popen) -> None:
    """SIGKILL the process and its children (the worker's pool), as a crash or the OOM killer would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def celery_processes(tmp_path: Path, *, worker: bool = True, beat: bool = True, concurrency: int = 2, **env_extra: str):
    """Yield {name: Popen} for a worker and/or beat; stop them all on exit. Logs go to tmp_path."""
    env = child_env(**env_extra)
    kinds = [kind for kind, wanted in (("worker", worker), ("beat", beat)) if wanted]
    tmp_path.mkdir(parents=True, exist_ok=True)
    processes = {}
    try:
        for kind in kinds:
            with open(tmp_path / f"{kind}.log", "wb") as log:
                processes[kind] = subprocess.Popen(
                    celery_command(kind, tmp_path, concurrency),
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        yield processes
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill9(process)


def send_sync(connection, trigger: str = "scheduled"):
    """Queue a sync through Redis, as beat or "Sync now" does."""
    return celery_app.tasks[schedules.SYNC_TASK].apply_async(
        kwargs={"connection_id": connection.pk, "trigger": trigger}
    )


def finished_logs(connection):
    return SyncLog.objects.filter(connection=connection).exclude(status=SyncLog.Status.RUNNING)


def wait_for(predicate, timeout: float, interval: float = 0.25, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")
