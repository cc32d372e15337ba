"""The worker pool the real-process suites run on: both where a module asks for it."""

import pytest


@pytest.fixture(params=["threads", "prefork"])
def worker_pool(request, monkeypatch):
    """Run the test once on Celery's threads pool (what we ship) and once on prefork (still supported).

    The worker reads SYNC_WORKER_POOL (config/settings.py) from the environment it inherits.
    """
    monkeypatch.setenv("SYNC_WORKER_POOL", request.param)
    return request.param
