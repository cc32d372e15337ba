"""The Redis rate limiter: the limits file, sliding windows, scopes, blocks, and many processes at once."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from brokers.providers import ratelimit
from brokers.providers.ccxt import catalog as ccxt_catalog
from brokers.providers.ccxt import family as ccxt_family
from brokers.providers.errors import BrokerConfigurationError, BrokerError, BrokerRateLimitError
from brokers.providers.ratelimit import RateLimiter, load_limits, scope_for
from brokers.providers.types import RateLimit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def client():
    return redis.Redis.from_url(settings.REDIS_URL)


def make_limiter(client, limits, max_sleep_s=0.5):
    return RateLimiter(client, limits, max_sleep_s)


def write_toml(tmp_path, text, name="my_limits.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- load_limits -------------------------------------------------------------------------------


def test_load_limits_reads_the_shipped_file():
    limits = load_limits()
    assert limits["demo"] == (RateLimit("requests", 600, 60.0, False),)
    assert limits["ibkr_flex"] == (
        RateLimit("per_second", 1, 2.0, True),
        RateLimit("per_minute", 8, 60.0, True),
    )
    assert [b.name for b in limits["tradovate"]] == ["auth", "requests", "hourly"]
    assert limits["tradovate"][2] == RateLimit("hourly", 4500, 3600.0, False)
    assert limits["alpaca"] == (RateLimit("requests", 180, 60.0, True),)
    assert all(isinstance(b.window_s, float) for buckets in limits.values() for b in buckets)


# What each broker publishes (docs/brokers/*.md): calls per window in seconds.
PUBLISHED = {
    ("ibkr_flex", "per_second"): (1, 1),
    ("ibkr_flex", "per_minute"): (10, 60),
    ("tradovate", "auth"): (10, 60),
    ("tradovate", "requests"): (200, 60),
    ("tradovate", "hourly"): (5000, 3600),
    ("alpaca", "requests"): (200, 60),
    ("alpaca_connect", "requests"): (200, 60),
    # MetaApi: 1,000 CPU credits a second per user, about 50 credits a call.
    ("metatrader", "requests"): (20, 1),
    ("projectx", "requests"): (200, 60),
    # ccxt paces each exchange at one cost unit per rateLimit ms: in limiter slots per window.
    **{
        (provider.key, "requests"): (ccxt_catalog.published_slots(provider), ccxt_catalog.window_s(provider))
        for provider in ccxt_family.FAMILY.values()
    },
}


def test_every_shipped_bucket_keeps_a_margin_below_the_broker_s_published_limit():
    shipped = {(broker, b.name): b for broker, buckets in load_limits().items() for b in buckets}
    for key, (calls, window_s) in PUBLISHED.items():
        bucket = shipped[key]
        assert bucket.limit / bucket.window_s <= 0.9 * calls / window_s, key


def test_overrides_change_only_the_given_numbers_and_can_add_brokers():
    limits = load_limits(
        overrides={
            "alpaca": {"requests": {"limit": 100}},
            "tradovate": {"hourly": {"window_s": 1800}},
            "newbroker": {"requests": {"limit": 5, "window_s": 2, "per_credential": True}},
        }
    )
    assert limits["alpaca"] == (RateLimit("requests", 100, 60.0, True),)
    assert limits["tradovate"][2] == RateLimit("hourly", 4500, 1800.0, False)
    assert limits["tradovate"][0] == RateLimit("auth", 8, 60.0, True)
    assert limits["newbroker"] == (RateLimit("requests", 5, 2.0, True),)
    assert limits["demo"] == (RateLimit("requests", 600, 60.0, False),)
    # The shipped file is read again each time: an override does not stick.
    assert load_limits()["alpaca"][0].limit == 180


def test_settings_limiter_uses_settings():
    limiter = ratelimit.get_limiter()
    assert limiter.max_sleep_s == settings.BROKER_RATE_LIMIT_MAX_SLEEP_S == 0.5
    assert limiter.limits == load_limits(overrides=settings.BROKER_RATE_LIMITS)


@pytest.mark.parametrize(
    ("bucket", "field"),
    [
        ("limit = 0\nwindow_s = 60", "limit"),
        ("limit = -3\nwindow_s = 60", "limit"),
        ("limit = 2.5\nwindow_s = 60", "limit"),
        ('limit = "10"\nwindow_s = 60', "limit"),
        ("limit = true\nwindow_s = 60", "limit"),
        ("window_s = 60", "limit"),
        ("limit = 10\nwindow_s = 0", "window_s"),
        ("limit = 10\nwindow_s = -5", "window_s"),
        ("limit = 10\nwindow_s = -0.5", "window_s"),
        ('limit = 10\nwindow_s = "60"', "window_s"),
        ("limit = 10", "window_s"),
    ],
)
def test_bad_values_name_the_file_and_the_table(tmp_path, bucket, field):
    path = write_toml(tmp_path, f"[good.requests]\nlimit = 1\nwindow_s = 1\n\n[acme.orders]\n{bucket}\n")
    with pytest.raises(BrokerConfigurationError) as info:
        load_limits(path)
    message = str(info.value)
    assert "my_limits.toml" in message
    assert "[acme.orders]" in message
    assert field in message


def test_bad_override_names_the_table():
    with pytest.raises(BrokerConfigurationError, match=r"rate_limits\.toml \[demo\.requests\].*limit"):
        load_limits(overrides={"demo": {"requests": {"limit": 0}}})
    with pytest.raises(BrokerConfigurationError, match=r"\[newbroker\.requests\].*window_s"):
        load_limits(overrides={"newbroker": {"requests": {"limit": 3}}})


@pytest.mark.parametrize(
    "text",
    [
        "[acme]\nlimit = 5\nwindow_s = 1\n",  # the bucket sub-table forgotten
        "acme = 5\n",
    ],
)
def test_broker_without_bucket_tables_is_a_configuration_error(tmp_path, text):
    path = write_toml(tmp_path, text)
    with pytest.raises(BrokerConfigurationError, match=r"my_limits\.toml.*acme"):
        load_limits(path)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_window_is_rejected(tmp_path, value):
    path = write_toml(tmp_path, f"[acme.orders]\nlimit = 5\nwindow_s = {value}\n")
    with pytest.raises(BrokerConfigurationError, match=r"my_limits\.toml \[acme\.orders\].*window_s"):
        load_limits(path)


def test_per_credential_must_be_a_boolean(tmp_path):
    path = write_toml(tmp_path, '[acme.orders]\nlimit = 5\nwindow_s = 1\nper_credential = "false"\n')
    with pytest.raises(BrokerConfigurationError, match=r"my_limits\.toml \[acme\.orders\].*per_credential"):
        load_limits(path)


# --- Configuration errors at call time ------------------------------------------------------------


def test_unknown_broker_names_the_limits_file(client):
    limiter = make_limiter(client, {"known": (RateLimit("r", 5, 1.0),)})
    for call in (limiter.try_acquire, limiter.acquire):
        with pytest.raises(BrokerConfigurationError) as info:
            call("unknown")
        assert "rate_limits.toml" in str(info.value) and "'unknown'" in str(info.value)
    # A configuration mistake must never be caught by code that retries broker errors.
    assert not issubclass(BrokerConfigurationError, BrokerError)
    assert client.keys("rl:*") == []


def test_unknown_bucket_names_the_limits_file(client):
    limiter = make_limiter(client, {"known": (RateLimit("r", 5, 1.0),)})
    with pytest.raises(BrokerConfigurationError, match=r"rate_limits\.toml has no bucket \['nope'\]"):
        limiter.try_acquire("known", buckets=("r", "nope"))


def test_shipped_limiter_rejects_a_broker_without_an_entry():
    with pytest.raises(BrokerConfigurationError, match="rate_limits.toml"):
        ratelimit.get_limiter().try_acquire("not-a-broker")


# --- try_acquire: the sliding window ------------------------------------------------------------


def test_exactly_limit_calls_then_a_wait_until_the_oldest_leaves(client):
    limiter = make_limiter(client, {"b": (RateLimit("r", 5, 0.5),)})
    first_before = time.time()
    assert limiter.try_acquire("b") == 0
    first_after = time.time()
    time.sleep(0.2)
    assert [limiter.try_acquire("b") for _ in range(4)] == [0, 0, 0, 0]

    before = time.time()
    wait = limiter.try_acquire("b")
    after = time.time()
    # The wait is the time until the first call leaves the window, bracketed by our own clock
    # (redis-server runs on this machine): first + 0.5 - now.
    assert first_before + 0.5 - after <= wait <= first_after + 0.5 - before
    assert 0 < wait < 0.5

    # Refused calls book nothing: many of them change neither the count nor the wait.
    waits = [limiter.try_acquire("b") for _ in range(30)]
    assert all(0 < w <= wait for w in waits)

    # Once that wait is over, exactly one slot is free (the other four are 0.2 s younger).
    time.sleep(wait + 0.005)
    assert limiter.try_acquire("b") == 0
    next_wait = limiter.try_acquire("b")
    assert 0.1 < next_wait < 0.2
    # ... and a wait sleeps short of that is still refused.
    time.sleep(next_wait / 3)
    assert limiter.try_acquire("b") > 0


def test_window_slides_back_to_a_full_allowance(client):
    limiter = make_limiter(client, {"b": (RateLimit("r", 3, 0.3),)})
    assert [limiter.try_acquire("b") for _ in range(4)][-1] > 0
    time.sleep(0.32)
    again = [limiter.try_acquire("b") for _ in range(4)]
    assert again[:3] == [0, 0, 0] and 0.15 < again[3] <= 0.3


def test_every_bucket_must_have_room(client):
    limiter = make_limiter(client, {"b": (RateLimit("fast", 3, 0.4), RateLimit("slow", 4, 30.0))})
    assert [limiter.try_acquire("b") for _ in range(3)] == [0, 0, 0]
    assert 0 < limiter.try_acquire("b") <= 0.4  # the fast bucket is full
    time.sleep(0.42)
    assert limiter.try_acquire("b") == 0  # fourth call: the slow bucket is now full
    assert 25 < limiter.try_acquire("b") <= 30
    # Calls limited to the fast bucket alone still have room: two more (the fourth call holds
    # the third place), so the refused call above booked nothing in the fast bucket either.
    fast_only = [limiter.try_acquire("b", buckets=("fast",)) for _ in range(3)]
    assert fast_only[:2] == [0, 0] and fast_only[2] > 0


def test_brokers_do_not_share_buckets(client):
    limiter = make_limiter(client, {"a": (RateLimit("r", 2, 10.0),), "b": (RateLimit("r", 2, 10.0),)})
    assert [limiter.try_acquire("a") for _ in range(3)][-1] > 0
    assert [limiter.try_acquire("b") for _ in range(2)] == [0, 0]


def test_per_credential_buckets_are_separate_and_the_broker_bucket_is_shared(client):
    limiter = make_limiter(
        client, {"b": (RateLimit("per_token", 2, 10.0, per_credential=True), RateLimit("global", 5, 10.0))}
    )
    alice, bob, carol = (scope_for(s) for s in ("alice-token", "bob-token", "carol-token"))
    assert [limiter.try_acquire("b", scope=alice) for _ in range(2)] == [0, 0]
    assert 9 < limiter.try_acquire("b", scope=alice) <= 10  # alice's own bucket is full
    assert [limiter.try_acquire("b", scope=bob) for _ in range(2)] == [0, 0]  # bob has his own
    assert limiter.try_acquire("b", scope=carol) == 0  # fifth call overall
    # Carol has used one of her two, but the broker-wide bucket is full for everyone.
    assert 9 < limiter.try_acquire("b", scope=carol) <= 10
    assert limiter.try_acquire("b", scope=scope_for("dave-token")) > 9


def test_scope_for_is_stable_short_and_hides_the_secret():
    scope = scope_for("super-secret-token-123")
    assert scope == scope_for("super-secret-token-123")
    assert len(scope) == 16 and all(c in "0123456789abcdef" for c in scope)
    assert "secret" not in scope
    assert scope != scope_for("super-secret-token-124")


# --- block ------------------------------------------------------------------------------------


def test_block_makes_every_scope_wait_and_only_moves_later(client):
    limiter = make_limiter(client, {"b": (RateLimit("r", 100, 60.0, per_credential=True),)})
    limiter.block("b", 5)
    for scope in ("", "alice", scope_for("bob")):
        assert 4 < limiter.try_acquire("b", scope=scope) <= 5
    limiter.block("b", 1)  # a shorter block never shortens the current one
    assert 4 < limiter.try_acquire("b") <= 5
    limiter.block("b", 0)
    assert 4 < limiter.try_acquire("b") <= 5
    limiter.block("b", 8)  # a longer one extends it
    assert 7 < limiter.try_acquire("b", scope="alice") <= 8


def test_scoped_block_only_stops_that_credential(client):
    limiter = make_limiter(client, {"b": (RateLimit("r", 100, 60.0, per_credential=True),)})
    limiter.block("b", 5, scope="alice")
    assert 4 < limiter.try_acquire("b", scope="alice") <= 5
    assert limiter.try_acquire("b", scope="bob") == 0
    assert limiter.try_acquire("b") == 0
    limiter.block("b", 2, scope="alice")
    assert 4 < limiter.try_acquire("b", scope="alice") <= 5


def test_block_ends_and_does_not_eat_the_allowance(client):
    limiter = make_limiter(client, {"b": (RateLimit("r", 3, 10.0),)})
    limiter.block("b", 0.25)
    assert all(limiter.try_acquire("b") > 0 for _ in range(20))
    time.sleep(0.27)
    assert [limiter.try_acquire("b") for _ in range(3)] == [0, 0, 0]
    assert limiter.try_acquire("b") > 9


def test_block_combines_with_a_full_bucket_taking_the_longer_wait(client):
    limiter = make_limiter(client, {"b": (RateLimit("r", 1, 3.0),)})
    assert limiter.try_acquire("b") == 0
    limiter.block("b", 1)
    assert 2 < limiter.try_acquire("b") <= 3
    limiter.block("b", 6)
    assert 5 < limiter.try_acquire("b") <= 6


# --- acquire ----------------------------------------------------------------------------------


class _TimeInRatelimit:
    """Stands in for the time module inside ratelimit.py only; sleep is recorded."""

    def __init__(self, sleep):
        self.sleep = sleep

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def sleeps(monkeypatch):
    """Record every sleep acquire() takes, and really sleep."""
    recorded = []

    def sleep(seconds):
        recorded.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(ratelimit, "time", _TimeInRatelimit(sleep))
    return recorded


def test_acquire_sleeps_through_a_short_wait(client, sleeps):
    limiter = make_limiter(client, {"b": (RateLimit("r", 5, 0.5),)}, max_sleep_s=0.5)
    limiter.acquire("b")
    time.sleep(0.2)
    for _ in range(4):
        limiter.acquire("b")
    assert sleeps == []
    limiter.acquire("b")  # the sixth: waits for the first call to leave the window, then books
    assert len(sleeps) >= 1
    # It waited for the oldest call only (~0.3 s), not for a whole window.
    assert 0 < sum(sleeps) < 0.5 - 0.1
    assert client.zcard("rl:b:r") == 5  # the first left, the four later ones and the sixth remain


def test_acquire_raises_for_a_long_wait_without_sleeping(client, sleeps):
    limiter = make_limiter(client, {"b": (RateLimit("r", 2, 10.0),)}, max_sleep_s=0.5)
    limiter.acquire("b")
    limiter.acquire("b")
    with pytest.raises(BrokerRateLimitError) as info:
        limiter.acquire("b")
    assert 9 < info.value.retry_after <= 10
    assert info.value.transient and info.value.provider == "b"
    assert "b" in str(info.value)
    assert sleeps == []
    assert client.zcard("rl:b:r") == 2


def test_acquire_raises_for_a_block(client, sleeps):
    limiter = make_limiter(client, {"b": (RateLimit("r", 100, 60.0),)}, max_sleep_s=0.5)
    limiter.block("b", 30, scope="alice")
    with pytest.raises(BrokerRateLimitError) as info:
        limiter.acquire("b", scope="alice")
    assert 29 < info.value.retry_after <= 30
    limiter.acquire("b", scope="bob")
    assert sleeps == []


def test_acquire_never_sleeps_more_than_max_sleep_in_total(client, monkeypatch):
    """Even if the wait never goes away (here: time does not pass), acquire gives up in time."""
    limiter = make_limiter(client, {"b": (RateLimit("r", 1, 0.3),)}, max_sleep_s=0.5)
    limiter.acquire("b")
    fake_sleeps = []
    monkeypatch.setattr(ratelimit, "time", _TimeInRatelimit(fake_sleeps.append))
    with pytest.raises(BrokerRateLimitError):
        limiter.acquire("b")
    assert len(fake_sleeps) >= 1
    assert sum(fake_sleeps) <= 0.5


# --- Many processes, one bucket ------------------------------------------------------------------

CHILD = """
import json, sys, time
import redis, structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from brokers.providers.errors import BrokerRateLimitError
from brokers.providers.ratelimit import RateLimiter
from brokers.providers.types import RateLimit

