import pytest

from config.celery_app import app as celery_app


@pytest.fixture(autouse=True)
def real_queue(monkeypatch):
    """Beat's tests read what it sends from Redis: tasks are queued, not run in the test process."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
