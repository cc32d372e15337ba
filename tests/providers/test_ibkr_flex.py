"""IBKR Flex Web Service on the shared contract, plus its quirks: polling, error codes and the report format."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import quoteattr

import pytest
import responses
from defusedxml import ElementTree
from structlog.testing import capture_logs

from brokers.providers import ibkr_flex, ratelimit
from brokers.providers.errors import (
    BrokerAPIError,
    BrokerAuthError,
    BrokerRateLimitError,
)
from brokers.providers.ibkr_flex import IbkrFlexProvider, parse_report
from brokers.providers.registry import get_broker_provider
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerCredentials,
)
from journal.reconciling import position_differences
from tests.factories import account_with
from tests.providers.contract import SECRET_MARK, ProviderContract

TOKEN = f"{SECRET_MARK}-184467440737095"
QUERY_ID = "987654"
REFERENCE = "7766554433"
STATEMENT_URL = "https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement"


@pytest.fixture(autouse=True)
def fast_flex(monkeypatch, settings):
    # No real waits between polls, and room for the limiter's per-second bucket (one call in
    # 2 s) to sleep between the few calls of one test instead of pausing (test settings allow 0.5 s).
    settings.IBKR_FLEX_POLL_PAUSE_S = 0
    monkeypatch.setattr(ratelimit.get_limiter(), "max_sleep_s", 2.5)


def send_url() -> str:
    return get_broker_provider("ibkr_flex").base_url() + "/SendRequest"


def auth() -> AuthResult:
    return AuthResult(token=TOKEN, extra={"query_id": QUERY_ID})


def send_ok(reference: str = REFERENCE) -> str:
    return (
        "<FlexStatementResponse timestamp='21 November, 2026 09:30 AM EST'>"
        f"<Status>Success</Status><ReferenceCode>{reference}</ReferenceCode><Url>{STATEMENT_URL}</Url>"
        "</FlexStatementResponse>"
    )


def flex_error(code: str, message: str = "Something happened.") -> str:
    status = "Warn" if code == "1019" else "Fail"
    return (
        "<FlexStatementResponse timestamp='21 November, 2026 09:30 AM EST'>"
        f"<Status>{status}</Status><ErrorCode>{code}</ErrorCode><ErrorMessage>{message}</ErrorMessage>"
        "</FlexStatementResponse>"
    )


def row(tag: str = "Trade", **overrides: str) -> str:
    attrs = {
        "accountId": "U1111111",
        "acctAlias": "",
        "currency": "USD",
        "fxRateToBase": "1",
        "assetCategory": "STK",
        "symbol": "AAPL",
        "description": "APPLE INC",
        "conid": "265598",
        "underlyingSymbol": "AAPL",
        "multiplier": "1",
        "strike": "",
        "expiry": "",
        "putCall": "",
        "tradeID": "5001",
        "transactionID": "6001",
        "ibExecID": "0000e0d5.6598a1b2.01.01",
        "ibOrderID": "7001",
        "dateTime": "20261105;093001",
        "tradeDate": "20261105",
        "transactionType": "ExchTrade",
        "exchange": "NASDAQ",
        "buySell": "BUY",
        "quantity": "100",
        "tradePrice": "230.5",
        "ibCommission": "-1",
        "ibCommissionCurrency": "USD",
        "netCash": "-23051",
        "openCloseIndicator": "O",
        "notes": "",
        "orderType": "LMT",
        "levelOfDetail": "EXECUTION",
    }
    attrs.update(overrides)
    return f"<{tag} " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items() if v is not None) + " />"


def statement(account: str, *rows: str, alias: str = "", currency: str = "") -> str:
    info = f'<AccountInformation accountId="{account}" acctAlias="{alias}" currency="{currency}" />' if currency else ""
    return (
        f'<FlexStatement accountId="{account}" fromDate="20261101" toDate="20261120" period="" '
        f'whenGenerated="20261121;023546">{info}<Trades>{"".join(rows)}</Trades></FlexStatement>'
    )


def report(*statements: str) -> str:
    return (
        f'<FlexQueryResponse queryName="journal" type="AF"><FlexStatements count="{len(statements)}">'
        f"{''.join(statements)}</FlexStatements></FlexQueryResponse>"
    )


def parse(*statements: str):
    return parse_report(ElementTree.fromstring(report(*statements)))


def query(call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(call.request.url).query).items()}


def stub_flow(rsps, *statement_answers: str) -> None:
    rsps.add(responses.GET, send_url(), body=send_ok())
    for body in statement_answers:
        rsps.add(responses.GET, STATEMENT_URL, body=body)


class TestIbkrFlexContract(ProviderContract):
    provider_key = "ibkr_flex"
    token_expires_on = ""

    def stub_credentials(self):
        values = {"token": TOKEN, "query_id": QUERY_ID}
        if self.token_expires_on:
            values["token_expires_on"] = self.token_expires_on
        return BrokerCredentials(values=values)

    def stub_login_refused(self, rsps):
        # Flex has no login call: the refusal authenticate() can see is a token past its expiry.
        self.token_expires_on = "2026-01-31"

    def auth(self):
        return auth()

    def stub_accounts(self, rsps):
        stub_flow(rsps, report(statement("U1111111", currency="EUR", alias="Main"), statement("U2222222")))
        return ["U1111111", "U2222222"]

    def account(self):
        return BrokerAccountInfo(external_id="U1111111", name="U1111111")

    def stub_trades(self, rsps, account):
        rows = [row(ibExecID=f"0000e0d5.6598a1b2.01.0{i}", dateTime=f"2026110{i + 3};10000{i}") for i in range(3)]
        other = row(accountId="U2222222", ibExecID="0000e0d5.6598a1b2.02.01")
        order = row("Order", levelOfDetail="ORDER", ibExecID="", transactionID="", tradeID="", ibOrderID="7001")
        stub_flow(rsps, flex_error("1019"), report(statement("U1111111", *rows, order), statement("U2222222", other)))
        return 3

    def stub_server_error(self, rsps):
        rsps.add(responses.GET, send_url(), status=500)

    def stub_rate_limited(self, rsps, retry_after):
        body = flex_error("1018", "Too many requests have been made from this token.")
        rsps.add(responses.GET, send_url(), body=body)

    def limiter_scope(self):
        return ratelimit.scope_for(TOKEN)


# --- the session ---------------------------------------------------------------------------
def test_authenticate_makes_no_call_and_carries_the_expiry_and_query():
    with responses.RequestsMock() as mock:
        session = IbkrFlexProvider().authenticate(
            BrokerCredentials(values={"token": f" {TOKEN} ", "query_id": QUERY_ID, "token_expires_on": "2099-03-31"})
        )
        assert not mock.calls
    assert session.token == TOKEN and session.extra["query_id"] == QUERY_ID
    assert session.expires_at == datetime(2099, 4, 1, tzinfo=UTC)


def test_expiry_date_must_be_written_yyyy_mm_dd():
    values = {"token": TOKEN, "query_id": QUERY_ID}
    in_a_year = f"{date.today() + timedelta(days=365):%Y-%m-%d}"
    assert IbkrFlexProvider.validate_credentials({**values, "token_expires_on": in_a_year}) == {}
    for bad in ("31/03/2099", "20990331", "2099-02-30", "２０２７-０１-０１"):
        problems = IbkrFlexProvider.validate_credentials({**values, "token_expires_on": bad})
        assert set(problems) == {"token_expires_on"}


@pytest.mark.parametrize("far", ["9999-12-31", "2999-01-01"])
def test_a_far_future_expiry_date_is_refused_naming_the_field(far):
    # 9999-12-31 once crashed the login (its next day does not exist); no token lives that long.
    problems = IbkrFlexProvider.validate_credentials({"token": TOKEN, "query_id": QUERY_ID, "token_expires_on": far})
    assert set(problems) == {"token_expires_on"} and "too far ahead" in problems["token_expires_on"]


def test_refresh_refuses_a_token_past_its_expiry():
    with pytest.raises(BrokerAuthError) as info:
        IbkrFlexProvider().refresh_token(AuthResult(token=TOKEN, expires_at=datetime(2026, 2, 1, tzinfo=UTC)))
    assert "2026-01-31" in str(info.value) and SECRET_MARK not in str(info.value)


# --- the two calls -------------------------------------------------------------------------
@responses.activate
def test_polls_while_the_report_is_generated_then_reads_it():
    stub_flow(responses, flex_error("1019"), flex_error("1019"), report(statement("U1111111", row())))
    with capture_logs() as logs:
        trades = list(
            IbkrFlexProvider().get_trades(
                auth(),
                BrokerAccountInfo("U1111111", "U1111111"),
                datetime(2026, 11, 1, tzinfo=UTC),
                datetime(2026, 11, 20, tzinfo=UTC),
            )
        )
    assert len(trades) == 1
    assert [e["path"] for e in logs if e["event"] == "broker_http"][:2] == [
        urlparse(send_url()).path,
        urlparse(STATEMENT_URL).path,
    ]
    assert SECRET_MARK not in str(logs)
    calls = responses.calls
    assert len(calls) == 4
    assert query(calls[0]) == {"t": TOKEN, "q": QUERY_ID, "v": "3", "fd": "20261031", "td": "20261119"}
    assert all(query(c) == {"t": TOKEN, "q": REFERENCE, "v": "3"} for c in calls[1:])
    assert all(c.request.headers["User-Agent"] for c in calls)


@responses.activate
def test_gives_up_polling_after_the_maximum_with_a_transient_error(monkeypatch):
    monkeypatch.setattr(ibkr_flex, "POLL_MAX_POLLS", 1)
    stub_flow(responses, flex_error("1019"))
    with pytest.raises(BrokerAPIError) as info:
        IbkrFlexProvider().get_accounts(auth())
    assert info.value.transient


@responses.activate
def test_too_many_requests_while_polling_blocks_the_token():
    stub_flow(responses, flex_error("1018"))
    with pytest.raises(BrokerRateLimitError) as info:
        IbkrFlexProvider().get_accounts(auth())
    assert info.value.retry_after >= 60
    assert ratelimit.get_limiter().try_acquire("ibkr_flex", scope=ratelimit.scope_for(TOKEN)) > 30


@pytest.mark.parametrize("code", ["1012", "1015", "1013", "1014", "1010", "1011"])
@responses.activate
def test_token_or_query_problems_ask_the_trader_to_act_without_showing_the_token(code):
    responses.add(responses.GET, send_url(), body=flex_error(code, f"Token {TOKEN} is not valid."))
    provider = IbkrFlexProvider()
    with capture_logs() as logs, pytest.raises(BrokerAuthError) as info:
        provider.get_accounts(auth())
    assert SECRET_MARK not in str(logs)
    assert code in str(info.value) and TOKEN not in str(info.value) and SECRET_MARK not in repr(info.value.args)
    # The engine's second try with the same token is answered without asking IBKR again.
    with pytest.raises(BrokerAuthError):
        provider.get_accounts(auth())
    assert len(responses.calls) == 1


@pytest.mark.parametrize("code", ["1003", "1016", "1020"])
@responses.activate
def test_permanent_errors_are_not_retried(code):
    responses.add(responses.GET, send_url(), body=flex_error(code))
    with pytest.raises(BrokerAPIError) as info:
        IbkrFlexProvider().get_accounts(auth())
    assert not info.value.transient and not isinstance(info.value, BrokerAuthError)


@pytest.mark.parametrize("code", ["1001", "1009", "1021"])
@responses.activate
def test_not_ready_errors_are_transient(code):
    stub_flow(responses, flex_error(code))
    with pytest.raises(BrokerAPIError) as info:
        IbkrFlexProvider().get_accounts(auth())
    assert info.value.transient


@responses.activate
def test_unknown_code_shows_ibkr_message_without_the_token():
    responses.add(responses.GET, send_url(), body=flex_error("1099", f"Odd token {TOKEN}."))
    with pytest.raises(BrokerAPIError) as info:
        IbkrFlexProvider().get_accounts(auth())
    assert "1099" in str(info.value) and SECRET_MARK not in str(info.value)


@responses.activate
def test_invalid_reference_code_starts_again_once():
    responses.add(responses.GET, send_url(), body=send_ok())
    responses.add(responses.GET, STATEMENT_URL, body=flex_error("1017"))
    responses.add(responses.GET, STATEMENT_URL, body=report(statement("U1111111")))
    assert [a.external_id for a in IbkrFlexProvider().get_accounts(auth())] == ["U1111111"]
    assert [urlparse(c.request.url).path.rsplit("/", 1)[1] for c in responses.calls] == [
        "SendRequest",
        "GetStatement",
        "SendRequest",
        "GetStatement",
    ]


@responses.activate
def test_report_address_outside_ibkr_never_gets_the_token():
    responses.add(responses.GET, send_url(), body=send_ok().replace("gdcdyn.interactivebrokers.com", "evil.example"))
    with pytest.raises(BrokerAPIError):
        IbkrFlexProvider().get_accounts(auth())
    assert len(responses.calls) == 1


@responses.activate
def test_several_accounts_come_from_one_report_fetched_once():
    stub_flow(
        responses,
        report(
            statement("U1111111", row(), row(ibExecID="0000e0d5.6598a1b2.01.02")),
            statement("U2222222", row(accountId="U2222222", ibExecID="0000e0d5.6598a1b2.02.01")),
        ),
    )
    provider = IbkrFlexProvider()
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    first = list(provider.get_trades(auth(), BrokerAccountInfo("U1111111", "a"), since, until))
    second = list(provider.get_trades(auth(), BrokerAccountInfo("U2222222", "b"), since, until))
    assert [t.account_external_id for t in first] == ["U1111111", "U1111111"]
    assert [t.broker_trade_id for t in second] == ["0000e0d5.6598a1b2.02.01"]
    assert len(responses.calls) == 2


@responses.activate
def test_periods_longer_than_365_days_are_split():
    for _ in range(2):
        stub_flow(responses, report(statement("U1111111")))
    list(
        IbkrFlexProvider().get_trades(
            auth(),
            BrokerAccountInfo("U1111111", "a"),
            datetime(2024, 1, 1, 12, tzinfo=UTC),
            datetime(2025, 6, 30, 12, tzinfo=UTC),
        )
    )
    sends = [query(c) for c in responses.calls if c.request.url.startswith(send_url())]
    assert [(q["fd"], q["td"]) for q in sends] == [("20240101", "20241230"), ("20241231", "20250630")]


# --- the report ----------------------------------------------------------------------------
def test_only_execution_rows_are_imported():
    parsed = parse(
        statement(
            "U1111111",
            row(),
            row(levelOfDetail=None, ibExecID="0000e0d5.6598a1b2.01.02"),
            row("Order", levelOfDetail="ORDER", ibExecID="", transactionID="", tradeID=""),
            row(levelOfDetail="CLOSED_LOT", ibExecID="", transactionID="9001"),
            row("Lot", levelOfDetail="CLOSED_LOT", ibExecID="", transactionID="9002"),
        )
    )
    assert [t.broker_trade_id for t in parsed.trades["U1111111"]] == [
        "0000e0d5.6598a1b2.01.01",
        "0000e0d5.6598a1b2.01.02",
    ]


def test_signed_quantity_gives_the_side_and_commission_the_fees():
    sell, cancelled_buy, rebate = parse(
        statement(
            "U1111111",
            row(buySell="SELL", quantity="-1,250", tradePrice="1,234.50", ibCommission="-6.25"),
            row(buySell="BUY (Ca.)", quantity="-100", ibExecID="x2"),
            row(quantity="10", ibCommission="0.35", ibExecID="x3"),
        )
    ).trades["U1111111"]
    assert (sell.side, sell.quantity, sell.price) == (SELL, Decimal(1250), Decimal("1234.50"))
    assert sell.fees == Decimal("6.25")
    assert (cancelled_buy.side, cancelled_buy.quantity, cancelled_buy.fees) == (SELL, Decimal(100), Decimal(1))
    assert rebate.side == BUY
    assert rebate.fees == Decimal(0) and rebate.raw["ibCommission"] == "0.35"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20241101;120000", datetime(2024, 11, 1, 16, 0, tzinfo=UTC)),  # EDT, before the change
        ("20241104;120000", datetime(2024, 11, 4, 17, 0, tzinfo=UTC)),  # EST, after it
        ("2024-11-04, 12:00:00", datetime(2024, 11, 4, 17, 0, tzinfo=UTC)),
        ("11/04/2024 120000", datetime(2024, 11, 4, 17, 0, tzinfo=UTC)),
        ("2024-03-11T09:30:01", datetime(2024, 3, 11, 13, 30, 1, tzinfo=UTC)),
    ],
)
def test_new_york_times_become_utc_across_dst(text, expected):
    (trade,) = parse(statement("U1111111", row(dateTime=text))).trades["U1111111"]
    assert trade.executed_at == expected and trade.raw["dateTime"] == text


def test_unknown_attributes_and_values_are_tolerated_and_options_read():
    (future_thing, option) = parse(
        statement(
            "U1111111",
            row(assetCategory="NEWCLASS", transactionType="SomethingNew", brandNewField="42", fxRateToBase="N/A"),
            row(
                assetCategory="OPT",
                symbol="AAPL  261218C00250000",
                multiplier="100",
                strike="250",
                expiry="20261218",
                putCall="C",
                ibExecID="x2",
                ibCommission="--",
                currency="EUR",
                fxRateToBase="1.0842",
            ),
        )
    ).trades["U1111111"]
    assert future_thing.asset_class == "NEWCLASS" and future_thing.raw["brandNewField"] == "42"
    assert future_thing.fx_rate_to_base is None and option.fx_rate_to_base == Decimal("1.0842")
    assert (option.multiplier, option.strike, option.expiry, option.option_right, option.fees) == (
        Decimal(100),
        Decimal(250),
        date(2026, 12, 18),
        "C",
        Decimal(0),
    )


@responses.activate
def test_a_malformed_row_is_left_out_with_its_reason_for_the_run_and_the_others_kept():
    rows = (row(quantity="lots", ibExecID="bad.1"), row(dateTime="yesterday", ibExecID="bad.2"), row(ibExecID="good.1"))
    stub_flow(responses, report(statement("U1111111", *rows)))
    provider = IbkrFlexProvider()
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    with capture_logs() as logs:
        trades = list(provider.get_trades(auth(), BrokerAccountInfo("U1111111", "a"), since, until))
    assert [t.broker_trade_id for t in trades] == ["good.1"]
    assert provider.unreadable_rows == [
        "Trade bad.1: quantity 'lots' is not a number",
        "Trade bad.2: dateTime 'yesterday' is in no known format",
    ]
    skipped = [e for e in logs if e["event"] == "broker_row_skipped"]
    assert len(skipped) == 2 and all(e["log_level"] == "warning" and SECRET_MARK not in str(e) for e in skipped)


def confirms(account: str, *rows: str) -> str:
    """A Trade Confirmation query's statement: TradeConfirm rows, in their own section."""
    return statement(account).replace("<Trades></Trades>", f"<TradeConfirms>{''.join(rows)}</TradeConfirms>")


