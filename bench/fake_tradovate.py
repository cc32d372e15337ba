"""The fan-out benchmark's loopback Tradovate: the tests' simulator (tests/fakes/tradovate.py), every answer late.

It answers exactly the calls brokers/providers/tradovate.py makes, in the documented formats.
`FakeTradovate(users, fills_per_account, delay_s)`: each user (login name) has its own accounts
and fills, and every request waits `delay_s` before it is answered, like a broker across an
ocean, so the benchmark measures how much of that waiting runs in parallel. `calls` counts
requests per path and `expected_ids(user)` says which fills a complete sync imports.
"""

from tests.fakes.tradovate import FakeTradovate

__all__ = ["FakeTradovate"]
