"""Drill: the real-broker conditions of tests/e2e/broker_conditions.py nearer production timings and sizes.

Production timings ÷ 20: the lock lives 15 s, retries wait 3 / 15 / 45 s (a run that fails
for good takes over a minute of waits, four lock lives), request backoff 50 ms, Flex polls
0.5 s. More fills and executions than the fast tests, so fan-out and paging work for real.
"""

import pytest

from tests.e2e import broker_conditions as scenario

pytestmark = [pytest.mark.drill, pytest.mark.realprocess, pytest.mark.django_db(transaction=True)]

NEAR_PRODUCTION = scenario.Timings(scale=1 / 20)


def test_drill_retry_waits_far_longer_than_the_lock(trader, tmp_path, real_queue):
    scenario.retry_waits_longer_than_the_lock(trader, tmp_path, NEAR_PRODUCTION)


def test_drill_every_third_request_fails(trader, tmp_path, real_queue):
    scenario.every_third_request_fails(trader, tmp_path, NEAR_PRODUCTION, fills=400)


def test_drill_flex_two_accounts_one_statement(trader, tmp_path, real_queue):
    scenario.flex_two_accounts_one_statement(trader, tmp_path, NEAR_PRODUCTION, executions=120)


def test_drill_late_fills(trader, tmp_path, real_queue):
    scenario.late_fills_land_on_the_next_sync(trader, tmp_path, NEAR_PRODUCTION)


def test_drill_short_tokens(trader, tmp_path, real_queue):
    scenario.short_tokens_renewed_only_as_their_life_requires(trader, tmp_path, NEAR_PRODUCTION)


def test_drill_snaptrade_per_account_budget(trader, tmp_path, real_queue, settings):
    scenario.snaptrade_accounts_inside_their_budget(trader, tmp_path, NEAR_PRODUCTION, settings)