def confirm(**overrides: str | None) -> str:
    """A TradeConfirm row with the names that report uses (execID, orderID, price, commission)."""
    names = {"ibExecID": None, "ibOrderID": None, "tradePrice": None, "ibCommission": None}
    own = {"execID": "0000e0d5.6598a1b2.03.01", "orderID": "7002", "price": "101.5", "commission": "-0.35"}
    return row("TradeConfirm", **{**names, **own, "commissionCurrency": "USD", **overrides})


def test_trade_confirmation_reports_import_every_execution_with_their_own_field_names():
    parsed = parse(
        confirms(
            "U1111111",
            confirm(),
            confirm(execID="0000e0d5.6598a1b2.03.02", quantity="-40", buySell="SELL", dateTime="20261105;100502"),
            confirm(levelOfDetail="ORDER", execID="", orderID="7002"),
        )
    )
    first, second = parsed.trades["U1111111"]
    assert (first.broker_trade_id, first.order_id, first.side, first.quantity, first.price, first.fees) == (
        "0000e0d5.6598a1b2.03.01",
        "7002",
        BUY,
        Decimal(100),
        Decimal("101.5"),
        Decimal("0.35"),
    )
    assert (second.side, second.quantity, second.executed_at) == (
        SELL,
        Decimal(40),
        datetime(2026, 11, 5, 15, 5, 2, tzinfo=UTC),
    )
    assert parsed.unreadable == {}


