"""A loopback IBKR Flex Web Service (v3) built from its documentation: request, poll, report, limits.

It follows docs/brokers/ibkr_flex.md and the report format brokers/providers/ibkr_flex.py
parses. `GET <url>/SendRequest?t=&q=&v=3&fd=&td=` answers a FlexStatementResponse with a
ReferenceCode and a Url to this server's GetStatement; `GET <Url>?t=&q=<reference>&v=3`
answers ErrorCode 1019 (still generating) for the first `polls_before_ready` polls, then the
FlexQueryResponse: one FlexStatement per account, its executions dated within [fd, td] as
`<Trade levelOfDetail="EXECUTION">` rows (stocks and options, with fxRateToBase), plus the
ORDER and CLOSED_LOT rows a real report carries for the same fills, and (unless
`open_positions=False`, a query without that section) the Open Positions at the statement's end,
summed from the executions up to then, as SUMMARY rows beside a LOT row.

Per token, exactly IBKR's limit: a request within 1 s of the last one answered, or beyond
10 answered in 60 s, gets ErrorCode 1018 (answers 1018, 1020, 1015 and refuse_next's do not
count). A request without a User-Agent (or without v=3) gets 1020, an unknown token 1015, an
unknown query 1014, an unknown reference 1017; `refuse_next(code, times)` answers any other
ErrorCode (1009 heavy load, 1012 token expired, ...). The generic faults of tests/fakes/loopback.py
(delay_s, delays, fail_every, cut_next, heal) apply too.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo

from tests.fakes.loopback import LoopbackServer, Request

TOKEN = "flex-token-184467440737095"
QUERY_ID = "987654"
ACCOUNTS = {"U1111111": "USD", "U2222222": "EUR"}  # account id -> base currency
# Trades are in USD; this is what one USD is worth in the account's base currency.
FX_RATE_TO_BASE = {"USD": "1", "EUR": "0.9234"}
# Flex times carry no offset: they are New York times.
NEW_YORK = ZoneInfo("America/New_York")
PER_SECOND, PER_MINUTE = 1, 10
ERRORS = {
    "1009": "The server is under heavy load. Statement could not be generated at this time. Please try again shortly.",
    "1012": "Token has expired.",
    "1014": "Query is invalid.",
    "1015": "Token is invalid.",
    "1017": "Reference code is invalid.",
    "1018": "Too many requests have been made from this token. Please try again shortly.",
    "1019": "Statement generation in progress. Please try again shortly.",
    "1020": "Invalid request or unable to validate request.",
}


def _attrs(tag: str, attrs: dict[str, str]) -> str:
    return f"<{tag} " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items()) + " />"


def _day(text: str) -> date:
    return datetime.strptime(text, "%Y%m%d").date()


@dataclass
class _Statement:
    first: date
    last: date
    polls_left: int


class FakeFlex(LoopbackServer):
    """accounts: {account id: base currency}; each gets `executions_per_account` executions.

    They are on the days before today (New York), one a day, newest first; every other one
    is an option. Counters: `send_requests` [(fd, td) of each SendRequest answered with a
    reference code], `polls` (GetStatement requests), `refused_1018`; `count(path)` as well.
    """

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        *,
        executions_per_account: int = 6,
        polls_before_ready: int = 1,
        token: str = TOKEN,
        query_id: str = QUERY_ID,
        delay_s: float = 0.0,
        open_positions: bool = True,
    ):
        super().__init__(prefix="/AccountManagement/FlexWebService", delay_s=delay_s)
        self.open_positions = open_positions
        self.accounts = dict(ACCOUNTS if accounts is None else accounts)
        self.polls_before_ready = polls_before_ready
        self.token, self.query_id = token, query_id
        self.send_requests: list[tuple[date, date]] = []
        self.refused_1018 = 0
        self.executions: dict[str, list[dict[str, str]]] = {account: [] for account in self.accounts}
        self._refusals: list[tuple[str, int]] = []  # [error code, requests left to refuse]
        self._statements: dict[str, _Statement] = {}  # reference code -> what it asked for
        self._answered: deque[float] = deque()  # time.monotonic() of the token's answered requests
        self._numbers = itertools.count(1)
        self._references = itertools.count(7766554433)
        today = datetime.now(NEW_YORK).replace(hour=10, minute=0, second=0, microsecond=0)
        for account in self.accounts:
            for n in range(executions_per_account):
                self.add_execution(account, today - timedelta(days=n + 1), option=n % 2 == 1)
        self.route("GET", "/SendRequest", self._send_request)
        self.route("GET", "/GetStatement", self._get_statement)

    @property
    def polls(self) -> int:
        return self.count("/GetStatement")

    def add_execution(self, account: str, executed_at: datetime, *, option: bool = False) -> str:
        """One execution of `account` at `executed_at` (any time zone); its ibExecID."""
        local = executed_at.astimezone(NEW_YORK)
        with self.lock:
            n = next(self._numbers)
            sell = n % 2 == 0
            quantity = 2 if option else 100
            price = "4.15" if option else "230.5"
            row = {
                "accountId": account,
                "acctAlias": "",
                "currency": "USD",
                "fxRateToBase": FX_RATE_TO_BASE[self.accounts[account]],
                "assetCategory": "OPT" if option else "STK",
                "symbol": "AAPL  261218C00250000" if option else "AAPL",
                "description": "AAPL 18DEC26 250 C" if option else "APPLE INC",
                "conid": "741852963" if option else "265598",
                "underlyingSymbol": "AAPL",
                "multiplier": "100" if option else "1",
                "strike": "250" if option else "",
                "expiry": "20261218" if option else "",
                "putCall": "C" if option else "",
                "tradeID": str(5000 + n),
                "transactionID": str(6000 + n),
                "ibExecID": f"0000e0d5.6598{n:04d}.01.01",
                "ibOrderID": str(7000 + n),
                "dateTime": f"{local:%Y%m%d;%H%M%S}",
                "tradeDate": f"{local:%Y%m%d}",
                "transactionType": "ExchTrade",
                "exchange": "CBOE" if option else "NASDAQ",
                "buySell": "SELL" if sell else "BUY",
                "quantity": str(-quantity if sell else quantity),
                "tradePrice": price,
                "ibCommission": "-1.05",
                "ibCommissionCurrency": "USD",
                "netCash": "0",
                "openCloseIndicator": "C" if sell else "O",
                "notes": "",
                "orderType": "LMT",
                "levelOfDetail": "EXECUTION",
            }
            self.executions[account].append(row)
            return row["ibExecID"]

    def expected_ids(self, account: str, first: date | None = None, last: date | None = None) -> set[str]:
        """The ibExecIDs of `account` a report for [first, last] holds (all of them by default)."""
        return {row["ibExecID"] for row in self._rows(account, first or date.min, last or date.max)}

    def refuse_next(self, code: str, times: int = 1) -> None:
        """The next `times` requests that IBKR's rules let through get ErrorCode `code` instead."""
        with self.lock:
            self._refusals.append((code, times))

    def forget_references(self) -> None:
        """Every reference code given so far becomes unknown (1017), as when IBKR drops a report."""
        with self.lock:
            self._statements.clear()

    # --- the two calls ------------------------------------------------------------------------
    def _send_request(self, request: Request):
        refusal = self._refusal(request)
        if refusal:
            return refusal
        if request.query.get("q") != self.query_id:
            return self._error("1014")
        try:
            first, last = self._period(request.query)
        except ValueError:
            return self._error("1020")
        with self.lock:
            reference = str(next(self._references))
            self._statements[reference] = _Statement(first, last, self.polls_before_ready)
            self.send_requests.append((first, last))
        return 200, (
            "<FlexStatementResponse timestamp='21 November, 2026 09:30 AM EST'><Status>Success</Status>"
            f"<ReferenceCode>{reference}</ReferenceCode><Url>{self.url}/GetStatement</Url></FlexStatementResponse>"
        )

    def _get_statement(self, request: Request):
        refusal = self._refusal(request)
        if refusal:
            return refusal
        with self.lock:
            statement = self._statements.get(request.query.get("q", ""))
            if statement is None:
                return self._error("1017")
            if statement.polls_left > 0:
                statement.polls_left -= 1
                return self._error("1019")
        return 200, self._report(statement.first, statement.last)

    def _refusal(self, request: Request):
        """1020, 1015 or 1018 when the request breaks one of IBKR's rules, else None."""
        if not request.headers.get("User-Agent") or request.query.get("v") != "3":
            return self._error("1020")
        if request.query.get("t") != self.token:
            return self._error("1015")
        now = time.monotonic()
        with self.lock:
            while self._answered and self._answered[0] <= now - 60:
                self._answered.popleft()
            recent = sum(1 for at in self._answered if at > now - 1)
            if recent >= PER_SECOND or len(self._answered) >= PER_MINUTE:
                self.refused_1018 += 1
                return self._error("1018")
            if self._refusals:
                code, left = self._refusals[0]
                self._refusals[0:1] = [(code, left - 1)] if left > 1 else []
                return self._error(code)
            self._answered.append(now)
        return None

    @staticmethod
    def _period(query: dict[str, str]) -> tuple[date, date]:
        if "fd" in query or "td" in query:
            return _day(query["fd"]), _day(query["td"])
        today = datetime.now(NEW_YORK).date()
        # Without fd/td, p=N days back; without either, the saved query's period (here: a year).
        return today - timedelta(days=int(query.get("p", "365"))), today

    @staticmethod
    def _error(code: str):
        status = "Warn" if code == "1019" else "Fail"
        return 200, (
            "<FlexStatementResponse timestamp='21 November, 2026 09:30 AM EST'>"
            f"<Status>{status}</Status><ErrorCode>{code}</ErrorCode>"
            f"<ErrorMessage>{ERRORS.get(code, 'Please try again shortly.')}</ErrorMessage>"
            "</FlexStatementResponse>"
        )

    def _report(self, first: date, last: date) -> str:
        statements = []
        for account, currency in self.accounts.items():
            rows = []
            for row in sorted(self._rows(account, first, last), key=lambda r: r["dateTime"]):
                rows += _noise(row)
            info = _attrs("AccountInformation", {"accountId": account, "acctAlias": "", "currency": currency})
            statements.append(
                f'<FlexStatement accountId="{account}" fromDate="{first:%Y%m%d}" toDate="{last:%Y%m%d}" '
                f'period="" whenGenerated="{datetime.now(NEW_YORK):%Y%m%d;%H%M%S}">{info}'
                f"<Trades>{''.join(rows)}</Trades>{self._positions(account, last)}</FlexStatement>"
            )
        return (
            f'<FlexQueryResponse queryName="journal" type="AF"><FlexStatements count="{len(statements)}">'
            f"{''.join(statements)}</FlexStatements></FlexQueryResponse>"
        )

    def _positions(self, account: str, last: date) -> str:
        if not self.open_positions:
            return ""
        held: dict[str, tuple[dict[str, str], int]] = {}
        for row in self._rows(account, date.min, last):
            first_row, quantity = held.get(row["symbol"], (row, 0))
            held[row["symbol"]] = (first_row, quantity + int(row["quantity"]))
        rows = []
        for row, quantity in held.values():
            if not quantity:
                continue
            keep = ("accountId", "currency", "fxRateToBase", "assetCategory", "symbol", "description", "conid")
            keep += ("underlyingSymbol", "multiplier", "strike", "expiry", "putCall")
            position = {k: row[k] for k in keep} | {
                "reportDate": f"{last:%Y%m%d}",
                "position": str(quantity),
                "markPrice": row["tradePrice"],
                "openPrice": row["tradePrice"],
                "side": "Long" if quantity > 0 else "Short",
                "levelOfDetail": "SUMMARY",
            }
            rows += [_attrs("OpenPosition", position), _attrs("OpenPosition", position | {"levelOfDetail": "LOT"})]
        return f"<OpenPositions>{''.join(rows)}</OpenPositions>"

    def _rows(self, account: str, first: date, last: date) -> list[dict[str, str]]:
        with self.lock:
            return [row for row in self.executions[account] if first <= _day(row["tradeDate"]) <= last]


def _noise(execution: dict[str, str]) -> list[str]:
    """The execution's row, plus the rows of the same fill at other levels of detail, with other ids."""
    order = {**execution, "levelOfDetail": "ORDER", "ibExecID": "", "transactionID": "", "tradeID": ""}
    rows = [_attrs("Trade", execution), _attrs("Order", order)]
    if execution["openCloseIndicator"] == "C":
        lot = {**execution, "levelOfDetail": "CLOSED_LOT", "ibExecID": "", "transactionID": "9" + execution["tradeID"]}
        rows += [_attrs("Trade", lot), _attrs("Lot", lot)]
    return rows
