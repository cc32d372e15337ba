"""A loopback Alpaca Trading API for tests across processes: one account, its fills, a few faults.

Payloads follow Alpaca's documented formats (see docs/brokers/alpaca.md). The server can
fail the account call a number of times, refuse the keys, or be slow, so tests can watch
retries, auth failures, overlapping runs and killed workers.
"""

from __future__ import annotations

import time

from tests.fakes.loopback import LoopbackServer, Request

ACCOUNT = {"id": "5f1c-acc", "account_number": "PA3FAKE", "currency": "USD", "status": "ACTIVE"}
REFUSED = (401, {"code": 40110000, "message": "request is not authorized"})


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


class FakeAlpaca(LoopbackServer):
    def __init__(self, fills: int = 150):
        super().__init__()
        self.fills = [fill(i) for i in range(fills)]
        self.fail_account_times = 0
        self.refuse_keys = False
        self.fills_delay_s = 0.0
        self.route("GET", "/v2/account", self._account)
        self.route("GET", "/v2/account/activities/FILL", self._fills)

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