def test_the_same_execution_has_the_same_id_in_an_activity_and_a_trade_confirmation_report():
    activity = parse(statement("U1111111", row(ibExecID="0000e0d5.6598a1b2.03.01"))).trades["U1111111"]
    confirmation = parse(confirms("U1111111", confirm())).trades["U1111111"]
    assert [t.broker_trade_id for t in activity] == [t.broker_trade_id for t in confirmation]


@pytest.mark.parametrize("make", [row, confirm])
def test_rows_with_date_and_time_apart_are_read(make):
    kept = make(dateTime="", tradeDate="20261105", tradeTime="093001")
    lost = make(dateTime="", tradeDate="20261105", tradeTime="", execID="no.time", ibExecID="no.time")
    tag = "Trade" if make is row else "TradeConfirm"
    section = statement if make is row else confirms
    parsed = parse(section("U1111111", kept, lost))
    (trade,) = parsed.trades["U1111111"]
    assert trade.executed_at == datetime(2026, 11, 5, 14, 30, 1, tzinfo=UTC)
    assert parsed.unreadable == {"U1111111": (f"{tag} no.time: no dateTime, nor tradeDate with tradeTime",)}


def test_account_currency_and_name_come_from_account_information_when_present():
    accounts = parse(statement("U1111111", currency="EUR", alias="Main"), statement("U2222222")).accounts
    assert [(a.external_id, a.name, a.currency) for a in accounts] == [
        ("U1111111", "Main", "EUR"),
        ("U2222222", "U2222222", "USD"),
    ]


