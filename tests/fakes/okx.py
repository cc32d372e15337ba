"""A loopback OKX (API v5) for real-process tests and the bench: spot and perpetual markets, balances, fills.

Built from OKX's documented formats (the same as tests/providers/ccxt_exchanges.py):
`GET /api/v5/public/instruments?instType=` lists BTC-USDT (SPOT) and BTC-USDT-SWAP (SWAP);
`GET /api/v5/account/balance` holds BTC and USDT; `GET /api/v5/trade/fills-history?instType=`
answers the newest 100 fills of that type with `ts` at or before `end`; `GET /api/v5/account/positions`
answers the perpetual's net position (contracts) summed from its fills, none when flat. A request without
the key's OK-ACCESS-KEY and OK-ACCESS-PASSPHRASE headers is refused with code 50111.
The generic faults of tests/fakes/loopback.py apply too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.fakes.loopback import LoopbackServer, Request
from tests.providers.ccxt_exchanges import OKX_SPOT, OKX_SWAP, okx_fill

API_KEY = "okx-api-key-4f1c"
SECRET = "okx-secret-9a7e"
PASSPHRASE = "okx-passphrase-2b6d"
PAGE_SIZE = 100
SYMBOLS = {"SPOT": "BTC/USDT", "SWAP": "BTC/USDT:USDT"}


class FakeOkx(LoopbackServer):
    def __init__(self, fills: dict[str, int], days: int = 30, **kwargs):
        super().__init__(**kwargs)
        now = datetime.now(UTC).replace(microsecond=0)
        start = now - timedelta(days=days)
        self.fills = {}
        for kind, count in fills.items():
            step = (now - start) / (count + 1)
            inst_id = OKX_SPOT["instId"] if kind == "SPOT" else OKX_SWAP["instId"]
            self.fills[kind] = [
                okx_fill(i, int((start + step * (i + 1)).timestamp() * 1000), inst_id, kind) for i in range(count)
            ]
        self.route("GET", "/api/v5/public/instruments", self._instruments)
        self.route("GET", "/api/v5/account/balance", self._private(self._balance))
        self.route("GET", "/api/v5/trade/fills-history", self._private(self._fills_history))
        self.route("GET", "/api/v5/account/positions", self._private(self._positions))

    @property
    def credentials(self) -> dict[str, str]:
        return {"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE}

    def expected_ids(self, kind: str) -> set[str]:
        return {f"{SYMBOLS[kind]}|{f['tradeId']}" for f in self.fills.get(kind, [])}

    def _private(self, handler):
        def checked(request: Request):
            headers = request.headers
            if headers.get("OK-ACCESS-KEY") != API_KEY or headers.get("OK-ACCESS-PASSPHRASE") != PASSPHRASE:
                return 401, {"msg": "Invalid OK-ACCESS-KEY", "code": "50111"}
            return handler(request)

        return checked

    def _instruments(self, request: Request):
        listed = {"SPOT": [OKX_SPOT], "SWAP": [OKX_SWAP]}.get(request.query.get("instType", ""), [])
        return 200, {"code": "0", "msg": "", "data": [i for i in listed if i["instType"] in self.fills]}

    def _balance(self, request: Request):
        details = [
            {"availBal": "1000", "availEq": "1000", "cashBal": "1000", "ccy": "USDT", "eq": "1000", "frozenBal": "0"},
            {"availBal": "0.5", "availEq": "0.5", "cashBal": "0.5", "ccy": "BTC", "eq": "0.5", "frozenBal": "0"},
        ]
        return 200, {"code": "0", "msg": "", "data": [{"details": details, "totalEq": "30000", "uTime": "1"}]}

    def _fills_history(self, request: Request):
        end = int(request.query.get("end") or 10**15)
        with self.lock:
            fills = self.fills.get(request.query.get("instType", ""), [])
            older = sorted((f for f in fills if int(f["ts"]) <= end), key=lambda f: int(f["ts"]), reverse=True)
        return 200, {"code": "0", "msg": "", "data": older[:PAGE_SIZE]}

    def _positions(self, request: Request):
        with self.lock:
            fills = list(self.fills.get("SWAP", []))
        net = sum(int(f["fillSz"]) * (1 if f["side"] == "buy" else -1) for f in fills)
        if not net:
            return 200, {"code": "0", "msg": "", "data": []}
        row = {"instId": OKX_SWAP["instId"], "instType": "SWAP", "posSide": "net", "pos": str(net)}
        row |= {"avgPx": fills[-1]["fillPx"], "mgnMode": "cross", "ccy": "USDT", "uTime": fills[-1]["ts"]}
        return 200, {"code": "0", "msg": "", "data": [row]}
