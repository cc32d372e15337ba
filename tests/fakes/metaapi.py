"""A loopback MetaApi: provisioning (accounts, deploy states, known servers) and the client API (deals, symbols).

Written from MetaApi's documented formats (metaapi.cloud/docs: provisioning and client REST API,
MetatraderDeal, TooManyRequestsError) and the facts page ../shared/brokers/metaapi.md. One server
answers both APIs, as their paths do not overlap. MT accounts live at "brokers" (platform,
server, login -> investor password); provisioning one checks the server and the password as
MetaApi does (E_SRV_NOT_FOUND with suggestions, E_AUTH, E_SERVER_TIMEZONE, a 202 while broker
settings are detected). A deployed terminal connects after `connect_s` (`first_connect_s` the
first time); the next `synchronizing_reads` deal reads after a connect answer in the RPC shape
with `synchronizing: true` and only part of the history. CPU credits are counted per token (50 a
call, `credits_per_s` a second) with MetaApi's 429 body and Retry-After. Open positions are what the
deals not cancelled leave, one per positionId.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from urllib.parse import unquote

from tests.fakes.loopback import LoopbackServer, Reply

OPERATOR_TOKEN = "sim-operator-token"
KNOWN_SERVERS = {
    "Raw Trading Ltd": ["ICMarketsSC-Demo", "ICMarketsSC-Live07", "ICMarketsSC-MT5"],
    "Pepperstone Group Limited": ["Pepperstone-Demo", "Pepperstone-Live01"],
    "FTMO S.R.O.": ["FTMO-Demo", "FTMO-Server3"],
}
SPECS = {
    "EURUSD": {"symbol": "EURUSD", "contractSize": 100000, "profitCurrency": "USD", "digits": 5},
    "XAUUSD+": {"symbol": "XAUUSD+", "contractSize": 100, "profitCurrency": "USD", "digits": 2},
    "US30.cash": {"symbol": "US30.cash", "contractSize": 1, "profitCurrency": "USD", "digits": 1},
}
CREDITS_PER_CALL = 50
_ACCOUNT = r"/users/current/accounts/([^/]+)"


def configure(settings, sim: MetaApiSim) -> None:
    """Point this process's MetaTrader provider at the simulator, with the operator's token."""
    settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "metatrader": sim.url}
    settings.METAAPI_CLIENT_URL = sim.url
    settings.METAAPI_TOKEN = OPERATOR_TOKEN


def env(sim: MetaApiSim) -> dict[str, str]:
    """The same for worker processes."""
    return {"METATRADER_BASE_URL": sim.url, "METAAPI_CLIENT_URL": sim.url, "METAAPI_TOKEN": OPERATOR_TOKEN}


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(status: int, name: str, message: str, **extra) -> Reply:
    return Reply(status, {"id": 1, "error": name, "message": message, **extra})


class MetaApiSim(LoopbackServer):
    def __init__(
        self,
        *,
        connect_s: float = 0.0,
        first_connect_s: float | None = None,
        credits_per_s: int = 1000,
        detection_202: int = 0,
    ):
        super().__init__()
        self.connect_s = connect_s
        self.first_connect_s = connect_s if first_connect_s is None else first_connect_s
        self.credits_per_s = credits_per_s
        self.detection_202 = detection_202  # adds answered 202 (settings detection) before one succeeds
        self.tokens = {OPERATOR_TOKEN}
        self.brokers: dict[tuple[str, str, str], str] = {}  # (platform, server, login) -> investor password
        self.timezone_unknown: set[str] = set()
        self.accounts: dict[str, dict] = {}
        self.deals: dict[str, list[dict]] = defaultdict(list)  # "login@server" -> deals
        self.specs = dict(SPECS)
        self.synchronizing_reads = 0
        self.throttle = 0  # requests still to answer 429 whatever the credits
        self.throttle_retry_s = 2.0
        self.throttled = 0
        self.adds_refused = 0
        self.deployed_s: dict[str, float] = defaultdict(float)
        self._spent: dict[str, deque] = defaultdict(deque)
        self._transactions: dict[str, str] = {}
        self._next_deal = 100000
        self._patterns = [
            ("GET", r"/known-mt-servers/([45])/search", self._search),
            ("GET", r"/users/current/accounts", self._list),
            ("POST", r"/users/current/accounts", self._create),
            ("GET", _ACCOUNT, self._get),
            ("PUT", _ACCOUNT, self._update),
            ("DELETE", _ACCOUNT, self._delete),
            ("POST", _ACCOUNT + r"/deploy", self._deploy),
            ("POST", _ACCOUNT + r"/undeploy", self._undeploy),
            ("GET", _ACCOUNT + r"/history-deals/time/([^/]+)/([^/]+)", self._history),
            ("GET", _ACCOUNT + r"/symbols/([^/]+)/specification", self._specification),
            ("GET", _ACCOUNT + r"/positions", self._positions),
        ]

    # --- set-up ------------------------------------------------------------------------------
    def add_mt_account(self, platform: str, server: str, login: str, password: str) -> str:
        self.brokers[(platform, server, login)] = password
        return f"{login}@{server}"

    def add_deal(self, mt_account: str, *, type: str = "DEAL_TYPE_BUY", at: datetime, **fields) -> dict:
        with self.lock:
            self._next_deal += 1
            deal = {
                "id": str(self._next_deal),
                "type": type,
                "entryType": fields.pop("entryType", "DEAL_ENTRY_IN"),
                "symbol": fields.pop("symbol", "EURUSD"),
                "magic": 0,
                "time": stamp(at),
                "brokerTime": (at + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                "volume": fields.pop("volume", 0.1),
                "price": fields.pop("price", 1.08512),
                "commission": fields.pop("commission", -0.35),
                "swap": fields.pop("swap", 0),
                "profit": fields.pop("profit", 0),
                "positionId": fields.pop("positionId", str(self._next_deal)),
                "orderId": fields.pop("orderId", str(self._next_deal)),
                "platform": fields.pop("platform", "mt5"),
                "reason": "DEAL_REASON_CLIENT",
                **fields,
            }
            self.deals[mt_account].append(deal)
            return deal

    def cancel_deal(self, mt_account: str, deal_id: str) -> None:
        """The broker cancels an executed deal: MetaTrader changes its type in place and zeroes its profit."""
        with self.lock:
            for deal in self.deals[mt_account]:
                if deal["id"] == deal_id:
                    deal["type"] += "_CANCELED"
                    deal["profit"] = 0

    def provisioned(self) -> list[dict]:
        with self.lock:
            return [a for a in self.accounts.values() if a["state"] != "DELETED"]

    # --- routing -----------------------------------------------------------------------------
    def handler_for(self, method: str, path: str):
        for verb, pattern, handler in self._patterns:
            found = re.fullmatch(pattern, path) if verb == method else None
            if found:
                return partial(self._guarded, handler=handler, args=found.groups())
        return None

    def _guarded(self, request, *, handler, args):
        token = request.headers.get("auth-token") or ""
        if token not in self.tokens:
            return _error(401, "UnauthorizedError", "Authorization token invalid")
        throttled = self._over_budget(token)
        if throttled is not None:
            return throttled
        return handler(request, *[unquote(a) for a in args])

    def _over_budget(self, token: str) -> Reply | None:
        with self.lock:
            now = time.monotonic()
            spent = self._spent[token]
            while spent and now - spent[0] >= 1.0:
                spent.popleft()
            forced = self.throttle > 0
            if not forced and (len(spent) + 1) * CREDITS_PER_CALL <= self.credits_per_s:
                spent.append(now)
                return None
            self.throttle = max(0, self.throttle - 1)
            self.throttled += 1
            wait = self.throttle_retry_s if forced else 1.0 - (now - spent[0])
        retry_at = datetime.now(UTC) + timedelta(seconds=wait)
        metadata = {
            "periodInSeconds": 1,
            "creditsAvailable": self.credits_per_s,
            "creditsUsed": self.credits_per_s,
            "creditsRequired": CREDITS_PER_CALL,
            "recommendedRetryTime": stamp(retry_at),
        }
        return Reply(
            429,
            {
                "id": 1,
                "error": "TooManyRequestsError",
                "message": f"The API allows {self.credits_per_s} cpu credits per 1s.",
                "metadata": metadata,
            },
            {"Retry-After": str(max(1, round(wait)))},
        )

    # --- provisioning ------------------------------------------------------------------------
    def _search(self, request, version):
        words = request.query.get("query", "").lower().split()
        found = {
            broker: servers
            for broker, servers in KNOWN_SERVERS.items()
            if all(w in (broker + " " + " ".join(servers)).lower() for w in words)
        }
        return 200, found

    def _list(self, request):
        query, platform = request.query.get("query", ""), request.query.get("platform", "")
        limit = int(request.query.get("limit", "1000"))
        if limit > 1000:
            return _error(400, "ValidationError", "limit must be at most 1000")
        rows = [
            self._public(a)
            for a in self.provisioned()
            if query in (a["login"] + a["server"] + a["name"] + a["_id"]) and platform in ("", a["platform"])
        ]
        return 200, rows[:limit]

    def _create(self, request):
        body = request.json()
        transaction = request.headers.get("transaction-id") or ""
        with self.lock:
            if transaction in self._transactions:
                return 201, {"id": self._transactions[transaction], "state": "UNDEPLOYED"}
            if self.detection_202 > 0:
                self.detection_202 -= 1
                return Reply(
                    202,
                    {"message": "Automatic broker settings detection is in progress, retry in 60 s"},
                    {"Retry-After": "1"},
                )
        platform, server, login = body.get("platform"), body.get("server"), str(body.get("login"))
        if not all(k in body for k in ("name", "login", "password", "server", "platform")):
            return _error(400, "ValidationError", "Validation failed", details=[{"parameter": "login"}])
        if server not in {s for servers in KNOWN_SERVERS.values() for s in servers}:
            suggestions = {b: s for b, s in KNOWN_SERVERS.items() if server[:4].lower() in " ".join(s).lower()}
            with self.lock:
                self.adds_refused += 1
            return _error(
                400,
                "ValidationError",
                "We were unable to retrieve the server settings using provided server name.",
                details={"code": "E_SRV_NOT_FOUND", "serversByBrokers": suggestions},
            )
        if server in self.timezone_unknown:
            return _error(400, "ValidationError", "Broker time zone could not be detected", details="E_SERVER_TIMEZONE")
        if self.brokers.get((platform, server, login)) != body["password"]:
            with self.lock:
                self.adds_refused += 1
            return _error(400, "ValidationError", "Failed to authenticate with the broker", details="E_AUTH")
        account_id = uuid.uuid4().hex
        with self.lock:
            self.accounts[account_id] = {
                "_id": account_id,
                "name": body["name"],
                "login": login,
                "server": server,
                "platform": platform,
                "password": body["password"],
                "type": body.get("type", "cloud-g2"),
                "reliability": body.get("reliability", "high"),
                "tags": body.get("tags", []),
                "region": "new-york",
                "state": "UNDEPLOYED",
                "connectionStatus": "DISCONNECTED",
                "deploys": 0,
                "deployed_at": None,
            }
            self._transactions[transaction] = account_id
        return 201, {"id": account_id, "state": "UNDEPLOYED"}

    def _account(self, account_id) -> dict | None:
        account = self.accounts.get(account_id)
        if account is None or account["state"] == "DELETED":
            return None
        self._advance(account)
        return account

    def _advance(self, account: dict) -> None:
        """A deploying terminal connects once its connect time has passed."""
        if account["state"] == "DEPLOYING":
            needed = self.first_connect_s if account["deploys"] == 1 else self.connect_s
            if time.monotonic() - account["deployed_at"] >= needed:
                account["state"], account["connectionStatus"] = "DEPLOYED", "CONNECTED"
                account["synchronizing_left"] = self.synchronizing_reads

    @staticmethod
    def _public(account: dict) -> dict:
        return {
            k: v for k, v in account.items() if k not in ("password", "deploys", "deployed_at", "synchronizing_left")
        }

    def _get(self, request, account_id):
        with self.lock:
            account = self._account(account_id)
            if account is None:
                return _error(404, "NotFoundError", "Account not found")
            return 200, self._public(account)

    def _update(self, request, account_id):
        with self.lock:
            account = self._account(account_id)
            if account is None:
                return _error(404, "NotFoundError", "Account not found")
            body = request.json()
            account["password"] = body.get("password", account["password"])
            account["name"] = body.get("name", account["name"])
        return 204, b""

    def _delete(self, request, account_id):
        with self.lock:
            account = self._account(account_id)
            if account is None:
                return _error(404, "NotFoundError", "Account not found")
            self._stop(account)
            account["state"] = "DELETED"
        return 204, b""

    def _deploy(self, request, account_id):
        with self.lock:
            account = self._account(account_id)
            if account is None:
                return _error(404, "NotFoundError", "Account not found")
            if account["state"] not in ("DEPLOYING", "DEPLOYED"):
                account["deploys"] += 1
                account["deployed_at"] = time.monotonic()
                # A terminal with the wrong password runs but cannot log in.
                right = self.brokers.get((account["platform"], account["server"], account["login"]))
                account["state"] = "DEPLOYING"
                account["connectionStatus"] = "DISCONNECTED"
                if right != account["password"]:
                    account["state"], account["connectionStatus"] = "DEPLOYED", "DISCONNECTED_FROM_BROKER"
        return 204, b""

    def _undeploy(self, request, account_id):
        with self.lock:
            account = self._account(account_id)
            if account is None:
                return _error(404, "NotFoundError", "Account not found")
            self._stop(account)
        return 204, b""

    def _stop(self, account: dict) -> None:
        if account["deployed_at"] is not None and account["state"] in ("DEPLOYING", "DEPLOYED"):
            self.deployed_s[account["_id"]] += time.monotonic() - account["deployed_at"]
        account["state"], account["connectionStatus"] = "UNDEPLOYED", "DISCONNECTED"

    # --- client API --------------------------------------------------------------------------
    def _connected(self, account_id) -> dict | Reply:
        account = self._account(account_id)
        if account is None or (account["state"], account["connectionStatus"]) != ("DEPLOYED", "CONNECTED"):
            return _error(404, "NotFoundError", "Account not found or not deployed")
        return account

    def _history(self, request, account_id, start, end):
        limit = int(request.query.get("limit", "1000"))
        offset = int(request.query.get("offset", "0"))
        if limit > 1000:
            return _error(400, "ValidationError", "limit must be at most 1000")
        with self.lock:
            account = self._connected(account_id)
            if isinstance(account, Reply):
                return account
            first, last = _parse(start), _parse(end)
            rows = sorted(
                (d for d in self.deals[f"{account['login']}@{account['server']}"] if first <= _parse(d["time"]) < last),
                key=lambda d: (d["time"], d["id"]),
            )
            page = [dict(d) for d in rows[offset : offset + limit]]
            if account.get("synchronizing_left", 0) > 0:
                account["synchronizing_left"] -= 1
                return 200, {"synchronizing": True, "deals": page[: len(page) // 2]}
        return 200, page

    def _specification(self, request, account_id, symbol):
        with self.lock:
            account = self._connected(account_id)
            if isinstance(account, Reply):
                return account
        spec = self.specs.get(symbol)
        if spec is None:
            return _error(404, "NotFoundError", f"Symbol {symbol} not found")
        return 200, spec

    def _positions(self, request, account_id):
        """What the account's deals (cancelled ones left out) leave open, one position per positionId, in lots."""
        with self.lock:
            account = self._connected(account_id)
            if isinstance(account, Reply):
                return account
            open_lots: dict[str, Decimal] = defaultdict(Decimal)
            first: dict[str, dict] = {}
            for deal in self.deals[f"{account['login']}@{account['server']}"]:
                if deal["type"] in ("DEAL_TYPE_BUY", "DEAL_TYPE_SELL"):
                    sign = 1 if deal["type"] == "DEAL_TYPE_BUY" else -1
                    open_lots[deal["positionId"]] += sign * Decimal(str(deal["volume"]))
                    first.setdefault(deal["positionId"], deal)
        return 200, [
            {
                "id": position_id,
                "type": "POSITION_TYPE_BUY" if lots > 0 else "POSITION_TYPE_SELL",
                "symbol": first[position_id]["symbol"],
                "magic": 0,
                "time": first[position_id]["time"],
                "openPrice": first[position_id]["price"],
                # The simulated market has not moved since the position opened.
                "currentPrice": first[position_id]["price"],
                "volume": float(abs(lots)),
                "swap": 0,
                "commission": first[position_id]["commission"],
                "profit": 0,
            }
            for position_id, lots in open_lots.items()
            if lots
        ]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
