"""Fixtures of the sync tests: the accounts a file is imported into, and the loopback Flex Web Service."""

import pytest

from tests import factories
from tests.fakes.ibkr_flex import FakeFlex


@pytest.fixture
def account(trader):
    connection = factories.connection(trader, label="Files", sync_enabled=False)
    return connection.accounts.create(external_id="U1234567", name="Main account")


@pytest.fixture
def mt5_account(trader):
    connection = factories.connection(trader, label="MT5", sync_enabled=False)
    return connection.accounts.create(external_id="12345678@Example-Server", name="12345678")


@pytest.fixture
def flex(settings):
    with FakeFlex({"U1111111": "USD"}, executions_per_account=4) as fake:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "ibkr_flex": fake.url}
        settings.IBKR_FLEX_POLL_PAUSE_S = 0
        yield fake
