"""Fault drills: real worker and beat processes, with one thing broken on purpose per drill."""

import pytest

from config.celery_app import app as celery_app


@pytest.fixture
def real_queue(monkeypatch):
    """Send tasks through Redis to the real worker instead of running them in the test."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
