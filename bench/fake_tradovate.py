"""A loopback Tradovate for the fan-out benchmark: the documented endpoints, every answer late.

It answers exactly the calls brokers/providers/tradovate.py makes (docs/brokers/tradovate.md):
`POST /auth/accesstokenrequest`, `GET /account/list`, `GET /fill/list` and
`GET /{order,fillFee,contract,contractMaturity,product}/items?ids=…`, in the formats of the
provider's own tests. Each user (login name) has its own accounts and fills; the bearer token
says whose data a call sees. Every request waits `delay_s` before it is answered, like a
broker across an ocean, so the benchmark measures how much of that waiting runs in parallel.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# Two futures with their three-hop chain contract -> maturity -> product.
CONTRACTS = {
    1001: {"id": 1001, "name": "ESZ6", "contractMaturityId": 51},
    1002: {"id": 1002, "name": "MNQH7", "contractMaturityId": 52},
}
MATURITIES = {
    51: {"id": 51, "productId": 61, "expirationMonth": 202612, "isFront": True},
    52: {"id": 52, "productId": 62, "expirationMonth": 202703, "isFront": False},
}
PRODUCTS = {
    61: {"id": 61, "name": "ES", "valuePerPoint": 50, "tickSize": 0.25, "currencyId": 1},
    62: {"id": 62, "name": "MNQ", "valuePerPoint": 2, "tickSize": 0.25, "currencyId": 1},
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Twenty workers connect at once; the default backlog of 5 would make some of them wait
    # for a SYN retry (a second or more), which is the kernel's delay, not the broker's.
    request_queue_size = 256


class FakeTradovate:
    """users: {login name: number of accounts}; each account gets `fills_per_account` fills."""

    def __init__(self, users: dict[str, int], fills_per_account: int, delay_s: float):
        self.delay_s = delay_s
        self.calls: Counter[str] = Counter()  # path -> requests answered
        self._lock = threading.Lock()
        self.accounts: dict[str, list[dict]] = {}
        self.fills: dict[str, list[dict]] = {}
        self.orders: dict[int, dict] = {}
        self.fees: dict[int, dict] = {}
        # Executed an hour ago, a second apart: inside the first sync's window (max_history, 30 days).
        start = datetime.now(UTC) - timedelta(hours=1)
        next_account, next_fill = 70_000, 1
        for name, count in users.items():
            self.accounts[name], self.fills[name] = [], []
            for _ in range(count):
                account_id, next_account = next_account, next_account + 1
                self.accounts[name].append(
                    {"id": account_id, "name": f"DEMO{account_id}", "accountType": "Customer", "active": True,
                     "closed": False}
                )
                for _ in range(fills_per_account):
                    fill_id, next_fill = next_fill, next_fill + 1
                    self._add_fill(name, account_id, fill_id, start + timedelta(seconds=fill_id))
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _add_fill(self, name: str, account_id: int, fill_id: int, at: datetime) -> None:
        order_id, contract_id = 900_000 + fill_id, 1001 + fill_id % 2
        action = "Buy" if fill_id % 2 else "Sell"
        self.orders[order_id] = {"id": order_id, "accountId": account_id, "contractId": contract_id,
                                 "action": action, "ordStatus": "Filled", "admin": False}
        self.fills[name].append({
            "id": fill_id, "orderId": order_id, "contractId": contract_id,
            "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "tradeDate": {"year": at.year, "month": at.month, "day": at.day},
            "action": action, "qty": 1 + fill_id % 3, "price": 5901.25, "active": True, "finallyPaired": 0,
        })
        self.fees[fill_id] = {"id": fill_id, "commission": 0.59, "clearingFee": 0.19, "exchangeFee": 1.38,
                              "nfaFee": 0.02, "brokerageFee": None, "ipFee": None, "orderRoutingFee": None}

    def expected_ids(self, name: str) -> dict[str, set[str]]:
        """{account external id: the fill ids a complete sync must import} for one user."""
        by_account: dict[str, set[str]] = {str(a["id"]): set() for a in self.accounts[name]}
        for f in self.fills[name]:
            by_account[str(self.orders[f["orderId"]]["accountId"])].add(str(f["id"]))
        return by_account

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, method: str, path: str, query: dict, token: str, body: dict):
        if method == "POST" and path == "/auth/accesstokenrequest":
            if body.get("name") not in self.accounts:
                return {"errorText": "Incorrect username or password. Please try again."}
            expires = datetime.now(UTC) + timedelta(minutes=90)
            return {"accessToken": f"token-{body['name']}", "mdAccessToken": "md", "userId": 77,
                    "expirationTime": expires.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "userStatus": "Active", "name": body["name"], "hasLive": False}
        user = token.removeprefix("token-")
        if user not in self.accounts:
            return None  # 401: the engine would log in again
        if path == "/account/list":
            return self.accounts[user]
        if path == "/fill/list":
            return self.fills[user]
        tables = {"/order/items": self.orders, "/fillFee/items": self.fees, "/contract/items": CONTRACTS,
                  "/contractMaturity/items": MATURITIES, "/product/items": PRODUCTS}
        if path in tables:
            ids = [int(i) for i in query.get("ids", [""])[0].split(",") if i]
            return [tables[path][i] for i in ids if i in tables[path]]
        return {"errorText": f"unknown path {path}"}

    def _handler(self):
        broker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session expects

            def log_message(self, *args):
                pass

            def _serve(self, method: str) -> None:
                url = urlparse(self.path)
                path = url.path.removeprefix("/v1")
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                time.sleep(broker.delay_s)
                data = broker._answer(method, path, parse_qs(url.query), token, body)
                with broker._lock:
                    broker.calls[path] += 1
                status, payload = (401, b"") if data is None else (200, json.dumps(data).encode())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

        return Handler
