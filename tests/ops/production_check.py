"""The production-like run (.ci/run, `make production-check`): the compose stack's commands, natively.

The commands are read from docker-compose.yml and the Dockerfile themselves (collectstatic,
migrate, gunicorn, one worker, one beat) and the environment from .env.example plus the
compose file's own variables, so what runs here is what the containers run. Against a
PostgreSQL named by --database-url and a private redis-server, with DJANGO_DEBUG unset
(production), it then checks what an operator would: a trader logs in, adds a demo
connection and sees trades arrive; the admin's CSS, htmx and Swagger UI load; /readyz is
green; /metrics counts the sync and refuses a scrape without its token; beat dispatches; and
every line gunicorn, the worker and beat wrote is one JSON object. Then it stops everything.

    python tests/ops/production_check.py --database-url postgres://user@host:port/name
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
# The services that run our image, besides web (the image's CMD).
APP_SERVICES = ("migrate", "worker", "beat")
# Keep the check within a minute or two: beat's first due message comes a minute after it starts.
BEAT_DISPATCH_DEADLINE_S = 90
STARTUP_DEADLINE_S = 60
TRADES_DEADLINE_S = 30


# --- reading the deployment files (tests/test_deployment.py uses these too) ---------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_commands() -> dict[str, list[str]]:
    services = compose()["services"]
    return {name: services[name]["command"] for name in APP_SERVICES}


def compose_environment_names() -> set[str]:
    """Variables the compose file sets for the app on top of .env (DATABASE_URL, REDIS_URL)."""
    return set(compose()["x-app"]["environment"])


def _dockerfile_lines() -> list[str]:
    # Join continued lines, so a RUN with a trailing backslash reads as one instruction.
    return DOCKERFILE.read_text().replace("\\\n", " ").splitlines()


def dockerfile_cmd() -> list[str]:
    (line,) = [line for line in _dockerfile_lines() if line.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def dockerfile_collectstatic() -> list[str]:
    """The build step's `python manage.py collectstatic ...`, without the throwaway build settings."""
    (line,) = [line for line in _dockerfile_lines() if "collectstatic" in line]
    words = shlex.split(line.removeprefix("RUN "))
    return words[words.index("python") :]


