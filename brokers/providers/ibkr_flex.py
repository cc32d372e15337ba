"""Interactive Brokers through the Flex Web Service (v3): a Flex Query's XML report, requested then polled."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import ClassVar
from xml.etree.ElementTree import Element, ParseError, tostring
from zoneinfo import ZoneInfo

import structlog
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from django.conf import settings
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from brokers.providers import archive
from brokers.providers.base import BrokerProvider
from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerError,
    UnreadableRow,
)
from brokers.providers.ratelimit import scope_for
from brokers.providers.runcache import RunCache
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
    BrokerPosition,
    BrokerTrade,
    CredentialField,
)

log = structlog.get_logger("brokers.ibkr_flex")

# Flex times carry no offset. Community sources say US/Eastern (UNCONFIRMED by IBKR): if
# that proves wrong, this is the one place to change (see docs/brokers/ibkr_flex.md).
REPORT_TIMEZONE = ZoneInfo("America/New_York")
# A pause before each poll of a report being generated (IBKR_FLEX_POLL_PAUSE_S, 10 s): six
# polls plus the SendRequest fit the per-minute bucket, and polling faster has been answered
# with 1020. Reports can take minutes; after this many polls the run retries later, well
# within the task's time limit.
POLL_MAX_POLLS = 18
# 1018 says no wait; the per-minute window is 60 s, and hammering risks a 1025 lockout.
RATE_LIMIT_WAIT_S = 60.0
# IBKR's longest period per request, both end dates included.
MAX_PERIOD_DAYS = 365
# get_accounts proves the token and query with a report of the last week (a week always holds
# a business day). It ends today like the trades' periods do, so an incremental sync's trades
# (cursor less two days, to today) come from the same report: one SendRequest per run.
ACCOUNTS_CHECK_DAYS = 7
NO_POSITIONS_NOTE = (
    "Your Flex Query has no Open Positions section, so the journal cannot check its positions against "
    "IBKR's. To get that check, edit the Activity Flex Query and add Open Positions (Summary)."
)
API_VERSION = "3"
EMPTY_VALUES = {"", "-", "--", "N/A"}
TOKEN_HELP = "Client Portal → Settings → Flex Web Service"
# Tokens reportedly last up to a year (UNCONFIRMED); a later expiry date is a typo.
MAX_TOKEN_LIFE = timedelta(days=2 * 366)
# The hosts IBKR's SendRequest names for the report (docs/brokers/ibkr_flex.md): the token
# goes to no other, except the configured base URL's own host (a sandbox or simulator).
STATEMENT_HOSTS = frozenset({"ndcdyn.interactivebrokers.com", "gdcdyn.interactivebrokers.com"})

# 1017 and 1019 are handled while polling; should SendRequest ever answer them, a retry is the cure.
_TRANSIENT_CODES = {"1001", "1004", "1005", "1006", "1007", "1008", "1009", "1017", "1019", "1021"}
_USER_ACTION = {
    "1010": "IBKR no longer runs this legacy Flex Query. Create a new Activity or Trade Confirmation "
    "Flex Query in XML format with the Trades section, and save its Query ID on the connection.",
    "1011": "IBKR says the Flex Web Service account is inactive. Enable the Flex Web Service in "
    f"{TOKEN_HELP}, then save a new token on the connection.",
    "1012": f"Your IBKR Flex token has expired. Generate a new token in {TOKEN_HELP} and save it on the connection.",
    "1013": "IBKR refused the request because of the token's IP restriction. Remove the IP restriction "
    f"from the token in {TOKEN_HELP} (or allow this server's address), then save the token again.",
    "1014": "IBKR says the Flex Query is invalid. Check the Query ID on the connection against the query "
    "in Client Portal → Performance & Reports → Flex Queries.",
    "1015": f"IBKR says the Flex token is invalid. Generating a new token invalidates the old one: copy "
    f"the current token from {TOKEN_HELP} and save it on the connection.",
}
_PERMANENT = {
    "1003": "IBKR has no statement for the requested period. Check that the Flex Query covers your "
    "accounts; the next sync asks again.",
    "1016": "IBKR says an account of this Flex Query is invalid. Check the accounts selected in the Flex Query.",
    "1020": "IBKR rejected the request as invalid. This is likely a bug on our side; retrying will not "
    "help — please report it.",
}
_DATE_PATTERNS = (
    (re.compile(r"\d{8}"), "%Y%m%d"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "%Y-%m-%d"),
    (re.compile(r"\d{2}/\d{2}/\d{4}"), "%m/%d/%Y"),
)
_DATE_TIME = re.compile(r"(?P<date>[\d/-]+)(?:\s*[;,T]\s*|\s+)(?P<hour>\d{2}):?(?P<minute>\d{2}):?(?P<second>\d{2})")
_OPTION_CLASSES = {"OPT", "FOP"}
_OPTION_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


@dataclass(frozen=True)
class FlexReport:
    """What one Flex report holds for us: its accounts, each account's executions, and why each
    row of an account that we could not read was left out.

    positions has an entry for each account whose statement carries the Open Positions section
    (an Activity query that includes it; a Trade Confirmation query never does), empty when the
    account is flat; unreadable_positions says why an account's positions cannot be trusted.
    """

    accounts: tuple[BrokerAccountInfo, ...]
    trades: Mapping[str, tuple[BrokerTrade, ...]]
    unreadable: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    positions: Mapping[str, tuple[BrokerPosition, ...]] = field(default_factory=dict)
    unreadable_positions: Mapping[str, str] = field(default_factory=dict)


class _BadRow(UnreadableRow):
    """A Trade or TradeConfirm row we cannot read; the message names the field, never a secret."""


class IbkrFlexProvider(BrokerProvider):
    key = "ibkr_flex"
    display_name = "Interactive Brokers (Flex Web Service)"
    base_urls: ClassVar[Mapping[str, str]] = {
        "": "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService"
    }
    credential_fields = (
        CredentialField("token", "Flex Web Service token", secret=True, help_text=f"Generate it in {TOKEN_HELP}."),
        CredentialField(
            "query_id",
            "Flex Query ID",
            help_text="The id of your Flex Query: an Activity or Trade Confirmation query in XML "
            "format that includes the Trades section.",
        ),
        CredentialField(
            "token_expires_on",
            "Token expires on",
            required=False,
            help_text="The expiry date you chose for the token (YYYY-MM-DD), so that we can warn you before it.",
        ),
    )
    # Activity statements update once a day, after the close: look two days back again.
    sync_overlap = timedelta(days=2)
    max_history = timedelta(days=365)

    def __init__(self, environment: str = ""):
        super().__init__(environment)
        # Every account of a token is synced from the same report, and a token allows only
        # 10 requests a minute: a run fetches each report once (its run cache shares it
        # between the account tasks), and this instance parses it once.
        self._reports: dict[tuple[str, str, date, date], FlexReport] = {}
        # Flex has no login, so the engine's second try after an auth error would send the
        # same token again: answer it from here instead of spending IBKR's budget.
        self._refused: dict[tuple[str, str], BrokerAuthError] = {}

    @classmethod
    def validate_credentials(cls, values: Mapping[str, str], environment: str = "") -> dict[str, str]:
        problems = super().validate_credentials(values, environment)
        expires_on = values.get("token_expires_on")
        if isinstance(expires_on, str) and expires_on.strip() and "token_expires_on" not in problems:
            expiry = _expiry_date(expires_on.strip())
            if expiry is None:
                problems["token_expires_on"] = "Token expires on must be a date written YYYY-MM-DD."
            elif expiry > date.today() + MAX_TOKEN_LIFE:
                problems["token_expires_on"] = (
                    f"Token expires on is too far ahead: IBKR tokens last at most a year, so enter a date "
                    f"before {date.today() + MAX_TOKEN_LIFE:%Y-%m-%d}."
                )
        return problems

    # The token's expiry is the date the trader chose in the Client Portal: warn before it.
    credentials_expire = True

    def authenticate(self, credentials: BrokerCredentials) -> AuthResult:
        token = credentials.get("token").strip()
        query_id = credentials.get("query_id").strip()
        if not token or not query_id:
            raise BrokerAuthError(
                "The connection needs a Flex token and a Flex Query ID. Edit it and fill in both.",
                provider=self.key,
            )
        expires_at = None
        expires_on = credentials.get("token_expires_on").strip()
        if expires_on:
            expiry = _expiry_date(expires_on)
            # date.max has no next day to expire at (saved before validation refused such dates).
            if expiry is None or expiry == date.max:
                raise BrokerAuthError(
                    "The token's expiry date on the connection is not a date written YYYY-MM-DD. "
                    "Edit the connection and correct it.",
                    provider=self.key,
                )
            expires_at = datetime.combine(expiry + timedelta(days=1), datetime.min.time(), UTC)
            if expires_at <= datetime.now(UTC):
                raise self._expired(expiry)
        return AuthResult(token=token, expires_at=expires_at, extra={"query_id": query_id})

    def refresh_token(self, auth: AuthResult) -> AuthResult:
        if auth.expires_at is not None and auth.expires_at <= datetime.now(UTC):
            raise self._expired(auth.expires_at.date() - timedelta(days=1))
        return auth

    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        today = datetime.now(REPORT_TIMEZONE).date()
        report = self._report(auth, today - timedelta(days=ACCOUNTS_CHECK_DAYS), today)
        return list(report.accounts)

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        # A report may cover more than was asked (a wider one served this period): every
        # execution in it within max_history goes to the journal, which drops what it has.
        oldest = until - self.max_history
        for first, last in _periods(since, until):
            report = self._report(auth, first, last)
            for trade in report.trades.get(account.external_id, ()):
                if oldest <= trade.executed_at:
                    yield trade
            for reason in report.unreadable.get(account.external_id, ()):
                self.skip_unreadable(reason, account=account.external_id)

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition] | None:
        """The statement's Open Positions: from the report this run already has, never a request of its own.

        get_accounts asked for the last week's report, ending today; that report (or any wider one
        the run holds) serves here from the instance or the run cache. Its positions hold at the
        end of the statement's day (as_of), the same report's executions up to there. A query
        without the section (a Trade Confirmation query, or an Activity query without it) reports
        no positions: None, and the trader is told how to get the check.
        """
        today = datetime.now(REPORT_TIMEZONE).date()
        report = self._report(auth, today - timedelta(days=ACCOUNTS_CHECK_DAYS), today)
        if account.external_id in report.unreadable_positions:
            raise BrokerAPIError(
                f"{self.display_name} sent open positions we could not read "
                f"({report.unreadable_positions[account.external_id]}), so this sync does not compare them.",
                provider=self.key,
                transient=False,
            )
        if account.external_id not in report.positions:
            if NO_POSITIONS_NOTE not in self.notes:
                self.notes.append(NO_POSITIONS_NOTE)
            return None
        now = datetime.now(UTC)
        return [
            p if p.as_of is None or p.as_of <= now else replace(p, as_of=now)
            for p in report.positions[account.external_id]
        ]

    # --- the two calls -------------------------------------------------------------------
    def _report(self, auth: AuthResult, first: date, last: date) -> FlexReport:
        scope = scope_for(auth.token)
        query_id = str(auth.extra["query_id"])
        refused = self._refused.get((scope, query_id))
        if refused is not None:
            raise refused
        for (s, q, f, la), report in self._reports.items():
            if (s, q) == (scope, query_id) and f <= first and last <= la:
                return report
        try:
            period, xml = self._statement(auth.token, query_id, first, last, scope)
        except BrokerAuthError as exc:
            self._refused[(scope, query_id)] = exc
            raise
        try:
            report = parse_report(ElementTree.fromstring(xml))
        except (ParseError, DefusedXmlException):
            raise self._unreadable() from None
        self._reports[(scope, query_id, *period)] = report
        return report

    def _statement(self, token: str, query_id: str, first: date, last: date, scope: str):
        """((first, last), report XML) for a period covering [first, last]: from the run, or fetched once."""
        cache = self.run_cache
        if cache is None:
            return (first, last), self._fetch(token, query_id, first, last, scope, None)
        prefix = f"report:{scope}:{query_id}:"
        for name in cache.fields():
            if name.startswith(prefix):
                f, la = (datetime.strptime(d, "%Y%m%d").date() for d in name[len(prefix) :].split(":"))
                if f <= first and last <= la:
                    return (f, la), cache.get(name)
        name = f"{prefix}{first:%Y%m%d}:{last:%Y%m%d}"
        claim_s = 2 * (POLL_MAX_POLLS + 2) * _poll_pause_s() + 60
        xml = cache.once(name, lambda: self._fetch(token, query_id, first, last, scope, (cache, name)), max_s=claim_s)
        return (first, last), xml

    def _fetch(self, token, query_id, first, last, scope, resume: tuple[RunCache, str] | None) -> bytes:
        """The report's XML. A run remembers the reference code, so a step resumed after a pause
        polls the report it asked for instead of spending another SendRequest."""
        for _ in range(2):  # 1017: IBKR forgot the reference code; it asks for a new request, once is enough
            reference = resume[0].get(f"ref:{resume[1]}") if resume else None
            if reference:
                code, url = reference.decode().split(" ", 1)
            else:
                code, url = self._send_request(token, query_id, first, last, scope)
                if resume:
                    resume[0].put(f"ref:{resume[1]}", f"{code} {url}")
            root = self._poll(token, code, url, scope)
            if resume:
                resume[0].forget(f"ref:{resume[1]}")
            if root is not None:
                return tostring(root)
        raise BrokerAPIError(
            f"{self.display_name} lost track of the report twice.",
            provider=self.key,
            transient=True,
        )

    def _send_request(self, token: str, query_id: str, first: date, last: date, scope: str) -> tuple[str, str]:
        # Always a period: on v3 a saved "last N days" query can silently shrink to one day.
        params = {"t": token, "q": query_id, "v": API_VERSION, "fd": f"{first:%Y%m%d}", "td": f"{last:%Y%m%d}"}
        root = self._get_xml("SendRequest", params, scope)
        if root.tag != "FlexStatementResponse":
            raise self._unreadable()
        code = _child_text(root, "ErrorCode")
        if code:
            raise self._error_for(code, root, token, scope)
        reference, url = _child_text(root, "ReferenceCode"), _child_text(root, "Url")
        if _child_text(root, "Status") != "Success" or not reference or not url:
            raise self._unreadable()
        self._check_statement_url(url)
        return reference, url

    def _poll(self, token: str, reference: str, url: str, scope: str) -> Element | None:
        """The report, or None when IBKR says the reference code is no longer valid (1017)."""
        for _ in range(POLL_MAX_POLLS):
            time.sleep(_poll_pause_s())
            root = self._get_xml(url, {"t": token, "q": reference, "v": API_VERSION}, scope)
            if root.tag == "FlexQueryResponse":
                return root
            if root.tag != "FlexStatementResponse":
                raise self._unreadable()
            code = _child_text(root, "ErrorCode")
            if code == "1017":
                return None
            if code != "1019":
                raise self._error_for(code, root, token, scope)
        raise BrokerAPIError(
            f"{self.display_name} was still generating the report after {POLL_MAX_POLLS} polls "
            f"({round(POLL_MAX_POLLS * _poll_pause_s())} s).",
            provider=self.key,
            transient=True,
        )

    def _get_xml(self, path_or_url: str, params: dict[str, str], scope: str) -> Element:
        # The token travels in the query string: BrokerHTTP logs only the path.
        response = self.http.request("GET", path_or_url, scope=scope, params=params)
        try:
            return ElementTree.fromstring(response.content)
        except (ParseError, DefusedXmlException):
            raise self._unreadable() from None

    def _check_statement_url(self, url: str) -> None:
        """Refuse a report address the token must not go to.

        Read with urllib3's parser, the one requests connects with: Python's urlparse reads
        "https://evil.example\\@ibkr-host/" as IBKR's host while urllib3 connects to evil.example.
        """
        if not statement_url_allowed(url, self.base_url()):
            raise BrokerAPIError(
                f"{self.display_name} pointed us to an unexpected address for the report, so we did "
                "not send the token there. Please report it.",
                provider=self.key,
                transient=False,
            )

    # --- errors --------------------------------------------------------------------------
    def _error_for(self, code: str, root: Element, token: str, scope: str) -> BrokerError:
        ibkr_message = _child_text(root, "ErrorMessage").replace(token, "***")
        log.warning("ibkr_flex_error", code=code, ibkr_message=ibkr_message)
        if code == "1018":
            reason = (
                f"{self.display_name} says this token made too many requests (IBKR error 1018). Other "
                "software using the same token shares its limit of 10 requests a minute."
            )
            return self.blocked(reason, RATE_LIMIT_WAIT_S, scope=scope)
        if code in _USER_ACTION:
            return BrokerAuthError(f"{_USER_ACTION[code]} (IBKR error {code})", provider=self.key)
        if code in _TRANSIENT_CODES:
            return BrokerAPIError(
                f"{self.display_name} could not produce the report right now (IBKR error {code}).",
                provider=self.key,
                transient=True,
            )
        if code in _PERMANENT:
            return BrokerAPIError(f"{_PERMANENT[code]} (IBKR error {code})", provider=self.key, transient=False)
        return BrokerAPIError(
            f"{self.display_name} answered with an error we do not know (IBKR error {code}: {ibkr_message}). "
            "Please report it.",
            provider=self.key,
            transient=False,
        )

    def _unreadable(self) -> BrokerAPIError:
        return self.unreadable()

    def _expired(self, expiry: date) -> BrokerAuthError:
        return BrokerAuthError(
            f"Your IBKR Flex token expired on {expiry:%Y-%m-%d}. Generate a new token in {TOKEN_HELP} "
            "and save it, with its new expiry date, on the connection.",
            provider=self.key,
        )


def statement_url_allowed(url: str, base_url: str) -> bool:
    """https on an IBKR report host (or the base URL's own scheme and host), no userinfo, no backslash."""
    if "\\" in url or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return False
    try:
        parsed, base = parse_url(url), parse_url(base_url)
    except LocationParseError:
        return False
    if parsed.auth is not None or not parsed.host:
        return False
    host = parsed.host.lower()
    if parsed.scheme == "https" and host in STATEMENT_HOSTS and parsed.port in (None, 443):
        return True
    return (parsed.scheme, host, parsed.port) == (base.scheme, (base.host or "").lower(), base.port)


def _poll_pause_s() -> float:
    # A reparse replays the polls from the archive: no report is being generated to wait for.
    return 0.0 if archive.replaying_now() else settings.IBKR_FLEX_POLL_PAUSE_S


# --- periods -------------------------------------------------------------------------------
def _periods(since: datetime, until: datetime) -> list[tuple[date, date]]:
    """[since, until] as IBKR report dates, cut into requests of at most MAX_PERIOD_DAYS days."""
    first = since.astimezone(REPORT_TIMEZONE).date()
    last = min(until.astimezone(REPORT_TIMEZONE).date(), datetime.now(REPORT_TIMEZONE).date())
    periods = []
    while first <= last:
        end = min(first + timedelta(days=MAX_PERIOD_DAYS - 1), last)
        periods.append((first, end))
        first = end + timedelta(days=1)
    return periods


# --- the report parser ---------------------------------------------------------------------
def parse_report(root: Element) -> FlexReport:
    """Accounts and executions of a FlexQueryResponse, from an Activity query's `Trades/Trade` rows
    or a Trade Confirmation query's `TradeConfirms/TradeConfirm` rows; a row we cannot read is
    left out with its reason, for the run to count."""
    accounts: dict[str, BrokerAccountInfo] = {}
    trades: dict[str, list[BrokerTrade]] = {}
    unreadable: dict[str, list[str]] = {}
    positions: dict[str, list[BrokerPosition]] = {}
    unreadable_positions: dict[str, str] = {}
    for statement in root.iter("FlexStatement"):
        statement_account = _value(statement.attrib, "accountId")
        if statement_account and statement_account not in accounts:
            accounts[statement_account] = _account_info(statement, statement_account)
        section = statement.find("OpenPositions")
        if section is not None and statement_account:
            positions.setdefault(statement_account, [])
            for row in section.iterfind("OpenPosition"):
                # A query may list each position's lots (LOT) beside its total (SUMMARY): the total only.
                if _value(row.attrib, "levelOfDetail").upper() not in ("", "SUMMARY"):
                    continue
                account_id = _value(row.attrib, "accountId") or statement_account
                try:
                    position = _position(row.attrib, _value(statement.attrib, "toDate"))
                except _BadRow as exc:
                    unreadable_positions.setdefault(account_id, str(exc))
                    continue
                if position is not None:
                    positions.setdefault(account_id, []).append(position)
        for row in [*statement.iterfind("Trades/Trade"), *statement.iterfind("TradeConfirms/TradeConfirm")]:
            # The same fill also appears as ORDER and CLOSED_LOT rows with other ids.
            if _value(row.attrib, "levelOfDetail").upper() not in ("", "EXECUTION"):
                continue
            account_id = _value(row.attrib, "accountId") or statement_account
            try:
                trade = _trade(row.attrib, account_id)
            except _BadRow as exc:
                reason = f"{row.tag} {_row_id(row.attrib) or 'without id'}: {exc}"
                unreadable.setdefault(account_id, []).append(reason)
                continue
            if account_id not in accounts:
                accounts[account_id] = BrokerAccountInfo(external_id=account_id, name=account_id)
            trades.setdefault(account_id, []).append(trade)
    return FlexReport(
        accounts=tuple(accounts.values()),
        trades={account_id: tuple(rows) for account_id, rows in trades.items()},
        unreadable={account_id: tuple(reasons) for account_id, reasons in unreadable.items()},
        positions={account_id: tuple(rows) for account_id, rows in positions.items()},
        unreadable_positions=unreadable_positions,
    )


def execution_of(attrs: Mapping[str, str], statement_account: str) -> BrokerTrade | None:
    """One Trade or TradeConfirm row of a report as parse_report reads it; None for a row that is no
    execution (ORDER and CLOSED_LOT rows repeat fills under other ids). A row we cannot read raises
    UnreadableRow naming the field. For a file saved from the portal, read element by element."""
    if _value(attrs, "levelOfDetail").upper() not in ("", "EXECUTION"):
        return None
    return _trade(attrs, _value(attrs, "accountId") or statement_account)


def _account_info(statement: Element, account_id: str) -> BrokerAccountInfo:
    # AccountInformation is an optional section of the query; without it, the id names the account.
    info = statement.find("AccountInformation")
    attrs = info.attrib if info is not None else {}
    currency = _value(attrs, "currency").upper()
    return BrokerAccountInfo(
        external_id=account_id,
        name=_value(attrs, "acctAlias") or account_id,
        currency=currency if _is_currency(currency) else "USD",
    )


def _trade(attrs: Mapping[str, str], account_id: str) -> BrokerTrade:
    trade_id = _row_id(attrs)
    if not trade_id:
        raise _BadRow("no ibExecID, execID, transactionID or tradeID")
    if not account_id:
        raise _BadRow("no accountId")
    symbol = _value(attrs, "symbol")
    if not symbol:
        raise _BadRow("no symbol")
    currency = _value(attrs, "currency").upper()
    if not _is_currency(currency):
        raise _BadRow(f"currency {currency!r} is not a currency code")
    quantity = _required_decimal(attrs, "quantity")
    if quantity == 0:
        raise _BadRow("quantity is zero")
    commission = _decimal(attrs, _first_present(attrs, "ibCommission", "commission"))
    multiplier = _decimal(attrs, "multiplier")
    asset_class = _value(attrs, "assetCategory").upper() or "STK"
    is_option = asset_class in _OPTION_CLASSES
    expiry = _value(attrs, "expiry")
    try:
        return BrokerTrade(
            broker_trade_id=trade_id,
            account_external_id=account_id,
            symbol=symbol,
            # quantity is signed (negative for sells), including on "BUY (Ca.)" cancellations.
            side=SELL if quantity < 0 else BUY,
            quantity=abs(quantity),
            price=_required_decimal(attrs, _first_present(attrs, "tradePrice", "price")),
            executed_at=_executed_at(_date_time(attrs)),
            # Negative ibCommission is a cost; a positive one is a rebate, kept only in raw.
            fees=-commission if commission is not None and commission < 0 else Decimal(0),
            currency=currency,
            asset_class=asset_class,
            multiplier=_positive(multiplier) or Decimal(1),
            order_id=_value(attrs, _first_present(attrs, "ibOrderID", "orderID")),
            expiry=_date(expiry) if expiry else None,
            strike=_decimal(attrs, "strike") if is_option else None,
            option_right=_OPTION_RIGHTS.get(_value(attrs, "putCall").upper(), "") if is_option else "",
            fx_rate_to_base=_positive(_decimal(attrs, "fxRateToBase")),
            raw=dict(attrs),
        )
    except (TypeError, ValueError) as exc:
        raise _BadRow(str(exc)) from None


def _position(attrs: Mapping[str, str], statement_end: str) -> BrokerPosition | None:
    """One OpenPosition row (None when flat), named as the account's Trade rows name the instrument."""
    symbol = _value(attrs, "symbol")
    if not symbol:
        raise _BadRow("a position without symbol")
    quantity = _required_decimal(attrs, "position")
    # position is signed; side says it too, so either alone is enough.
    if _value(attrs, "side").upper() == "SHORT" and quantity > 0:
        quantity = -quantity
    if quantity == 0:
        return None
    is_option = _value(attrs, "assetCategory").upper() in _OPTION_CLASSES
    expiry = _value(attrs, "expiry")
    day = _value(attrs, "reportDate") or statement_end
    # The figure holds at the end of its statement's day, New York time.
    as_of = (
        (
            datetime.combine(_date(day) + timedelta(days=1), datetime.min.time(), REPORT_TIMEZONE)
            - timedelta(microseconds=1)
        ).astimezone(UTC)
        if day
        else None
    )
    return BrokerPosition(
        symbol=symbol,
        quantity=quantity,
        average_price=_decimal(attrs, _first_present(attrs, "openPrice", "costBasisPrice")),
        mark_price=_decimal(attrs, "markPrice"),
        expiry=_date(expiry) if expiry else None,
        strike=_decimal(attrs, "strike") if is_option else None,
        option_right=_OPTION_RIGHTS.get(_value(attrs, "putCall").upper(), "") if is_option else "",
        as_of=as_of,
    )


def _row_id(attrs: Mapping[str, str]) -> str:
    # ibExecID (execID in a Trade Confirmation) names one execution, the same in both reports, so
    # a trader who changes query type imports nothing twice; the others are fallbacks.
    names = ("ibExecID", "execID", "transactionID", "tradeID")
    return next((_value(attrs, n) for n in names if _value(attrs, n)), "")


def _first_present(attrs: Mapping[str, str], *names: str) -> str:
    """The first of `names` the row carries: an Activity report's Trade and a Trade Confirmation's
    TradeConfirm name the same fact differently (tradePrice / price, ibCommission / commission)."""
    return next((n for n in names if _value(attrs, n)), names[0])


def _date_time(attrs: Mapping[str, str]) -> str:
    """The execution's date and time: `dateTime`, or `tradeDate` with `tradeTime` where the query
    gives them apart (a query without the combined field)."""
    combined = _value(attrs, "dateTime")
    if combined:
        return combined
    day, moment = _value(attrs, "tradeDate"), _value(attrs, "tradeTime")
    if not day or not moment:
        raise _BadRow("no dateTime, nor tradeDate with tradeTime")
    return f"{day};{moment}"


def _value(attrs: Mapping[str, str], name: str) -> str:
    value = (attrs.get(name) or "").strip()
    return "" if value in EMPTY_VALUES else value


def _decimal(attrs: Mapping[str, str], name: str) -> Decimal | None:
    text = _value(attrs, name).replace(",", "")
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise _BadRow(f"{name} {text!r} is not a number") from None
    if not number.is_finite():
        raise _BadRow(f"{name} {text!r} is not a number")
    return number


def _required_decimal(attrs: Mapping[str, str], name: str) -> Decimal:
    number = _decimal(attrs, name)
    if number is None:
        raise _BadRow(f"no {name}")
    return number


def _positive(number: Decimal | None) -> Decimal | None:
    return number if number is not None and number > 0 else None


def _is_currency(code: str) -> bool:
    return len(code) == 3 and code.isalpha()


def _date(text: str) -> date:
    for pattern, fmt in _DATE_PATTERNS:
        if pattern.fullmatch(text):
            try:
                return datetime.strptime(text, fmt).date()
            except ValueError:
                raise _BadRow(f"date {text!r} does not exist") from None
    raise _BadRow(f"date {text!r} is in no known format")


def _executed_at(text: str) -> datetime:
    """A Flex date-time in any of the formats the trader can choose, from New York time to UTC."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise _BadRow(f"dateTime {text!r} is in no known format")
    day = _date(match["date"])
    try:
        local = datetime(
            day.year,
            day.month,
            day.day,
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            tzinfo=REPORT_TIMEZONE,
        )
    except ValueError:
        raise _BadRow(f"dateTime {text!r} does not exist") from None
    return local.astimezone(UTC)


def _expiry_date(text: str) -> date | None:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _child_text(root: Element, tag: str) -> str:
    return (root.findtext(tag) or "").strip()


PROVIDERS = (IbkrFlexProvider,)