# --- open positions ------------------------------------------------------------------------
def open_position(**overrides: str) -> str:
    attrs = {
        "accountId": "U1111111",
        "currency": "USD",
        "assetCategory": "STK",
        "symbol": "AAPL",
        "multiplier": "1",
        "strike": "",
        "expiry": "",
        "putCall": "",
        "reportDate": "20261120",
        "position": "100",
        "markPrice": "231.2",
        "openPrice": "230.5",
        "costBasisPrice": "230.51",
        "side": "Long",
        "levelOfDetail": "SUMMARY",
    }
    attrs.update(overrides)
    return "<OpenPosition " + " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items() if v is not None) + " />"


def with_positions(statement_xml: str, *positions: str) -> str:
    return statement_xml.replace(
        "</FlexStatement>", f"<OpenPositions>{''.join(positions)}</OpenPositions></FlexStatement>"
    )


def test_open_positions_are_read_signed_summary_rows_only_as_of_the_end_of_the_report_day():
    option = dict(
        assetCategory="OPT",
        symbol="AAPL  261218C00250000",
        multiplier="100",
        strike="250",
        expiry="20261218",
        putCall="C",
        position="-2",
        openPrice="4.15",
        side="Short",
    )
    report_ = parse(
        with_positions(
            statement("U1111111"),
            open_position(),
            open_position(levelOfDetail="LOT", position="40"),
            open_position(**option),
            open_position(symbol="MSFT", position="0"),
            open_position(symbol="TSLA", position="5", side="Short"),
        )
    )
    stock, short_option, tesla = report_.positions["U1111111"]
    assert (stock.symbol, stock.quantity, stock.average_price) == ("AAPL", Decimal(100), Decimal("230.5"))
    assert stock.mark_price == Decimal("231.2")
    assert (short_option.quantity, short_option.expiry, short_option.strike, short_option.option_right) == (
        Decimal(-2),
        date(2026, 12, 18),
        Decimal(250),
        "C",
    )
    assert tesla.quantity == Decimal(-5)
    # 20 November 2026 ends at midnight New York time (EST, UTC-5).
    assert stock.as_of == datetime(2026, 11, 21, 4, 59, 59, 999999, tzinfo=UTC)