def env_example() -> dict[str, str]:
    """Every variable .env.example names, set or commented out (`# NAME=`), with its example value."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            commented = line.lstrip().startswith("#")
            values[match.group(1)] = "" if commented else match.group(2).strip()
    return values


def native(command: list[str]) -> list[str]:
    """A container command for this machine: python, celery and gunicorn from the running venv."""
    program, *args = command
    if program == "python":
        return [sys.executable, *args]
    return [str(BIN / program), *args]


# --- running ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def production_environment(database_url: str, redis_url: str, web_port: int) -> tuple[dict[str, str], dict]:
    """The operator's environment: .env.example's values, the required secrets filled in, compose's URLs."""
    from cryptography.fernet import Fernet

    example = env_example()
    chosen = {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        # Mail goes to files here instead of an SMTP server this machine does not have.
        "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": tempfile.mkdtemp(prefix="tj-prod-mail-"),
        # Prometheus would scrape from its own network; the check's requests come from loopback,
        # outside it, so only the token lets them in.
        "METRICS_TOKEN": secrets.token_urlsafe(24),
        "METRICS_ALLOWED_NETWORKS": "192.0.2.0/24",
        "GUNICORN_BIND": f"127.0.0.1:{web_port}",
        "GUNICORN_WORKERS": "2",
        # No TLS proxy in front here: plain http, as .env.example says to try compose on
        # localhost. (CI checks the https values themselves with `check --deploy`.)
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_SECURE_COOKIES": "false",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
    }
    unknown = set(chosen) - set(example)
    assert not unknown, f".env.example does not document {sorted(unknown)}"
    env = {key: value for key, value in example.items() if value} | chosen
    env |= {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    assert set(env) - set(example) <= compose_environment_names()
    # Nothing from this shell leaks in (no DJANGO_DEBUG, no test settings): only what a container has.
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    return base | env | {"PYTHONUNBUFFERED": "1"}, chosen


class Process:
    """One long-running process; its output is kept line by line for the JSON check."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name
        self.lines: list[str] = []
        self.popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in iter(self.popen.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def stop(self) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode


def run_once(command: list[str], env: dict[str, str], **extra_env: str) -> None:
    result = subprocess.run(command, cwd=ROOT, env=env | extra_env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{result.stdout}{result.stderr}")


def wait_for(what: str, deadline_s: float, probe):
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except requests.RequestException as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {deadline_s} s (last error: {last})")


def step(message: str) -> None:
    print(f"production-check | {message}", flush=True)


# --- what an operator and a trader check ----------------------------------------------------


def check_static(session: requests.Session, base: str, page: str, pattern: str) -> str:
    html = session.get(base + page, timeout=10).text
    match = re.search(pattern, html)
    assert match, f"{page} links no file matching {pattern}"
    response = session.get(base + match.group(1), timeout=10)
    assert response.status_code == 200 and response.content, f"{match.group(1)} answered {response.status_code}"
    return match.group(1)


def trader_journey(base: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    login = session.get(f"{base}/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    answer = session.post(
        f"{base}/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{base}/login/"},
        timeout=10,
    )
    assert answer.url == f"{base}/brokers/", f"login ended on {answer.url}"
    step("logged in")

    form = session.get(f"{base}/brokers/add/?broker=demo", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    saved = session.post(
        f"{base}/brokers/add/?broker=demo",
        data={
            "csrfmiddlewaretoken": token,
            "broker_type": "demo",
            "label": "Production check",
            "cred_api_key": "production-check-key",
            "cred_scenario": "normal",
            "sync_interval_min": "15",
            "action": "save",
        },
        headers={"Referer": f"{base}/brokers/add/"},
        timeout=10,
    )
    assert saved.url == f"{base}/brokers/", f"saving the connection ended on {saved.url}"
    step("added a demo connection")

    count = wait_for(
        "trades of the demo connection in the API",
        TRADES_DEADLINE_S,
        lambda: len(session.get(f"{base}/api/trades/", timeout=10).json()["results"]),
    )
    step(f"trades arrived ({count} on the first API page)")
    return session


def check_operator_endpoints(base: str, metrics_token: str) -> None:
    ready = requests.get(f"{base}/readyz?format=json", timeout=10)
    assert ready.status_code == 200, f"/readyz: {ready.status_code} {ready.text}"
    step(f"/readyz: {ready.json()}")
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 403, "/metrics answered without its token"

    def metrics_after_the_sync() -> str | None:
        # Trades show in the API as each batch commits; the run is counted when it closes, after
        # its round trips are rebuilt, so wait for that.
        metrics = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {metrics_token}"}, timeout=10)
        assert metrics.status_code == 200, metrics.status_code
        return metrics.text if 'tj_syncs_total{broker="demo"' in metrics.text else None

    text = wait_for("the demo sync counted in /metrics", TRADES_DEADLINE_S, metrics_after_the_sync)
    synced = re.search(r'^tj_syncs_total\{broker="demo",outcome="SUCCESS"\} (\d+)', text, re.M)
    imported = re.search(r'^tj_trades_imported_total\{broker="demo"\} (\d+)', text, re.M)
    assert synced and int(synced.group(1)) >= 1, "tj_syncs_total does not count the demo sync"
    assert imported and int(imported.group(1)) > 0, "tj_trades_imported_total does not count its trades"
    for name in ("tj_sync_duration_seconds_bucket", "tj_connections", "tj_queue_depth", "tj_beat_lag_seconds"):
        assert re.search(rf"^{name}[{{ ]", text, re.M), f"/metrics has no {name}"
    step("/metrics counts the sync and refuses a scrape without the token")


def json_lines_only(processes: list[Process]) -> None:
    for process in processes:
        for line in process.lines:
            if not line.strip():
                continue
            try:
                assert isinstance(json.loads(line), dict)
            except (ValueError, AssertionError):
                raise AssertionError(f"{process.name} wrote a line that is not a JSON object: {line!r}") from None
    step("every line of gunicorn, worker and beat is one JSON object")


def calendars_built_before_workers(web: Process) -> None:
    """gunicorn's master builds the exchanges' calendars before it forks: no worker's first calendar page waits."""
    lines = list(web.lines)
    built = next((i for i, line in enumerate(lines) if "exchange calendars built in" in line), None)
    booted = next((i for i, line in enumerate(lines) if "Booting worker" in line), None)
    assert built is not None and booted is not None and built < booted, "\n".join(lines[-20:])
    step("gunicorn built the exchange calendars before its workers forked")


def beat_dispatched(beat: Process) -> bool:
    # sync.beat.scheduler logs one line per batch it sends.
    return any('"beat: sent ' in line for line in beat.lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    database_url = parser.parse_args().database_url
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("Give a PostgreSQL --database-url (or DATABASE_URL); production runs on PostgreSQL.")
    ensure_database(database_url)

    from config import localredis

    redis_port, web_port = free_port(), free_port()
    env, chosen = production_environment(database_url, f"redis://127.0.0.1:{redis_port}/0", web_port)
    redis_process = localredis.start(redis_port, Path(tempfile.mkdtemp(prefix="tj-prod-redis-")))
    base = f"http://127.0.0.1:{web_port}"
    started = time.monotonic()
    processes: list[Process] = []
    try:
        commands = compose_commands()
        run_once(native(dockerfile_collectstatic()), env)
        run_once(native(commands["migrate"]), env)
        step("collectstatic and migrate done")
        password = secrets.token_urlsafe(16)
        run_once(
            [sys.executable, "manage.py", "createsuperuser", "--no-input", "--username", "operator", "--email", ""],
            env,
            DJANGO_SUPERUSER_PASSWORD=password,
        )
        processes = [
            Process("web", native(dockerfile_cmd()), env),
            Process("worker", native(commands["worker"]), env),
            Process("beat", native(commands["beat"]), env),
        ]
        wait_for("/healthz", STARTUP_DEADLINE_S, lambda: requests.get(f"{base}/healthz", timeout=2).ok)
        wait_for("/readyz", STARTUP_DEADLINE_S, lambda: requests.get(f"{base}/readyz", timeout=10).ok)
        step("web, worker and beat are up")
        calendars_built_before_workers(processes[0])

        session = trader_journey(base, "operator", password)
        css = check_static(session, base, "/admin/login/", r'href="(/static/admin/css/[^"]+\.css)"')
        htmx = check_static(session, base, "/brokers/", r'src="(/static/[^"]*htmx[^"]*\.js)"')
        swagger = check_static(session, base, "/api/docs/", r'src="(/static/drf_spectacular_sidecar/[^"]+\.js)"')
        step(f"static files load: {css}, {htmx}, {swagger}")
        check_operator_endpoints(base, chosen["METRICS_TOKEN"])
        wait_for(
            "beat's first scheduled dispatch",
            max(1, BEAT_DISPATCH_DEADLINE_S - (time.monotonic() - started)),
            lambda: beat_dispatched(processes[2]),
        )
        step("beat dispatched a scheduled task")
        json_lines_only(processes)
    except BaseException:
        for process in processes:
            print(f"--- {process.name} output ---\n" + "\n".join(process.lines[-40:]), flush=True)
        raise
    finally:
        codes = {process.name: process.stop() for process in processes}
        localredis.stop(redis_process)
    step(f"stopped everything (exit codes {codes}); {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
