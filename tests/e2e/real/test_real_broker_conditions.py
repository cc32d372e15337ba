"""Real broker conditions with a real worker (and beat) on the test Redis: see tests/e2e/broker_conditions.py."""

import pytest

from config.celery_app import app as celery_app
from tests.e2e import broker_conditions as scenario

pytestmark = [pytest.mark.realprocess, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker_pool")]

# Production timings ÷ 150: lock 2 s, retries 0.4 / 2 / 6 s, request backoff 7 ms, Flex polls 67 ms.
FAST = scenario.Timings(scale=1 / 150)


@pytest.fixture(autouse=True)
def real_queue(monkeypatch):
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)


def test_a_retry_wait_longer_than_the_lock_keeps_the_run_and_ends_in_error(trader, tmp_path):
    scenario.retry_waits_longer_than_the_lock(trader, tmp_path, FAST)


def test_a_broker_failing_every_third_request_still_syncs_every_fill(trader, tmp_path):
    scenario.every_third_request_fails(trader, tmp_path, FAST, fills=30)


def test_ibkr_flex_two_accounts_import_everything_in_one_run_from_one_statement(trader, tmp_path):
    scenario.flex_two_accounts_one_statement(trader, tmp_path, FAST, executions=6)


def test_fills_appearing_late_in_the_listing_are_imported_on_the_next_sync(trader, tmp_path):
    scenario.late_fills_land_on_the_next_sync(trader, tmp_path, FAST)


def test_short_tokens_are_renewed_no_more_than_their_life_requires(trader, tmp_path):
    scenario.short_tokens_renewed_only_as_their_life_requires(trader, tmp_path, FAST)


def test_a_ccxt_exchange_syncs_spot_and_perpetuals_as_two_accounts_without_loss_or_doubles(trader, tmp_path):
    scenario.ccxt_two_market_types_in_parallel(trader, tmp_path, FAST)


# SnapTrade's budget window is what this test measures: at ÷ 30 it is 2 s, long enough that a worker's
# scheduling pauses are small beside it.
BUDGET_WINDOW = scenario.Timings(scale=1 / 30)


def test_snaptrade_accounts_in_parallel_stay_inside_the_per_account_budget(trader, tmp_path, settings):
    scenario.snaptrade_accounts_inside_their_budget(trader, tmp_path, BUDGET_WINDOW, settings)