@responses.activate
def test_positions_come_from_the_report_the_run_already_has_without_another_request():
    stub_flow(responses, report(with_positions(statement("U1111111", row()), open_position())))
    provider = IbkrFlexProvider()
    (account,) = provider.get_accounts(auth())
    (position,) = provider.get_positions(auth(), account)
    assert (position.symbol, position.quantity) == ("AAPL", Decimal(100))
    assert len(responses.calls) == 2  # the SendRequest and the one poll of get_accounts


@responses.activate
def test_a_flat_account_reports_no_positions_and_a_query_without_the_section_reports_none_and_says_why():
    stub_flow(
        responses,
        report(with_positions(statement("U1111111")), statement("U2222222", row(accountId="U2222222"))),
    )
    provider = IbkrFlexProvider()
    flat, without = provider.get_accounts(auth())
    assert provider.get_positions(auth(), flat) == []
    assert provider.notes == []
    assert provider.get_positions(auth(), without) is None
    assert provider.get_positions(auth(), without) is None
    assert provider.notes == [ibkr_flex.NO_POSITIONS_NOTE]


@responses.activate
def test_an_unreadable_position_skips_the_comparison_and_keeps_the_executions():
    stub_flow(responses, report(with_positions(statement("U1111111", row()), open_position(position="lots"))))
    provider = IbkrFlexProvider()
    (account,) = provider.get_accounts(auth())
    with pytest.raises(BrokerAPIError) as info:
        provider.get_positions(auth(), account)
    assert not info.value.transient and "position" in str(info.value)
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime.now(UTC)
    assert len(list(provider.get_trades(auth(), account, since, until))) == 1


