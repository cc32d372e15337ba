"""A loopback ProjectX Gateway API: API-key login, day-long JWTs, accounts, trade search, contracts, limits.

Written from the documented formats (docs/brokers/projectx.md): every call is a POST, business
failures are HTTP 200 with `success: false` and an errorCode of that endpoint, a missing or
expired token is 401, and more than `limit` requests of one user in `window_s` get HTTP 429
with no Retry-After. Its failure modes: a login refused with any LoginErrorCode
(`refuse_login`), tokens that die before their time (`expire_tokens`), one endpoint answering
`success: false` (`fail_envelope`), fills voided after the fact (`void`), and contracts that
searchById does not know (`forget_contract`). Open positions (Position/searchOpen) are what the
fills not voided leave.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from tests.fakes.loopback import LoopbackServer, Reply

API_KEY = "sim-api-key"
# Documented contracts: ES and NQ from the docs' examples, MNQ from a real account's fills.
CONTRACTS = {
    "CON.F.US.EP.Z26": {"name": "ESZ6", "description": "E-mini S&P 500", "tickSize": 0.25, "tickValue": 12.5},
    "CON.F.US.ENQ.Z26": {"name": "NQZ6", "description": "E-mini Nasdaq-100", "tickSize": 0.25, "tickValue": 5},
    "CON.F.US.MNQ.Z26": {"name": "MNQZ6", "description": "Micro E-mini Nasdaq-100", "tickSize": 0.25, "tickValue": 0.5},
}
PRICES = {"CON.F.US.EP.Z26": 6064.25, "CON.F.US.ENQ.Z26": 21010.5, "CON.F.US.MNQ.Z26": 21011.75}
FEES = {"CON.F.US.EP.Z26": 1.4, "CON.F.US.ENQ.Z26": 1.4, "CON.F.US.MNQ.Z26": 0.37}
TOKEN_LIFE = timedelta(hours=24)


def configure(settings, sim: ProjectXSim) -> None:
    """Point this process's ProjectX provider (every firm) at the simulator."""
    settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "projectx": sim.url}


def stamp(moment: datetime) -> str:
    """ProjectX's creationTimestamp: offset, and a fraction with its trailing zeros dropped (.16776)."""
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    whole, fraction = text[:-6].split(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction or '0'}+00:00"


def _jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{secrets.token_urlsafe(16)}"


def _ok(**body) -> tuple[int, dict]:
    return 200, {**body, "success": True, "errorCode": 0, "errorMessage": None}


def _refused(code: int, message: str, **body) -> tuple[int, dict]:
    return 200, {**body, "success": False, "errorCode": code, "errorMessage": message}


