"""`make run`: the whole product on one machine — Redis, web, Celery worker and beat — in one terminal.

Defaults are embedded (SQLite and a private Redis under var/); a REDIS_URL or DATABASE_URL
in the environment is used instead. Output of every process is prefixed with its name;
a process that exits is restarted (at most 5 times in 5 minutes); Ctrl-C stops every
process this started, redis-server included.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cryptography.fernet import Fernet

from config import localenv

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PYTHON = sys.executable
WEB_ADDRESS = os.environ.get("WEB_ADDRESS", "127.0.0.1:8000")
MAX_RESTARTS = 5
RESTART_WINDOW_S = 300


def local_settings() -> dict[str, str]:
    """Keys made once per checkout and kept in var/local.env, so restarts can read old credentials.

    The same file tells plain manage.py (config.localenv) everything else `make run` chose.
    """
    current = localenv.read()
    made = {
        key: Fernet.generate_key().decode()
        for key in ("DJANGO_SECRET_KEY", "FIELD_ENCRYPTION_KEYS")
        if not current.get(key)
    }
    defaults = {"DJANGO_DEBUG": current.get("DJANGO_DEBUG", "1"), "LOG_FORMAT": current.get("LOG_FORMAT", "console")}
    saved = localenv.update({**made, **defaults})
    # Where Redis and the database are is decided afresh by each start, not read back.
    return {key: value for key, value in saved.items() if key not in {"REDIS_URL", "DATABASE_URL"}}


def busy_port_message(address: str) -> str | None:
    """Why the web server could not listen on `address`, with what to do; None if it can."""
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        try:
            s.bind((host or "127.0.0.1", int(port)))
        except OSError:
            return (
                f"{address} is already in use (another `make run`, or another server). "
                f"Stop that one, or choose a free port: WEB_ADDRESS=127.0.0.1:{int(port) + 1} make run"
            )
    return None


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def pipe_output(name: str, process: subprocess.Popen, lock: threading.Lock) -> None:
    for line in iter(process.stdout.readline, b""):
        with lock:
            sys.stdout.write(f"{name:>6} | {line.decode(errors='replace')}")
            sys.stdout.flush()


def _stop(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    from config import localredis

    busy = busy_port_message(WEB_ADDRESS)
    if busy:
        print(f"   run | {busy}", flush=True)
        return 1
    env = os.environ.copy()
    for key, value in local_settings().items():
        env.setdefault(key, value)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")

    redis_process = None
    if not env.get("REDIS_URL"):
        port = free_port(6390)
        redis_process = localredis.start(port, VAR / "redis", persist=True)
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        print(f" redis | private redis-server on 127.0.0.1:{port} (data in var/redis)", flush=True)
    # manage.py run beside this one reads the same Redis (and database) from var/local.env.
    localenv.update({"REDIS_URL": env["REDIS_URL"], "DATABASE_URL": env.get("DATABASE_URL")})

    processes: dict[str, subprocess.Popen] = {}
    try:
        subprocess.run([PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run([PYTHON, "manage.py", "seed_demo"], cwd=ROOT, env=env, check=True)
        commands = {
            "web": [PYTHON, "manage.py", "runserver", "--noreload", WEB_ADDRESS],
            "worker": [PYTHON, "-m", "celery", "-A", "config", "worker", "-l", "INFO", "--pool", "threads"],
            "beat": [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-l",
                "INFO",
            ],
        }
        lock = threading.Lock()

        def start(name):
            # Own sessions: Ctrl-C reaches only this script, which then stops them in order.
            process = subprocess.Popen(
                commands[name],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes[name] = process
            threading.Thread(target=pipe_output, args=(name, process, lock), daemon=True).start()

        for name in commands:
            start(name)
        print(f"   run | open http://{WEB_ADDRESS}/ — Ctrl-C stops everything", flush=True)
        signal.signal(signal.SIGTERM, _stop)
        restarts: dict[str, list[float]] = {name: [] for name in commands}
        while True:
            time.sleep(0.5)
            for name, process in list(processes.items()):
                if process.poll() is None:
                    continue
                # Like docker compose's restart policy: a Celery worker exits when Redis goes away
                # with messages in hand; bring it back unless it keeps dying.
                recent = [t for t in restarts[name] if time.monotonic() - t < RESTART_WINDOW_S]
                if len(recent) >= MAX_RESTARTS:
                    print(f"   run | {name} keeps stopping (code {process.returncode}); stopping the rest", flush=True)
                    return 1
                restarts[name] = [*recent, time.monotonic()]
                print(f"   run | {name} stopped (code {process.returncode}); restarting it", flush=True)
                start(name)
    except KeyboardInterrupt:
        print("\n   run | stopping...", flush=True)
        return 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis_process is not None:
            localredis.stop(redis_process)


if __name__ == "__main__":
    sys.exit(main())
