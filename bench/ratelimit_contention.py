"""Rate limiter under contention: N processes on one broker bucket of R calls per second.

    .venv/bin/python bench/ratelimit_contention.py [--processes 8] [--rate 50] [--seconds 30]

Every process loops on brokers.providers.ratelimit.RateLimiter.acquire() against a private
redis-server, as sync workers do before each broker call. Demand is unbounded, so a perfect
limiter grants exactly R per second. Measured:

  most grants in any 1 s window   on Redis' own clock: the Lua script stamps every grant
                                  with Redis TIME as its sorted-set score; the parent reads
                                  the set every 50 ms (an entry lives >= 1 s) and keeps all.
                                  Target: never above R. The same in any 100 ms window
                                  shows whether grants come in bursts or evenly paced.
  utilisation                     grants in the first --seconds / (R x seconds). Target >= 90 %.
  acquire latency p50 / p99       from wanting a slot to holding one, waits included; with
                                  N processes on R/s the expected mean is about N/R.
  limiter round trip p50 / p99    one try_acquire (one Lua call): the limiter's own overhead.

A wait longer than --max-sleep (the product's BROKER_RATE_LIMIT_MAX_SLEEP_S, 2 s) raises
BrokerRateLimitError, on which a task re-queues itself; here the process sleeps the
announced wait and asks again, so the request's latency keeps running, and it is counted.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import time

import harness

BROKER = "bench"
BUCKET_KEY = f"rl:{BROKER}:requests"  # RateLimiter._keys' name for this bucket
WINDOW_S = 1.0


def worker(redis_url: str, rate: int, max_sleep: float, start_at: float, end_at: float, results) -> None:
    import redis
    import structlog

    from brokers.providers.errors import BrokerRateLimitError
    from brokers.providers.ratelimit import RateLimiter
    from brokers.providers.types import RateLimit

    # Requeue notices are expected here by the hundred; keep the output to the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    limiter = RateLimiter(
        redis.Redis.from_url(redis_url), {BROKER: (RateLimit("requests", rate, WINDOW_S),)}, max_sleep
    )
    round_trips = []
    try_acquire = limiter.try_acquire

    def timed_try_acquire(*args, **kwargs):
        # Shadows the method on this instance only, so acquire()'s own loop is what we time.
        start = time.perf_counter()
        try:
            return try_acquire(*args, **kwargs)
        finally:
            round_trips.append(time.perf_counter() - start)

    limiter.try_acquire = timed_try_acquire
    latencies, requeues = [], 0
    # time.monotonic is one clock for every process on this machine (CLOCK_MONOTONIC).
    time.sleep(max(0.0, start_at - time.monotonic()))
    while time.monotonic() < end_at:
        wanted = time.perf_counter()
        while True:
            try:
                limiter.acquire(BROKER)
                break
            except BrokerRateLimitError as exc:
                requeues += 1
                time.sleep(exc.retry_after)
        latencies.append(time.perf_counter() - wanted)
    results.put({"latencies": latencies, "round_trips": round_trips, "requeues": requeues})


def max_in_window(stamps_us: list[int], window_us: int) -> int:
    """The most stamps in any window (t - window, t]: the limiter's own definition."""
    best, first = 0, 0
    for last, stamp in enumerate(stamps_us):
        while stamps_us[first] <= stamp - window_us:
            first += 1
        best = max(best, last - first + 1)
    return best


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--rate", type=int, default=50, help="bucket limit R per 1 s window")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-sleep", type=float, default=2.0, help="BROKER_RATE_LIMIT_MAX_SLEEP_S")
    args = parser.parse_args()

    harness.print_machine()
    with harness.private_redis() as redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        results = multiprocessing.Queue()
        start_at = time.monotonic() + 1.0  # every process is forked and waiting by then
        end_at = start_at + args.seconds
        processes = [
            multiprocessing.Process(
                target=worker, args=(redis_url, args.rate, args.max_sleep, start_at, end_at, results)
            )
            for _ in range(args.processes)
        ]
        for p in processes:
            p.start()
        grants: dict[bytes, float] = {}
        reports = []
        while len(reports) < len(processes):
            grants.update(client.zrange(BUCKET_KEY, 0, -1, withscores=True))
            while not results.empty():
                reports.append(results.get())
            time.sleep(0.05)
        for p in processes:
            p.join()
        grants.update(client.zrange(BUCKET_KEY, 0, -1, withscores=True))

    per_process = [len(r["latencies"]) for r in reports]
    assert len(grants) == sum(per_process), f"saw {len(grants)} grants in Redis, processes got {sum(per_process)}"
    stamps = sorted(int(score) for score in grants.values())
    peak = max_in_window(stamps, int(WINDOW_S * 1_000_000))
    in_run = sum(1 for s in stamps if s < stamps[0] + args.seconds * 1_000_000)
    utilisation = in_run / (args.rate * args.seconds / WINDOW_S)
    latencies = [x for r in reports for x in r["latencies"]]
    round_trips = [x for r in reports for x in r["round_trips"]]
    requeues = sum(r["requeues"] for r in reports)

    print(
        f"\n{args.processes} processes, bucket {args.rate}/s, {args.seconds:g} s, max sleep {args.max_sleep:g} s, "
        f"{len(stamps):,} grants\n"
    )
    print("| measure | value | target | |")
    print("|---|---:|---|---|")
    print(
        f"| most grants in any 1 s window (Redis clock) | {peak} ({peak / args.rate:.2f}× R) | ≤ R = {args.rate} | "
        f"{'met' if peak <= args.rate else '**missed**'} |"
    )
    # The sliding-window log lets a whole window's worth go at once: this shows how bursty grants are.
    print(
        f"| most grants in any 100 ms window | {max_in_window(stamps, 100_000)} | "
        f"(R/10 = {args.rate / 10:g} if paced evenly) | |"
    )
    print(
        f"| utilisation (grants / R·s) | {utilisation:.1%} | ≥ 90 % | {'met' if utilisation >= 0.9 else '**missed**'} |"
    )
    print(
        f"| acquire latency p50 / p99, waits included | {percentile(latencies, 50) * 1000:.0f} / "
        f"{percentile(latencies, 99) * 1000:.0f} ms | (expected mean ≈ N/R = "
        f"{args.processes / args.rate * 1000:.0f} ms; measured mean {statistics.mean(latencies) * 1000:.0f} ms) | |"
    )
    print(
        f"| limiter round trip p50 / p99 (one Lua call) | {percentile(round_trips, 50) * 1000:.2f} / "
        f"{percentile(round_trips, 99) * 1000:.2f} ms | | |"
    )
    print(f"| Lua calls per grant | {len(round_trips) / len(latencies):.2f} | | |")
    print(f"| waits beyond max sleep (task would re-queue) | {requeues} | | |")
    print(
        f"| share per process, min – max | {min(per_process) / len(stamps):.1%} – "
        f"{max(per_process) / len(stamps):.1%} | fair = {1 / args.processes:.1%} | |"
    )


if __name__ == "__main__":
    main()
