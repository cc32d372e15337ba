"""Round trips, positions and calendar pages: server time at 100,000 fills.

    .venv/bin/python bench/positions_pages.py --db sqlite [--fills 100000] [--rounds 15]

One trader with the demo broker's two accounts, filled with the demo's own history (futures
and stocks, partial fills, an hourly flat), day by day until at least `--fills` are stored, and their round trips
computed as a sync computes them (journal.positions, per instrument). Then each page is
requested through Django's test client (middleware, session, time zone, template: everything
the server does) `--rounds` times, the pages interleaved round by round; the median and the
worst are reported. Target: trades page and calendar ≤ 200 ms server time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import timedelta

import harness

TARGET_MS = 200


def fill_accounts(wanted: int, username: str = "bench") -> tuple[object, int, float, float]:
    """A trader whose two demo accounts hold `wanted` fills (whole days of them), with round trips.

    Returns the user, the fills stored, the seconds to rebuild both accounts from their first
    fill, and the seconds a sync's recompute takes when its fills are the last hour's.
    """
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from brokers import services
    from brokers.providers.demo import DemoProvider
    from brokers.providers.types import AuthResult, BrokerAccountInfo
    from journal.importing import import_trades
    from journal.models import Trade
    from journal.positions import changed_by, positions_recompute, positions_recompute_account

    user = get_user_model().objects.create_user(username=username, password="bench-password-1")
    connection = services.connection_create(
        owner=user, broker_type="demo", label="Bench", credentials={"api_key": "k"}, sync_enabled=False
    )
    provider, auth = DemoProvider(), AuthResult(token="bench")
    rows = [connection.accounts.create(external_id=e, name=e) for e in ("DEMO-FUT-1", "DEMO-STK-1")]
    until = timezone.now()
    stored, day = 0, 0
    while stored < wanted:
        since = until - timedelta(days=1)
        for row in rows:
            account = BrokerAccountInfo(row.external_id, row.name)
            # Whole hours only: the demo is flat at each hour's end, as a real history read from its start is.
            stored += import_trades(row.pk, provider.get_trades(auth, account, since, until)).imported
        until, day = since, day + 1
    start = time.perf_counter()
    for row in rows:
        positions_recompute_account(account_id=row.pk)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    for row in rows:
        last_hour = Trade.objects.filter(account=row, executed_at__gte=timezone.now() - timedelta(hours=1))
        positions_recompute(changed=changed_by(row.pk, last_hour))
    return user, stored, whole, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--fills", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    harness.print_machine()
    with harness.django_on(args.db):
        from django.db import connection
        from django.test import Client

        from brokers.sessions import warm
        from journal.models import RoundTrip

        user, stored, whole_s, sync_s = fill_accounts(args.fills)
        latest = RoundTrip.objects.exclude(trading_day=None).latest("trading_day").trading_day
        # As gunicorn's master does before its workers fork (config/gunicorn.py): no page builds them.
        start = time.perf_counter()
        warm()
        warm_s = time.perf_counter() - start
        # A second trader with one day of fills in the same tables: their pages should cost what
        # their own fills do, not what the other trader's 100,000 do.
        small, small_stored, _, _ = fill_accounts(1, username="small")
        if connection.vendor == "postgresql":
            # autovacuum analyzes a table within a minute of a bulk load; measured right after
            # ours, the planner would still see an empty table.
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        client, small_client = Client(HTTP_HOST="localhost"), Client(HTTP_HOST="localhost")
        client.force_login(user)
        small_client.force_login(small)
        pages = {
            "trades (fills), page 1": (client, "/trades/"),
            "round trips, page 1": (client, "/trades/round-trips/"),
            "round trips, page 20": (client, "/trades/round-trips/?page=20"),
            "open positions": (client, "/trades/positions/"),
            "calendar, all accounts": (client, f"/trades/calendar/?month={latest:%Y-%m}"),
            "calendar, one account": (client, f"/trades/calendar/?month={latest:%Y-%m}&account=1"),
            f"trades (fills), page 1 — the trader with {small_stored:,} fills": (small_client, "/trades/"),
        }
        # A process's first request loads what Django loads once (URLs, templates, serializers):
        # measured apart, so the rounds show what every later request costs.
        start = time.perf_counter()
        assert client.get("/brokers/").status_code == 200
        first_ms = (time.perf_counter() - start) * 1000
        times: dict[str, list[float]] = {name: [] for name in pages}
        for _ in range(args.rounds):
            for name, (page_client, url) in pages.items():
                start = time.perf_counter()
                response = page_client.get(url)
                times[name].append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (url, response.status_code)
        trips = RoundTrip.objects.filter(account__connection__owner=user).count()
        print(f"\n{stored:,} fills, {trips:,} round trips; both accounts rebuilt from scratch in {whole_s:.1f} s,")
        print(f"a sync's recompute (the last hour's fills in every instrument) {sync_s * 1000:.0f} ms;")
        print(f"the exchange calendars built once per server start, before the workers fork: {warm_s:.1f} s;")
        print(f"the process's first request (the brokers page, before the rounds): {first_ms:.0f} ms\n")
        print("| page | median ms | worst ms | target |")
        print("|---|---|---|---|")
        for name, values in times.items():
            target = f"≤ {TARGET_MS} ms" if name.startswith(("trades", "round trips", "calendar")) else "none set"
            median = statistics.median(values)
            verdict = "" if target == "none set" else (" met" if median <= TARGET_MS else " **missed**")
            print(f"| {name} | {median:.1f} | {max(values):.1f} | {target}{verdict} |")


if __name__ == "__main__":
    main()