url, limit, window, mode, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
limiter = RateLimiter(redis.Redis.from_url(url), {"mp": (RateLimit("calls", limit, window),)}, 0.3)
limiter.client.ping()
print("ready", flush=True)
end = float(sys.stdin.readline().split()[1])
grants, refusals = [], 0
while True:
    before = time.time()
    if before >= end:
        break
    if mode == "try":
        wait = limiter.try_acquire("mp")
        after = time.time()
        if wait == 0:
            grants.append((before, after))
        else:
            refusals += 1
            time.sleep(min(wait, max(0.0, end - after)))
    else:
        try:
            limiter.acquire("mp")
            grants.append((before, time.time()))
        except BrokerRateLimitError as exc:
            refusals += 1
            time.sleep(min(exc.retry_after, max(0.0, end - time.time())))
with open(out, "w") as fh:
    json.dump({"grants": grants, "refusals": refusals}, fh)
"""


def test_many_processes_never_exceed_the_limit_in_any_window(tmp_path):
    limit, window, duration, n_try, n_acquire = 20, 1.0, 3.0, 6, 2
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = []
    for i in range(n_try + n_acquire):
        mode = "try" if i < n_try else "acquire"
        out = tmp_path / f"out-{i}.json"
        args = [sys.executable, str(script), settings.REDIS_URL, str(limit), str(window), mode, str(out)]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        children.append((proc, out))
    try:
        for proc, _ in children:
            assert proc.stdout.readline().strip() == "ready", "a child process did not start"
        end = time.time() + duration
        for proc, _ in children:
            proc.stdin.write(f"go {end}\n")
            proc.stdin.flush()
        for proc, _ in children:
            assert proc.wait(timeout=duration + 30) == 0
    finally:
        for proc, _ in children:
            if proc.poll() is None:
                proc.kill()

    results = [json.loads(out.read_text()) for _, out in children]
    grants = sorted((tuple(g) for r in results for g in r["grants"]), key=lambda g: g[0])
    # Each grant happened, on Redis' clock, somewhere in [before, after] of the call that got it
    # (all processes share this machine's clock). Twenty-one grants that all fit, brackets
    # included, inside less than one window would be a certain violation.
    worst = 0
    for start, _ in grants:
        inside = sum(1 for before, after in grants if before >= start and after < start + window)
        worst = max(worst, inside)
    assert worst <= limit, f"{worst} calls were granted within {window} s (limit {limit})"

    # The limit was the bottleneck, and it was used: several processes competed, were refused,
    # and together got close to the most the limit allows in the run.
    theoretical = limit * duration / window
    assert len(grants) >= 0.7 * theoretical, f"only {len(grants)} of ~{theoretical:.0f} possible calls"
    assert len(grants) <= limit * (duration / window + 1)
    assert sum(r["refusals"] for r in results) > 0
    assert sum(1 for r in results if r["grants"]) >= 3


def test_a_run_meeting_a_block_later_hears_the_broker_s_reason_not_just_pacing(client):
    limiter = RateLimiter(client, {"tradovate": (RateLimit("requests", 100, 60.0),)}, max_sleep_s=0.1)
    limiter.block("tradovate", 30, reason="Tradovate asked for a captcha.")
    with pytest.raises(BrokerRateLimitError) as info:
        limiter.acquire("tradovate", display_name="Tradovate")
    assert info.value.message == "Tradovate asked for a captcha." and info.value.retry_after > 25
    client.delete("rl:block:tradovate", "rl:reason:tradovate")
    limiter = RateLimiter(client, {"tradovate": (RateLimit("requests", 1, 60.0),)}, max_sleep_s=0.1)
    limiter.acquire("tradovate")
    with pytest.raises(BrokerRateLimitError) as info:
        limiter.acquire("tradovate", display_name="Tradovate")
    assert info.value.message == "We are pacing requests to Tradovate to stay within its limits."
