"""A loopback HTTP server that answers like Alpaca's Trading API, for tests across processes.

`responses` only mocks HTTP inside the test process; a real worker process needs a real
server. Payloads follow Alpaca's documented formats (see docs/brokers/alpaca.md). The
server can fail the account call a number of times, refuse the keys, or be slow, so tests
can watch retries, auth failures, overlapping runs and killed workers.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ACCOUNT = {"id": "5f1c-acc", "account_number": "PA3FAKE", "currency": "USD", "status": "ACTIVE"}


def fill(i: int) -> dict:
    return {
        "id": f"20261120{i:06d}::fake-{i}",
        "activity_type": "FILL",
        "transaction_time": f"2026-11-20T15:{i // 60 % 60:02d}:{i % 60:02d}.250Z",
        "type": "fill",
        "price": "187.42",
        "qty": "5",
        "side": "buy" if i % 2 else "sell",
        "symbol": "AAPL",
        "order_id": f"order-{i}",
        "cum_qty": "5",
        "leaves_qty": "0",
    }


class FakeAlpaca:
    def __init__(self, fills: int = 150):
        self.fills = [fill(i) for i in range(fills)]
        self.fail_account_times = 0
        self.refuse_keys = False
        self.fills_delay_s = 0.0
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c == path)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                with fake._lock:
                    fake.calls.append(url.path)
                    failing = url.path == "/v2/account" and fake.fail_account_times > 0
                    if failing:
                        fake.fail_account_times -= 1
                if fake.refuse_keys:
                    return self._send(401, {"code": 40110000, "message": "request is not authorized"})
                if failing:
                    return self._send(500, {"message": "internal server error"})
                if url.path == "/v2/account":
                    return self._send(200, ACCOUNT)
                if url.path == "/v2/account/activities/FILL":
                    time.sleep(fake.fills_delay_s)
                    query = parse_qs(url.query)
                    size = int(query.get("page_size", ["100"])[0])
                    start = 0
                    if "page_token" in query:
                        ids = [f["id"] for f in fake.fills]
                        start = ids.index(query["page_token"][0]) + 1
                    return self._send(200, fake.fills[start : start + size])
                return self._send(404, {"message": "not found"})

        return Handler
