"""A loopback Tradovate REST API built from its documentation, with the ways it says "wait".

It answers the calls brokers/providers/tradovate.py makes (docs/brokers/tradovate.md), in
the formats of the provider's recorded payloads: `POST /auth/accesstokenrequest`,
`GET /auth/renewaccesstoken`, the OAuth code exchange `POST /auth/oauthtoken` (codes from
`grant_code(user)`, standing in for the sign-in page), `GET /account/list`, `GET /fill/list` (the user's whole
listing on every call: it takes no dates), `GET /position/list` (what the active fills leave, per account
and contract) and `GET /{order,fillFee,contract,
contractMaturity,product}/items?ids=`. Each user (login name) has its own accounts and
fills; the bearer token says whose data a call sees, and a token past its lifetime gets 401.

Faults, besides the generic ones of tests/fakes/loopback.py (delay_s, delays, fail_every, cut_next, heal):

    penalize(times, p_time, captcha)   HTTP 200 with a penalty ticket instead of data
    lock_out(times, retry_after)       HTTP 429 (or 423) with an empty body (optional Retry-After)
    add_late_fill(account, at)         a fill executed at `at` appears in the listing now
    withhold(fill_id, withheld)        the listing leaves the fill out while the positions count it (a fill
                                       the fills API has not delivered), until withheld is False
    bust(fill_id)                      the fill stays listed with active false, and leaves the positions
    move(user, host, announce)         NinjaTrader's organisation hosts (from 3 October 2026): the user's
                                       calls with a token get 307 to `host` (an OrganisationHost), and
                                       token answers name it in apiHosts unless announce is False
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from tests.fakes.loopback import LoopbackServer, Reply, Request

PASSWORD = "pw"
OAUTH_CLIENT_SECRET = "sim-tradovate-app-secret"
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
WRONG_LOGIN = {"errorText": "Incorrect username or password. Please try again."}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Penalty:
    times: int
    p_time: float
    captcha: bool
    path: str | None


@dataclass
class _Lockout:
    times: int
    retry_after: float | None
    status: int


@dataclass
class _Session:
    user: str
    expires: float  # time.monotonic()


class OrganisationHost(LoopbackServer):
    """An organisation's own API host: the same Tradovate behind it, on its own address with its own record.

    `answers` says what its token answers name as apiHosts (its root URL for demo and live, plus
    a market-data host); a test replaces it to play a hostile or garbled answer.
    """

    def __init__(self, shared: FakeTradovate):
        super().__init__(prefix="/v1")
        self.shared = shared
        root = self.url.removesuffix(self.prefix)
        self.answers: dict = {"demo": root, "live": root, "md": root}

    def handler_for(self, method: str, path: str):
        return self.shared.handler_for(method, path)


class FakeTradovate(LoopbackServer):
    """users: {login name: number of accounts}; every account gets `fills_per_account` fills.

    Every login's password is `password`. Tokens live `token_lifetime_s`; a renewal gives a
    new token and extends the session. Counters: `logins` (successful ones) and `renewals`
    per login name, `count(path)` per path below /v1, `tickets_issued`, `tickets_redeemed`.
    """

    def __init__(
        self,
        users: dict[str, int],
        fills_per_account: int = 5,
        delay_s: float = 0.0,
        *,
        password: str = PASSWORD,
        token_lifetime_s: float = 90 * 60,
    ):
        super().__init__(prefix="/v1", delay_s=delay_s)
        self.password = password
        self.token_lifetime_s = token_lifetime_s
        self.logins: Counter[str] = Counter()
        self.renewals: Counter[str] = Counter()
        self.tickets_issued = 0
        self.tickets_redeemed = 0
        self.accounts: dict[str, list[dict]] = {}
        self.fills: dict[str, list[dict]] = {}
        self.orders: dict[int, dict] = {}
        self.fees: dict[int, dict] = {}
        self._owner: dict[int, str] = {}  # account id -> login name
        self._sessions: dict[str, _Session] = {}  # token -> session
        self._tickets: dict[str, tuple[float, bool]] = {}  # ticket -> (valid from, captcha)
        self._penalties: list[_Penalty] = []
        self._lockouts: list[_Lockout] = []
        self._fill_ids = itertools.count(1)
        self._homes: dict[str, tuple[OrganisationHost, bool]] = {}  # login name -> (its host, announced)
        self._withheld: set[int] = set()  # fill ids the listing leaves out
        # A second apart, the last a minute ago: inside a first sync's window however many there are.
        start = datetime.now(UTC) - timedelta(minutes=1, seconds=sum(users.values()) * fills_per_account)
        executed = (start + timedelta(seconds=s) for s in itertools.count())
        account_ids = itertools.count(70_000)
        for name, count in users.items():
            self.accounts[name], self.fills[name] = [], []
            for account_id in itertools.islice(account_ids, count):
                self._owner[account_id] = name
                self.accounts[name].append(
                    {
                        "id": account_id,
                        "name": f"DEMO{account_id}",
                        "userId": 77,
                        "accountType": "Customer",
                        "active": True,
                        "closed": False,
                        "timestamp": "2026-01-05T10:00:00Z",
                    }
                )
                for at in itertools.islice(executed, fills_per_account):
                    self.add_late_fill(account_id, at)
        self.route("POST", "/auth/accesstokenrequest", self._login)
        self.route("GET", "/auth/renewaccesstoken", self._renew)
        self.route("POST", "/auth/oauthtoken", self._oauth_token)
        self._codes: dict[str, str] = {}  # sign-in code -> login name
        self.route("GET", "/account/list", lambda r: self._data(r, lambda user: self.accounts[user]))
        self.route("GET", "/fill/list", lambda r: self._data(r, self._listed_fills))
        self.route("GET", "/position/list", lambda r: self._data(r, self.positions))
        tables = {
            "order": self.orders,
            "fillFee": self.fees,
            "contract": CONTRACTS,
            "contractMaturity": MATURITIES,
            "product": PRODUCTS,
        }
        for entity, table in tables.items():
            self.route("GET", f"/{entity}/items", self._items(table))

    # --- the trader's data ------------------------------------------------------------------
    def add_late_fill(self, account_id: int, executed_at: datetime) -> int:
        """A fill of `account_id` executed at `executed_at` that the listing shows from now on; its id."""
        with self.lock:
            fill_id = next(self._fill_ids)
            order_id, contract_id = 900_000 + fill_id, 1001 + fill_id % 2
            action = "Buy" if fill_id % 2 else "Sell"
            self.orders[order_id] = {
                "id": order_id,
                "accountId": account_id,
                "contractId": contract_id,
                "action": action,
                "ordStatus": "Filled",
                "admin": False,
            }
            self.fees[fill_id] = {
                "id": fill_id,
                "commission": 0.59,
                "clearingFee": 0.19,
                "exchangeFee": 1.38,
                "nfaFee": 0.02,
                "brokerageFee": None,
                "ipFee": None,
                "orderRoutingFee": None,
            }
            self.fills[self._owner[account_id]].append(
                {
                    "id": fill_id,
                    "orderId": order_id,
                    "contractId": contract_id,
                    "timestamp": _iso(executed_at),
                    "tradeDate": {"year": executed_at.year, "month": executed_at.month, "day": executed_at.day},
                    "action": action,
                    "qty": 1 + fill_id % 3,
                    "price": 5901.25,
                    "active": True,
                    "finallyPaired": 0,
                }
            )
            return fill_id

    def withhold(self, fill_id: int, withheld: bool = True) -> None:
        """The listing leaves this fill out (or, withheld False, shows it again); the positions always count it."""
        with self.lock:
            (self._withheld.add if withheld else self._withheld.discard)(fill_id)

    def bust(self, fill_id: int) -> None:
        with self.lock:
            for fills in self.fills.values():
                for fill in fills:
                    if fill["id"] == fill_id:
                        fill["active"] = False

    def _listed_fills(self, user: str) -> list[dict]:
        return [f for f in self.fills[user] if f["id"] not in self._withheld]

    def positions(self, user: str) -> list[dict]:
        """What the user's active fills leave per account and contract, flat rows included (as Tradovate keeps them).

        Called under the server's lock, by the listing route.
        """
        net: Counter[tuple[int, int]] = Counter()
        for fill in self.fills[user]:
            if fill["active"]:
                account_id = self.orders[fill["orderId"]]["accountId"]
                net[(account_id, fill["contractId"])] += fill["qty"] * (1 if fill["action"] == "Buy" else -1)
        return [
            {"id": n, "accountId": a, "contractId": c, "netPos": q, "netPrice": 5901.25 if q else None}
            for n, ((a, c), q) in enumerate(sorted(net.items()), 1)
        ]

    def account_ids(self, name: str) -> list[int]:
        return [a["id"] for a in self.accounts[name]]

    def expected_ids(self, name: str) -> dict[str, set[str]]:
        """{account external id: the fill ids a complete sync must import} for one user."""
        with self.lock:
            by_account: dict[str, set[str]] = {str(a["id"]): set() for a in self.accounts[name]}
            for f in self.fills[name]:
                by_account[str(self.orders[f["orderId"]]["accountId"])].add(str(f["id"]))
            return by_account

    def move(self, user: str, host: OrganisationHost, *, announce: bool = True) -> None:
        """`user` lives on `host` from now on; token answers name it (apiHosts) only when `announce`."""
        with self.lock:
            self._homes[user] = (host, announce)

    def _answer(self, request: Request) -> Reply:
        # The shared host still signs everyone in (the hosts are unknown before that answer) but
        # sends every call made with a moved user's token to that user's own host.
        with self.lock:
            session = self._sessions.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
            home = self._homes.get(session.user) if session else None
            if home is not None:
                self.requests.append(request)
                return Reply(307, b"", {"Location": f"{home[0].url}{request.path}?{request.raw_query}"})
        return super()._answer(request)

    # --- faults -------------------------------------------------------------------------------
    def penalize(self, times: int = 1, p_time: float = 1.0, *, captcha: bool = False, path: str | None = None) -> None:
        """The next `times` requests (to `path`, or any) without a valid ticket get a penalty ticket.

        A resend carrying the ticket (JSON body field `p-ticket` for POST, query parameter for
        GET) at least `p_time` seconds later is answered; earlier, it gets a new ticket for the
        rest of the wait. A captcha ticket is never accepted: no server can solve a captcha.
        """
        with self.lock:
            self._penalties.append(_Penalty(times, p_time, captcha, path))

    def lock_out(self, times: int = 1, retry_after: float | None = None, status: int = 429) -> None:
        """The next `times` requests get HTTP 429 (or 423, its warning) with an empty body and Retry-After if given."""
        with self.lock:
            self._lockouts.append(_Lockout(times, retry_after, status))

    def _rationed(self, request: Request) -> Reply | None:
        """The penalty or lockout this request meets, if any."""
        ticket = request.json().get("p-ticket") if request.method == "POST" else request.query.get("p-ticket")
        with self.lock:
            lockout = next((lockout for lockout in self._lockouts if lockout.times > 0), None)
            if lockout is not None:
                lockout.times -= 1
                wait = lockout.retry_after
                return Reply(lockout.status, b"", {} if wait is None else {"Retry-After": str(round(wait))})
            if ticket in self._tickets:
                valid_from, captcha = self._tickets.pop(ticket)
                wait = valid_from - time.monotonic()
                if not captcha and wait <= 0:
                    self.tickets_redeemed += 1
                    return None
                return self._ticket(max(wait, 0.1), captcha)
            penalty = next((p for p in self._penalties if p.times > 0 and p.path in (None, request.path)), None)
            if penalty is None:
                return None
            penalty.times -= 1
            return self._ticket(penalty.p_time, penalty.captcha)

    def _ticket(self, p_time: float, captcha: bool) -> Reply:
        ticket = secrets.token_hex(8)
        self._tickets[ticket] = (time.monotonic() + p_time, captcha)
        self.tickets_issued += 1
        body = {"p-ticket": ticket, "p-time": p_time}
        return Reply(200, {**body, "p-captcha": True} if captcha else body)

    # --- the endpoints ------------------------------------------------------------------------
    def _login(self, request: Request):
        limited = self._rationed(request)
        if limited:
            return limited
        body = request.json()
        name = body.get("name")
        if name not in self.accounts or body.get("password") != self.password:
            return 200, WRONG_LOGIN
        with self.lock:
            self.logins[name] += 1
            return 200, self._new_token(_Session(name, 0.0))

    def grant_code(self, user: str) -> str:
        """What Tradovate's sign-in page hands back after `user` allowed access: a one-time code."""
        with self.lock:
            code = secrets.token_hex(8)
            self._codes[code] = user
            return code

    def _oauth_token(self, request: Request):
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        with self.lock:
            user = self._codes.pop(form.get("code", ""), None)
            if user is None or form.get("client_secret") != OAUTH_CLIENT_SECRET:
                return 400, {"error": "invalid_grant"}
            session = self._new_token(_Session(user, 0.0))
        return 200, {
            "access_token": session["accessToken"],
            "token_type": "bearer",
            "expires_in": int(self.token_lifetime_s),
            **self._hosts_of(user),
        }

    def _renew(self, request: Request):
        limited = self._rationed(request)
        if limited:
            return limited
        with self.lock:
            session = self._session(request)
            if session is None:
                return 401, b""
            self.renewals[session.user] += 1
            return 200, self._new_token(session)

    def _new_token(self, session: _Session) -> dict:
        session.expires = time.monotonic() + self.token_lifetime_s
        token = secrets.token_hex(16)
        self._sessions[token] = session
        expires = datetime.now(UTC) + timedelta(seconds=self.token_lifetime_s)
        return {
            "accessToken": token,
            "mdAccessToken": f"md-{token}",
            "userId": 77,
            "expirationTime": _iso(expires),
            "userStatus": "Active",
            "name": session.user,
            "hasLive": False,
            **self._hosts_of(session.user),
        }

    def _hosts_of(self, user: str) -> dict:
        host, announce = self._homes.get(user, (None, False))
        return {"apiHosts": dict(host.answers)} if announce else {}

    def _session(self, request: Request) -> _Session | None:
        session = self._sessions.get(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return session if session is not None and session.expires > time.monotonic() else None

    def _data(self, request: Request, listing):
        limited = self._rationed(request)
        if limited:
            return limited
        with self.lock:
            session = self._session(request)
            return (401, b"") if session is None else (200, list(listing(session.user)))

    def _items(self, table: dict[int, dict]):
        def answer(request: Request):
            ids = [int(i) for i in request.query.get("ids", "").split(",") if i]
            return self._data(request, lambda _user: [table[i] for i in ids if i in table])

        return answer