class ProjectXSim(LoopbackServer):
    def __init__(self, *, limit: int = 200, window_s: float = 60.0, delay_s: float = 0.0):
        super().__init__(delay_s=delay_s)
        self.limit = limit
        self.window_s = window_s
        self.users: dict[str, str] = {}  # userName -> apiKey
        self.login_errors: dict[str, tuple[int, str]] = {}
        self.accounts: dict[str, list[dict]] = defaultdict(list)
        self.trades: dict[int, list[dict]] = defaultdict(list)
        self.contracts = {
            k: {"id": k, "activeContract": True, "symbolId": f"F.US.{k.split('.')[3]}", **v}
            for k, v in CONTRACTS.items()
        }
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (userName, expiry epoch)
        self.logins: list[str] = []
        self.renewals = 0
        self.envelope_failures: dict[str, tuple[int, str]] = {}
        self.refused_429 = 0
        self._calls: dict[str, list[float]] = defaultdict(list)
        self._next_trade_id = 4_000_000_000  # int64 ids beyond 32 bits, as the docs' type says
        self._next_order_id = 900_000
        for path, handler in {
            "/api/Auth/loginKey": self._login,
            "/api/Auth/validate": self._validate,
            "/api/Account/search": self._authorised(self._search_accounts),
            "/api/Trade/search": self._authorised(self._search_trades),
            "/api/Contract/searchById": self._authorised(self._contract),
            "/api/Position/searchOpen": self._authorised(self._open_positions),
        }.items():
            self.route("POST", path, self._limited(path, handler))

    # --- arranging a scenario ----------------------------------------------------------------
    def add_user(self, username: str, api_key: str = API_KEY) -> None:
        self.users[username] = api_key

    def add_account(self, username: str, account_id: int, name: str, *, active: bool = True) -> None:
        self.accounts[username].append(
            {
                "id": account_id,
                "name": name,
                "balance": 50000.0,
                "canTrade": active,
                "isVisible": True,
                "simulated": True,
                "_active": active,
            }
        )

    def add_fills(
        self, account_id: int, count: int, *, start: datetime, step: timedelta, contract: str = "CON.F.US.EP.Z26"
    ) -> list[dict]:
        """`count` fills, alternately opening (a half-turn: profitAndLoss null) and closing a position of 1."""
        added = []
        with self.lock:
            for n in range(count):
                moment = start + step * n + timedelta(microseconds=(n * 104_729) % 1_000_000)
                closing = n % 2 == 1
                price = PRICES[contract] + (0.25 * (n % 8))
                self._next_trade_id += 1
                self._next_order_id += 1
                tick_value, tick_size = CONTRACTS[contract]["tickValue"], CONTRACTS[contract]["tickSize"]
                record = {
                    "id": self._next_trade_id,
                    "accountId": account_id,
                    "contractId": contract,
                    "creationTimestamp": stamp(moment),
                    "price": price,
                    "profitAndLoss": round(0.25 * tick_value / tick_size, 2) if closing else None,
                    "fees": FEES[contract],
                    "side": n % 2,
                    "size": 1 + n % 3,
                    "voided": False,
                    "orderId": self._next_order_id,
                }
                self.trades[account_id].append(record)
                added.append(record)
        return added

    def void(self, trade_id: int) -> None:
        """The firm busts a fill: the same id comes back with voided true."""
        with self.lock:
            for records in self.trades.values():
                for record in records:
                    if record["id"] == trade_id:
                        record["voided"] = True

    def expected_ids(self, account_id: int) -> set[str]:
        """Ids of the fills a journal should hold for the account: every one not voided."""
        return {str(t["id"]) for t in self.trades[account_id] if not t["voided"]}

    def refuse_login(self, username: str, code: int, message: str) -> None:
        self.login_errors[username] = (code, message)

    def expire_tokens(self) -> None:
        """Every token issued so far dies now, before its 24 hours (a restart at the firm)."""
        with self.lock:
            self.tokens = {t: (user, 0.0) for t, (user, _) in self.tokens.items()}

    def fail_envelope(self, path: str, code: int, message: str) -> None:
        """The next call to path answers HTTP 200 with success false."""
        self.envelope_failures[path] = (code, message)

    def forget_contract(self, contract_id: str) -> None:
        self.contracts.pop(contract_id, None)

    def bodies(self, path: str) -> list[dict]:
        with self.lock:
            return [r.json() for r in self.requests if r.path == path]

    # --- serving -------------------------------------------------------------------------------
    def _limited(self, path, handler):
        def serve(request):
            user = self._caller(request)
            now = time.monotonic()
            with self.lock:
                recent = [t for t in self._calls[user] if now - t < self.window_s]
                self._calls[user] = recent
                if len(recent) >= self.limit:
                    self.refused_429 += 1
                    return Reply(429, b"")
                recent.append(now)
                failure = self.envelope_failures.pop(path, None)
            if failure is not None:
                return _refused(*failure)
            return handler(request)

        return serve

    def _caller(self, request) -> str:
        """Whose budget a request spends: the token's user, or the user a login names."""
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        if token in self.tokens:
            return self.tokens[token][0]
        try:
            return str(request.json().get("userName", ""))
        except ValueError:
            return ""

    def _authorised(self, handler):
        def serve(request):
            token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
            with self.lock:
                user, expiry = self.tokens.get(token, ("", 0.0))
            if not user or expiry <= time.time():
                return 401, b""
            return handler(request, user, token)

        return serve

    def _issue(self, username: str) -> str:
        expiry = datetime.now(UTC) + TOKEN_LIFE
        token = _jwt({"sub": username, "exp": int(expiry.timestamp())})
        with self.lock:
            self.tokens[token] = (username, expiry.timestamp())
        return token

    def _login(self, request):
        body = request.json()
        if not body.get("userName") or not body.get("apiKey"):
            return 400, {"title": "One or more validation errors occurred.", "status": 400}
        username = body["userName"]
        if username in self.login_errors:
            return _refused(*self.login_errors[username], token=None)
        if self.users.get(username) != body["apiKey"]:
            return _refused(3, "Invalid credentials.", token=None)
        self.logins.append(username)
        return _ok(token=self._issue(username))

    def _validate(self, request):
        # Validate answers in its envelope (ValidateErrorCode), not with a 401 like the data calls.
        token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.lock:
            user, expiry = self.tokens.get(token, ("", 0.0))
        if not user:
            return _refused(2, "Session not found.", newToken=None)
        if expiry <= time.time():
            return _refused(3, "Token expired.", newToken=None)
        self.renewals += 1
        return _ok(newToken=self._issue(user))

    def _search_accounts(self, request, user, token):
        only_active = request.json().get("onlyActiveAccounts")
        if only_active is None:
            return 400, {"title": "onlyActiveAccounts is required", "status": 400}
        listed = [a for a in self.accounts[user] if a["_active"] or not only_active]
        return _ok(accounts=[{k: v for k, v in a.items() if not k.startswith("_")} for a in listed])

    def _search_trades(self, request, user, token):
        body = request.json()
        if "accountId" not in body or "startTimestamp" not in body:
            return 400, {"title": "accountId and startTimestamp are required", "status": 400}
        if body["accountId"] not in {a["id"] for a in self.accounts[user]}:
            return _refused(1, "Account not found.", trades=None)
        start = datetime.fromisoformat(body["startTimestamp"])
        end = datetime.fromisoformat(body["endTimestamp"]) if body.get("endTimestamp") else None
        with self.lock:
            found = [
                dict(t)
                for t in self.trades[body["accountId"]]
                if start <= datetime.fromisoformat(t["creationTimestamp"])
                and (end is None or datetime.fromisoformat(t["creationTimestamp"]) <= end)
            ]
        return _ok(trades=found)

    def _open_positions(self, request, user, token):
        """What the account's fills not voided leave open, per contract: type 1 long, 2 short, size unsigned."""
        account_id = request.json().get("accountId")
        if account_id not in {a["id"] for a in self.accounts[user]}:
            return _refused(1, "Account not found.", positions=None)
        net: dict[str, int] = defaultdict(int)
        with self.lock:
            for t in self.trades[account_id]:
                if not t["voided"]:
                    net[t["contractId"]] += t["size"] * (1 if t["side"] == 0 else -1)
        return _ok(
            positions=[
                {
                    "id": n,
                    "accountId": account_id,
                    "contractId": contract,
                    "creationTimestamp": stamp(datetime.now(UTC)),
                    "type": 1 if size > 0 else 2,
                    "size": abs(size),
                    "averagePrice": PRICES[contract],
                }
                for n, (contract, size) in enumerate(sorted(net.items()), 1)
                if size
            ]
        )

    def _contract(self, request, user, token):
        contract = self.contracts.get(request.json().get("contractId"))
        if contract is None:
            return _refused(1, "Contract not found.", contract=None)
        return _ok(contract=contract)
