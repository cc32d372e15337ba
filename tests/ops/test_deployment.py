"""The Dockerfile, docker-compose.yml, .env.example and the production-like CI run agree.

tests/ops/production_check.py runs the compose file's and the Dockerfile's own commands; these
tests make sure it can (every command maps to this checkout), that the healthchecks probe
what exists, and that every variable the operator is told about is one the code reads.
"""

import re
from pathlib import Path

from sync.health import LIVENESS_PATH
from tests.ops import production_check

ROOT = Path(__file__).resolve().parents[2]
CODE = "\n".join(path.read_text() for path in (ROOT / "config").glob("*.py"))


def test_the_ci_run_executes_the_deployment_files_commands():
    commands = production_check.compose_commands()
    assert commands["migrate"] == ["python", "manage.py", "migrate", "--no-input"]
    assert commands["worker"][:4] == ["celery", "-A", "config", "--quiet"] and "worker" in commands["worker"]
    assert commands["beat"][:5] == ["celery", "-A", "config", "--quiet", "beat"]
    assert production_check.dockerfile_cmd() == ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    assert production_check.dockerfile_collectstatic()[:3] == ["python", "manage.py", "collectstatic"]
    # web runs the image's CMD, which is what the CI run starts.
    assert "command" not in production_check.compose()["services"]["web"]
    for command in [*commands.values(), production_check.dockerfile_cmd(), production_check.dockerfile_collectstatic()]:
        program = Path(production_check.native(command)[0])
        assert program.exists(), f"{command[0]} is not in this checkout's environment"
    assert (ROOT / "config" / "gunicorn.py").exists()


def test_two_beats_and_their_healthcheck_probes_what_beat_does():
    services = production_check.compose()["services"]
    assert services["beat"]["deploy"] == {"replicas": 2}
    assert services["beat"]["healthcheck"]["test"] == ["CMD", "python", "manage.py", "check_beat"]
    assert (ROOT / "sync" / "management" / "commands" / "check_beat.py").exists()
    web_probe = " ".join(services["web"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:8000{LIVENESS_PATH}" in web_probe


def test_every_variable_the_operator_sets_is_read_by_the_code():
    names = set(production_check.env_example()) | production_check.compose_environment_names()
    # POSTGRES_PASSWORD is compose's (the database container and DATABASE_URL); <KEY>_BASE_URL and
    # the OAuth apps' <KEY>_CLIENT_ID / _CLIENT_SECRET / _OAUTH_*_URL are read generically.
    generic = ("_BASE_URL", "_CLIENT_ID", "_CLIENT_SECRET", "_OAUTH_AUTHORIZE_URL", "_OAUTH_TOKEN_URL")
    read_elsewhere = {"POSTGRES_PASSWORD"} | {n for n in names if n.endswith(generic)}
    for name in sorted(names - read_elsewhere):
        assert re.search(rf"""["']{name}["']""", CODE), f"{name} is in .env.example or compose but nothing reads it"
    assert "POSTGRES_PASSWORD" in production_check.COMPOSE.read_text()


def test_the_ci_run_uses_the_operators_environment(tmp_path):
    env, chosen = production_check.production_environment("postgres://u@h:1/db", "redis://h:2/0", 8123)
    documented = set(production_check.env_example()) | production_check.compose_environment_names()
    ours = set(env) - {"PATH", "HOME", "LANG", "TMPDIR", "PYTHONUNBUFFERED"}
    assert ours <= documented
    assert "DJANGO_DEBUG" not in env and "DJANGO_SETTINGS_MODULE" not in env
    assert env["GUNICORN_BIND"] == "127.0.0.1:8123" and env["LOG_FORMAT"] == "json"
