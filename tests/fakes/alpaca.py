"""The loopback Alpaca Trading API of the tests, in Alpaca's documented formats (docs/brokers/alpaca.md).

Two servers on the shared tests/fakes/loopback.py helper, with one fill format:

- FakeAlpaca: one account served to every key, its fills, and a few faults (the account call
  failing some times, keys refused, slow fills), for real-process tests of retries, auth
  failures, overlapping runs and killed workers.
- ScriptedAlpaca: one account per key, each with its own fills and its own misfortunes, for
  the drills. `GET /v2/account` and `GET /v2/account/activities/FILL` honour `after`/`until`
  (so a cursor that skips ahead loses fills here as it would at Alpaca), `page_size` and
  `page_token` (the id of the last fill already read); keys in `APCA-API-KEY-ID` /
  `APCA-API-SECRET-KEY`. `GET /v2/positions` nets the key's fills, so a sync's positions check
  finds what the journal holds.

ScriptedAlpaca's faults are queued per (key, call) and consumed one per request, so a drill says exactly
which request fails and how:

    "500"      HTTP 500 with a JSON error body
    "timeout"  no answer for longer than the client's read timeout, then a late answer
    "garbage"  HTTP 200 with an HTML error page instead of JSON
    "truncated" HTTP 200 with JSON cut in half (the HTTP framing itself is complete)
    "cut"      HTTP 200 announcing the whole body, then the connection closes halfway
    "429"      HTTP 429 with Retry-After: 1
    "401"      HTTP 401, as Alpaca answers keys it does not accept
    "ok"       a normal answer (to let earlier requests through and fail a later one)
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.fakes.loopback import LoopbackServer, Reply, Request

ACCOUNT_PATH = "/v2/account"
FILLS_PATH = "/v2/account/activities/FILL"
POSITIONS_PATH = "/v2/positions"
SYMBOL = "AAPL"  # every fill's
CALLS = {ACCOUNT_PATH: "account", FILLS_PATH: "fills"}
FAULTS = {"500", "timeout", "garbage", "truncated", "cut", "429", "401", "ok"}
ACCOUNT = {"id": "5f1c-acc", "account_number": "PA3FAKE", "currency": "USD", "status": "ACTIVE"}
REFUSED = (401, {"code": 40110000, "message": "request is not authorized"})
# FakeAlpaca's fills: a second apart from here.
FAKE_START = datetime(2026, 11, 20, 15, 0, 0, 250000, tzinfo=UTC)


def account_number(key_id: str) -> str:
    return f"PA-{key_id}"


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fill(key_id: str, i: int, at: datetime) -> dict:
    """One FILL activity at `at`; ids are unique per key so two connections never share a trade."""
    return {
        "id": f"{at:%Y%m%d%H%M%S%f}::{key_id}-{i}",
        "activity_type": "FILL",
        "transaction_time": _rfc3339(at),
        "type": "fill",
        "price": "187.42",
        "qty": "5",
        "side": "buy" if i % 2 else "sell",
        "symbol": SYMBOL,
        "order_id": f"order-{key_id}-{i}",
        "cum_qty": "5",
        "leaves_qty": "0",
    }


def _time(activity: dict) -> datetime:
    return datetime.fromisoformat(activity["transaction_time"])


class FakeAlpaca(LoopbackServer):
    def __init__(self, fills: int = 150):
        super().__init__()
        self.fills = [fill("fake", i, FAKE_START + timedelta(seconds=i)) for i in range(fills)]
        self.fail_account_times = 0
        self.refuse_keys = False
        self.fills_delay_s = 0.0
        self.route("GET", ACCOUNT_PATH, self._account)
        self.route("GET", FILLS_PATH, self._fills)

    def _account(self, request: Request):
        with self.lock:
            failing = self.fail_account_times > 0
            self.fail_account_times -= failing
        if self.refuse_keys:
            return REFUSED
        if failing:
            return 500, {"message": "internal server error"}
        return 200, ACCOUNT

    def _fills(self, request: Request):
        if self.refuse_keys:
            return REFUSED
        time.sleep(self.fills_delay_s)
        size = int(request.query.get("page_size", "100"))
        start = 0
        if "page_token" in request.query:
            start = [f["id"] for f in self.fills].index(request.query["page_token"]) + 1
        return 200, self.fills[start : start + size]


class ScriptedAlpaca:
    """Serve {key_id: number of fills}; script faults with fail(); read what happened with count() and served()."""

    def __init__(self, fills_per_key: dict[str, int], *, timeout_sleep_s: float = 3.0):
        # A day of history, a second apart: inside every provider's first-sync window.
        start = datetime.now(UTC) - timedelta(days=1)
        self.fills = {
            key: [fill(key, i, start + timedelta(seconds=i)) for i in range(n)] for key, n in fills_per_key.items()
        }
        self.timeout_sleep_s = timeout_sleep_s
        # Seconds every fills request of a key waits before answering (a slow broker).
        self.fills_delay_s: dict[str, float] = defaultdict(float)
        # Called with the key before a fills request is answered (e.g. to lock the database).
        self.before_fills: Callable[[str], None] | None = None
        self.answered: list[tuple[str, str, str]] = []  # (key, "account" | "fills", what was served)
        self.in_flight: dict[str, int] = defaultdict(int)  # fills requests being answered, per key
        self._faults: dict[tuple[str, str], deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.server = LoopbackServer()
        for path in CALLS:
            self.server.route("GET", path, self._answer_call)
        self.server.route("GET", POSITIONS_PATH, self._positions)
        self.url = self.server.url

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    def publish(self, key_id: str, count: int) -> None:
        """New fills executed now, as a trader's orders fill while syncs come and go."""
        now = datetime.now(UTC)
        with self._lock:
            fills = self.fills[key_id]
            fills += [fill(key_id, i, now) for i in range(len(fills), len(fills) + count)]

    def ids(self, key_id: str) -> set[str]:
        with self._lock:
            return {f["id"] for f in self.fills[key_id]}

    def fail(self, key_id: str, call: str, *faults: str) -> None:
        """Answer the next len(faults) `call` requests ("account" or "fills") of key_id with these faults."""
        assert call in CALLS.values() and set(faults) <= FAULTS, (call, faults)
        with self._lock:
            self._faults[(key_id, call)].extend(faults)

    def count(self, key_id: str, call: str, served: str | None = None) -> int:
        with self._lock:
            return sum(1 for k, c, s in self.answered if k == key_id and c == call and (served is None or s == served))

    def served(self, key_id: str) -> list[str]:
        """What the key's requests got, in order, e.g. ["account:ok", "fills:500", ...]."""
        with self._lock:
            return [f"{c}:{s}" for k, c, s in self.answered if k == key_id]

    def _next(self, key_id: str, call: str) -> str:
        with self._lock:
            queue = self._faults[(key_id, call)]
            served = queue.popleft() if queue else "ok"
            self.answered.append((key_id, call, served))
            return served

    def _answer_call(self, request: Request) -> Reply:
        call = CALLS[request.path]
        key_id = request.headers.get("APCA-API-KEY-ID", "")
        if key_id not in self.fills:
            return Reply(401, b'{"message": "no"}')
        served = self._next(key_id, call)
        body = self._body(key_id, call, request.query) if served != "401" else b""
        if served == "ok":
            return Reply(200, body)
        if served == "500":
            return Reply(500, b'{"code": 50010000, "message": "internal server error"}')
        if served == "timeout":
            time.sleep(self.timeout_sleep_s)
            return Reply(200, body)
        if served == "garbage":
            return Reply(200, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
        if served == "truncated":
            return Reply(200, body[: len(body) // 2])
        if served == "cut":
            return Reply(200, body, cut=True)
        if served == "429":
            return Reply(429, b'{"code": 42910000, "message": "rate limit exceeded"}', {"Retry-After": "1"})
        return Reply(401, b'{"code": 40110000, "message": "request is not authorized"}')

    def _positions(self, request: Request) -> Reply:
        """The key's open position, netted from its fills as Alpaca nets them (answered, never scripted)."""
        key_id = request.headers.get("APCA-API-KEY-ID", "")
        if key_id not in self.fills:
            return Reply(401, b'{"message": "no"}')
        with self._lock:
            net = sum(Decimal(f["qty"]) * (1 if f["side"] == "buy" else -1) for f in self.fills[key_id])
        if not net:
            return Reply(200, b"[]")
        side = "long" if net > 0 else "short"
        position = {"symbol": SYMBOL, "qty": str(abs(net)), "side": side, "avg_entry_price": "187.42"}
        return Reply(200, json.dumps([position]).encode())

    def _body(self, key_id: str, call: str, query: dict[str, str]) -> bytes:
        if call == "account":
            account = {"id": f"acc-{key_id}", "account_number": account_number(key_id), "currency": "USD"}
            return json.dumps({**account, "status": "ACTIVE"}).encode()
        with self._lock:
            self.in_flight[key_id] += 1
        try:
            if self.before_fills:
                self.before_fills(key_id)
            time.sleep(self.fills_delay_s[key_id])
        finally:
            with self._lock:
                self.in_flight[key_id] -= 1
        # Alpaca filters by time (after: exclusive, until: inclusive) and pages oldest first.
        after, until = (datetime.fromisoformat(query[name]) for name in ("after", "until"))
        with self._lock:
            window = [f for f in self.fills[key_id] if after < _time(f) <= until]
        window.sort(key=_time)
        size = int(query.get("page_size", "100"))
        start = 0
        if "page_token" in query:
            start = [f["id"] for f in window].index(query["page_token"]) + 1
        return json.dumps(window[start : start + size]).encode()
