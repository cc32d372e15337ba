"""Start real Celery worker and beat processes against the test database and the test Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from brokers import periodic_tasks
from brokers.models import SyncLog
from config.celery_app import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


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
        # Shrunk with the intervals: a killed beat's lease frees the standby (or a restarted beat) in 3 s.
        SYNC_BEAT_LEASE_TTL_S="3",
        LOG_FORMAT="console",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def celery_command(kind: str, log_dir: Path, concurrency: int = 2) -> list[str]:
    """`celery worker` or `celery beat` (kind "beat" or "beat-standby": the same command, a second process)."""
    command = [sys.executable, "-m", "celery", "-A", "config", kind.split("-")[0], "-l", "INFO"]
    if kind == "worker":
        return [*command, "--concurrency", str(concurrency), "--without-mingle", "--without-gossip"]
    return [*command, "--max-interval", "1", "--schedule", str(log_dir / f"{kind}-schedule")]


def kill9(process: subprocess.Popen) -> None:
    """SIGKILL the process and its children (the worker's pool), as a crash or the OOM killer would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def celery_processes(
    tmp_path: Path,
    *,
    worker: bool = True,
    beat: bool = True,
    standby_beat: bool = False,
    concurrency: int = 2,
    **env_extra: str,
):
    """Yield {name: Popen} for a worker, a beat and a second beat ("beat-standby"), as asked; stop them all on
    exit. Logs go to tmp_path."""
    requested = (("worker", worker), ("beat", beat), ("beat-standby", standby_beat))
    tmp_path.mkdir(parents=True, exist_ok=True)
    processes = {}
    try:
        for kind in [kind for kind, wanted in requested if wanted]:
            processes[kind] = start_process(tmp_path, kind, concurrency=concurrency, **env_extra)
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


def start_process(tmp_path: Path, kind: str, concurrency: int = 2, **env_extra: str) -> subprocess.Popen:
    """One process of `kind`; logs appended to tmp_path/<kind>.log. Outside celery_processes (e.g. a beat
    restarted after kill9) the caller stops it (stop)."""
    with open(tmp_path / f"{kind}.log", "ab") as log:
        return subprocess.Popen(
            celery_command(kind, tmp_path, concurrency),
            cwd=ROOT,
            env=child_env(**env_extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        kill9(process)


class BeatDispatches:
    """What beat sent, with no worker to take it: pops the default queue and stamps each message's arrival."""

    def __init__(self):
        import redis

        self.client = redis.Redis.from_url(settings.REDIS_URL)
        self.arrivals: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            popped = self.client.brpop(celery_app.conf.task_default_queue, timeout=0.2)
            if popped:
                headers = json.loads(popped[1])["headers"]
                self.arrivals.append((time.time(), headers.get("periodic_task_name", "")))

    def times(self, name: str, after: float = 0.0) -> list[float]:
        return [t for t, n in list(self.arrivals) if n == name and t >= after]


def send_sync(connection, trigger: str = "scheduled"):
    """Queue a sync through Redis, as beat or "Sync now" does."""
    return celery_app.tasks[periodic_tasks.SYNC_TASK].apply_async(
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
