"""A loopback broker in Alpaca's documented format whose answers can be scripted to fail.

tests/fake_alpaca.py serves one account to every key; the drills need several connections
syncing at once, each with its own account, its own fills and its own misfortunes, and
faults on any call (not only the account call). Everything here follows docs/brokers/alpaca.md:
`GET /v2/account` and `GET /v2/account/activities/FILL` with `after`/`until` (honoured, so
a cursor that skips ahead loses fills here as it would at Alpaca), `page_size` and
`page_token` (the id of the last fill already read), keys in `APCA-API-KEY-ID` /
`APCA-API-SECRET-KEY`.

Faults are queued per (key, call) and consumed one per request, so a drill says exactly
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

import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ACCOUNT_PATH = "/v2/account"
FILLS_PATH = "/v2/account/activities/FILL"
CALLS = {ACCOUNT_PATH: "account", FILLS_PATH: "fills"}
FAULTS = {"500", "timeout", "garbage", "truncated", "cut", "429", "401", "ok"}


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
        "symbol": "AAPL",
        "order_id": f"order-{key_id}-{i}",
        "cum_qty": "5",
        "leaves_qty": "0",
    }


def _time(activity: dict) -> datetime:
    return datetime.fromisoformat(activity["transaction_time"])


class StormBroker:
    """Serve {key_id: number of fills}; script faults with fail(); read what happened in calls."""

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
        self.calls: list[tuple[str, str, str]] = []  # (key, "account" | "fills", what was served)
        self.in_flight: dict[str, int] = defaultdict(int)  # fills requests being answered, per key
        self._faults: dict[tuple[str, str], deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

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
            return sum(1 for k, c, s in self.calls if k == key_id and c == call and (served is None or s == served))

    def served(self, key_id: str) -> list[str]:
        """What the key's requests got, in order, e.g. ["account:ok", "fills:500", ...]."""
        with self._lock:
            return [f"{c}:{s}" for k, c, s in self.calls if k == key_id]

    def _next(self, key_id: str, call: str) -> str:
        with self._lock:
            queue = self._faults[(key_id, call)]
            served = queue.popleft() if queue else "ok"
            self.calls.append((key_id, call, served))
            return served

    def _handler(self):
        broker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its load balancer

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                # The client of a "timeout" has hung up before the late answer: that is the point.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer()

            def _answer(self):
                url = urlparse(self.path)
                call = CALLS.get(url.path)
                key_id = self.headers.get("APCA-API-KEY-ID", "")
                if call is None or key_id not in broker.fills:
                    return self._send(404 if call is None else 401, json.dumps({"message": "no"}).encode())
                served = broker._next(key_id, call)
                body = self._body(key_id, call, parse_qs(url.query)) if served != "401" else b""
                if served == "ok":
                    return self._send(200, body)
                if served == "500":
                    return self._send(500, b'{"code": 50010000, "message": "internal server error"}')
                if served == "timeout":
                    time.sleep(broker.timeout_sleep_s)
                    return self._send(200, body)
                if served == "garbage":
                    return self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                if served == "truncated":
                    return self._send(200, body[: len(body) // 2])
                if served == "cut":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                if served == "429":
                    return self._send(429, b'{"code": 42910000, "message": "rate limit exceeded"}', Retry_After="1")
                return self._send(401, b'{"code": 40110000, "message": "request is not authorized"}')

            def _body(self, key_id: str, call: str, query: dict) -> bytes:
                if call == "account":
                    number = account_number(key_id)
                    return json.dumps(
                        {"id": f"acc-{key_id}", "account_number": number, "currency": "USD", "status": "ACTIVE"}
                    ).encode()
                with broker._lock:
                    broker.in_flight[key_id] += 1
                try:
                    if broker.before_fills:
                        broker.before_fills(key_id)
                    time.sleep(broker.fills_delay_s[key_id])
                finally:
                    with broker._lock:
                        broker.in_flight[key_id] -= 1
                # Alpaca filters by time (after: exclusive, until: inclusive) and pages oldest first.
                after, until = (datetime.fromisoformat(query[name][0]) for name in ("after", "until"))
                with broker._lock:
                    window = [f for f in broker.fills[key_id] if after < _time(f) <= until]
                window.sort(key=_time)
                size = int(query.get("page_size", ["100"])[0])
                start = 0
                if "page_token" in query:
                    start = [f["id"] for f in window].index(query["page_token"][0]) + 1
                return json.dumps(window[start : start + size]).encode()

        return Handler