@pytest.mark.django_db
def test_the_statement_s_positions_and_executions_name_instruments_alike_so_they_agree(trader):
    option = dict(assetCategory="OPT", symbol="AAPL  261218C00250000", multiplier="100", strike="250")
    option |= dict(expiry="20261218", putCall="C")
    report_ = parse(
        with_positions(
            statement(
                "U1111111",
                row(),
                row(**option, quantity="-2", tradePrice="4.15", ibExecID="x2"),
                row(assetCategory="FUT", symbol="ESZ6", multiplier="50", expiry="20261218", ibExecID="x3"),
            ),
            open_position(),
            open_position(**option, position="-2", side="Short"),
            open_position(assetCategory="FUT", symbol="ESZ6", multiplier="50", expiry="20261218"),
        )
    )
    account = account_with(trader, report_.trades["U1111111"], external_id="U1111111")
    positions = report_.positions["U1111111"]
    assert position_differences(account.pk, positions, read_at=datetime(2026, 11, 22, tzinfo=UTC)) == []
    assert position_differences(account.pk, positions[:2], read_at=datetime(2026, 11, 22, tzinfo=UTC)) == [
        {"instrument": "ESZ6 2026-12-18", "journal": "100", "broker": "0"}
    ]


@pytest.mark.django_db
def test_an_option_ibkr_books_as_expired_closes_its_round_trip_at_zero_and_leaves_the_statement_s_positions(trader):
    option = dict(assetCategory="OPT", symbol="AAPL  261120C00250000", multiplier="100", strike="250")
    option |= dict(expiry="20261120", putCall="C")
    # The expiry as IBKR lists it among the trades (UNCONFIRMED shape: a BookTrade at 0, notes Ep, no execution id).
    expiry = row(
        **option,
        transactionType="BookTrade",
        notes="Ep",
        quantity="-2",
        tradePrice="0",
        ibCommission="0",
        ibExecID="",
        transactionID="6002",
        dateTime="20261120;162000",
    )
    report_ = parse(
        with_positions(
            statement("U1111111", row(**option, quantity="2", tradePrice="3.5", ibExecID="x1"), expiry),
        )
    )
    bought, expired = report_.trades["U1111111"]
    assert (expired.broker_trade_id, expired.side, expired.price, expired.multiplier) == ("6002", SELL, 0, 100)
    account = account_with(trader, report_.trades["U1111111"], external_id="U1111111")
    (trip,) = account.round_trips.all()
    assert (trip.closed_at is not None, trip.gross_pnl, trip.net_pnl) == (True, Decimal(-700), Decimal(-701))
    # The option is gone from the statement's (empty) Open Positions and from the journal's alike.
    assert report_.positions["U1111111"] == ()
    assert position_differences(account.pk, report_.positions["U1111111"], read_at=datetime.now(UTC)) == []
