"""Each format read from a small file in its broker's shape: fills, not-fills, keys, times and numbers."""

import io
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from journal.files import template
from journal.files.formats import detect, open_as
from journal.files.metatrader import contract_sizes
from journal.files.reading import CONTENT_KEY_PREFIX, MAX_LINE_CHARS, FileProblem, NotAFill, Options, Parsed
from tests.journal.files import samples


def read(data, chosen="", **options):
    data = data.encode() if isinstance(data, str) else data
    stream = io.BytesIO(data)
    fmt, encoding = open_as(stream, chosen)
    opts = Options(**options)
    rows = list(fmt.read(stream, encoding, opts))
    return fmt.key, [r for r in rows if isinstance(r, Parsed)], [r for r in rows if isinstance(r, NotAFill)], opts


def test_the_template_reads_a_stock_a_future_and_an_option_with_their_ids_or_content_keys():
    key, fills, skipped, _ = read(template.EXAMPLE)
    assert key == "template" and not skipped
    stock, future, option = (p.trade for p in fills)
    assert stock.broker_trade_id == "0001f4e5.6576a1b2.01.01"
    assert stock.executed_at == datetime(2026, 3, 4, 19, 31, 7, tzinfo=UTC)
    assert stock.fees == Decimal("1.02") and stock.order_id == "412"
    assert future.broker_trade_id.startswith(CONTENT_KEY_PREFIX) and future.broker_trade_id.endswith(":1")
    assert (future.side, future.multiplier, future.asset_class) == ("SELL", Decimal(5), "FUT")
    assert future.executed_at == datetime(2026, 3, 4, 15, 2, 44, 250000, tzinfo=UTC)
    assert (option.asset_class, option.strike, option.option_right, str(option.expiry)) == (
        "OPT",
        Decimal(190),
        "C",
        "2026-03-20",
    )
    assert {p.account for p in fills} == {"U1234567"}


def test_two_identical_template_rows_without_ids_are_two_fills_with_their_own_keys():
    row = "U1,2026-03-04T15:02:44Z,MESH6,future,buy,1,5812.25,5\n"
    _, fills, _, _ = read("account,executed_at,symbol,asset_class,side,quantity,price,multiplier\n" + row + row)
    first, second = (p.trade.broker_trade_id for p in fills)
    assert first != second and first.endswith(":1") and second.endswith(":2")


def test_a_template_time_without_offset_needs_the_files_time_zone():
    data = "account,executed_at,symbol,asset_class,side,quantity,price\nU1,2026-03-04T09:31:07,AAPL,stock,buy,1,10\n"
    with pytest.raises(FileProblem) as refused:
        read(data)
    assert (refused.value.row, refused.value.column) == (2, "executed_at")
    _, fills, _, _ = read(data, time_zone=ZoneInfo("America/New_York"))
    assert fills[0].trade.executed_at == datetime(2026, 3, 4, 14, 31, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("U1,2026-03-04T09:31:07Z,AAPL,stock,buy,1,ten", "price"),
        ("U1,2026-03-04T09:31:07Z,AAPL,stock,hold,1,10", "side"),
        ("U1,2026-03-04T09:31:07Z,AAPL,stock,buy,0,10", "quantity"),
        ("U1,2026-03-04T09:31:07Z,AAPL,bond,buy,1,10", "asset_class"),
        ("U1,2026-03-04T09:31:07Z,ESH6,future,buy,1,10", "multiplier"),
        ("U1,yesterday,AAPL,stock,buy,1,10", "executed_at"),
        (",2026-03-04T09:31:07Z,AAPL,stock,buy,1,10", "account"),
        ("U1,2026-03-04T09:31:07Z,AAPL,stock,buy,1,1e30", "price"),
    ],
)
def test_a_bad_template_row_is_named_by_row_and_column(row, column):
    header = "account,executed_at,symbol,asset_class,side,quantity,price,multiplier\n"
    good = "U1,2026-03-04T09:31:07Z,AAPL,stock,buy,1,10\n"
    with pytest.raises(FileProblem) as refused:
        read(header + good + row + "\n")
    assert (refused.value.row, refused.value.column) == (3, column)
    assert f"Row 3, column {column}:" in refused.value.described()


def test_a_negative_commission_is_refused_as_a_rebate():
    data = (
        "account,executed_at,symbol,asset_class,side,quantity,price,commission\n"
        "U1,2026-03-04T09:31:07Z,A,stock,buy,1,1,-0.5\n"
    )
    with pytest.raises(FileProblem, match="commission: '-0.5' is negative"):
        read(data)


def test_tradovate_orders_are_fills_when_filled_in_chicago_time_keyed_by_content():
    key, fills, skipped, options = read(samples.TRADOVATE_ORDERS)
    assert key == "tradovate_orders"
    assert [s.reason for s in skipped] == ["order Canceled"]
    buy, sell = (p.trade for p in fills)
    # 04:38:24 in Chicago on 25 November (CST, UTC-6).
    assert buy.executed_at == datetime(2025, 11, 25, 10, 38, 24, tzinfo=UTC)
    assert (buy.symbol, buy.quantity, buy.price, buy.multiplier) == ("MESZ5", 2, Decimal("6850.25"), 5)
    assert (sell.side, sell.order_id, fills[0].account) == ("SELL", "210002", "DEMO123456")
    assert buy.broker_trade_id.startswith(CONTENT_KEY_PREFIX)
    assert any("no fees" in note for note in options.notes)


def test_tradovate_performance_pairs_become_fills_under_tradovates_fill_ids_added_up_when_paired_twice():
    key, fills, _, _ = read(samples.TRADOVATE_PERFORMANCE)
    assert key == "tradovate_performance"
    by_id = {p.trade.broker_trade_id: p.trade for p in fills}
    assert set(by_id) == {"9001", "9002", "9003"}
    assert (by_id["9001"].side, by_id["9001"].quantity) == ("BUY", 2)
    assert (by_id["9003"].side, by_id["9003"].price) == ("SELL", Decimal("6849.00"))


def test_ninjatrader_executions_are_named_as_tradovate_names_the_contract_in_the_pcs_zone():
    key, fills, _, _ = read(samples.NINJATRADER_EXECUTIONS, trader_zone=ZoneInfo("Europe/Berlin"))
    assert key == "ninjatrader"
    buy, sell = (p.trade for p in fills)
    assert (buy.symbol, buy.multiplier, buy.fees, fills[0].account) == ("MESM6", 5, Decimal("0.62"), "Sim101")
    assert buy.executed_at == datetime(2026, 4, 27, 4, 5, 2, tzinfo=UTC)
    assert sell.price == Decimal("7203.25")


def test_a_european_ninjatrader_file_reads_decimal_commas_and_days_first_to_the_same_fills():
    _, us, _, _ = read(samples.NINJATRADER_EXECUTIONS, trader_zone=ZoneInfo("Europe/Berlin"))
    _, eu, _, _ = read(samples.NINJATRADER_EUROPEAN, trader_zone=ZoneInfo("Europe/Berlin"))
    assert [p.trade.broker_trade_id for p in eu] == [p.trade.broker_trade_id for p in us]
    assert eu[0].trade.price == Decimal("7200.75") and eu[0].trade.fees == Decimal("0.62")


def test_projectx_trades_split_into_entry_and_exit_at_their_own_offsets_sharing_the_fees():
    key, fills, _, _ = read(samples.PROJECTX_TRADES)
    assert key == "projectx_trades"
    entry, exit_, short_entry, short_exit = (p.trade for p in fills)
    assert (entry.side, exit_.side, short_entry.side, short_exit.side) == ("BUY", "SELL", "SELL", "BUY")
    assert entry.executed_at == datetime(2025, 10, 1, 19, 13, 23, tzinfo=UTC)
    assert entry.fees + exit_.fees == Decimal("1.48")
    assert (short_exit.quantity, short_exit.multiplier, short_exit.price) == (2, 2, Decimal("24800.00"))
    assert entry.raw["Id"] == exit_.raw["Id"] == "88112233"


@pytest.mark.parametrize("data", [samples.IBKR_ACTIVITY, samples.IBKR_CONFIRMS])
def test_ibkr_flex_files_give_the_web_services_ids(data):
    key, fills, skipped, _ = read(data)
    assert key == "ibkr_flex"
    stock = fills[0].trade
    assert stock.broker_trade_id == "0001f4e5.6576a1b2.01.01" and stock.fees == Decimal("1.00")
    assert stock.executed_at == datetime(2026, 3, 4, 14, 31, 7, tzinfo=UTC)
    assert fills[0].account == "U1234567"
    if data is samples.IBKR_ACTIVITY:
        assert [s.reason for s in skipped] == ["not an execution (levelOfDetail)"]
        assert fills[1].trade.side == "SELL" and fills[1].trade.quantity == 2


def test_an_unreadable_flex_row_names_its_place_and_field():
    bad = samples.IBKR_ACTIVITY.replace(b'tradePrice="5812.25"', b'tradePrice="abc"')
    with pytest.raises(FileProblem) as refused:
        read(bad)
    assert refused.value.row == 3 and "tradePrice" in refused.value.message


def test_the_mt5_report_gives_deal_tickets_in_units_and_leaves_balance_and_totals_out():
    sizes = {"EURUSD": Decimal(100000)}
    key, fills, skipped, _ = read(samples.MT5_REPORT, time_zone=ZoneInfo("Etc/GMT-2"), known_contract_sizes=sizes)
    assert key == "metatrader5"
    buy, sell = (p.trade for p in fills)
    assert (buy.broker_trade_id, buy.order_id, buy.side, fills[0].account) == ("7001", "6001", "BUY", "12345678")
    assert buy.executed_at == datetime(2026, 3, 4, 8, 0, 1, tzinfo=UTC)
    assert (buy.quantity, buy.fees, buy.raw["lots"]) == (Decimal("10000.00"), Decimal("0.35"), "0.10")
    assert len(skipped) == 2


def test_an_mt5_symbol_of_unknown_contract_size_is_refused_rather_than_stored_in_lots():
    with pytest.raises(FileProblem) as refused:
        read(samples.MT5_REPORT)
    # The file's line where the deal's row starts.
    assert (refused.value.row, refused.value.column) == (18, "Volume")
    assert "EURUSD=100000" in refused.value.message


def test_contract_sizes_are_read_as_the_trader_writes_them():
    assert contract_sizes("EURUSD=100000, XAUUSD=100;\nUS30 = 1") == {
        "EURUSD": Decimal(100000),
        "XAUUSD": Decimal(100),
        "US30": Decimal(1),
    }
    for wrong in ("EURUSD", "EURUSD=lots", "=5", "XAUUSD=-1", "X=nan"):
        with pytest.raises(ValueError, match="SYMBOL=size"):
            contract_sizes(wrong)


def test_the_mt5_report_in_utf16_with_known_contract_sizes_gives_units():
    data = "\ufeff".encode("utf-16-le") + samples.MT5_REPORT.encode("utf-16-le")
    _, fills, _, _ = read(data, known_contract_sizes={"EURUSD": Decimal(100000)})
    assert fills[0].trade.quantity == 10000


def test_detection_refuses_what_it_does_not_know_and_asks_when_two_formats_fit():
    with pytest.raises(FileProblem, match="do not recognise"):
        detect(b"date,what,amount\n2026-01-01,coffee,3\n")
    with pytest.raises(FileProblem, match="empty"):
        detect(b"   \n")
    both = (
        b"account,executed_at,symbol,asset_class,side,quantity,price,"
        b"buyFillId,sellFillId,boughtTimestamp,soldTimestamp\n"
    )
    with pytest.raises(FileProblem, match="choose the format"):
        detect(both)


def test_a_line_longer_than_the_limit_is_refused_without_reading_it_whole():
    data = "account,executed_at,symbol,asset_class,side,quantity,price\n" + "x" * (MAX_LINE_CHARS + 10) + "\n"
    with pytest.raises(FileProblem, match="longer than") as refused:
        read(data)
    assert refused.value.row == 2


def test_windows_1252_text_is_read_and_bytes_in_no_encoding_name_their_row():
    data = (
        "account,executed_at,symbol,asset_class,side,quantity,price,note\n"
        "U1,2026-03-04T09:31:07Z,A,stock,buy,1,1,café\n"
    )
    _, fills, _, _ = read(data.encode("cp1252"))
    assert fills[0].trade.raw["note"] == "café"
    broken = (
        b"account,executed_at,symbol,asset_class,side,quantity,price,note\n"
        + b"U1,2026-03-04T09:31:07Z,A,stock,buy,1,1,"
        + b"a" * 70000
        + b"\nU1,2026-03-04T09:31:07Z,\xff\xfe,stock,buy,1,1,\n"
    )
    with pytest.raises(FileProblem, match="not utf-8") as refused:
        read(broken)
    assert refused.value.row == 3


def test_a_chosen_format_that_does_not_fit_names_what_is_missing():
    with pytest.raises(FileProblem, match="header has no"):
        read(samples.TRADOVATE_ORDERS, "template")
    with pytest.raises(FileProblem):
        read(samples.TRADOVATE_ORDERS, "ibkr_flex")
    with pytest.raises(FileProblem, match="Deals"):
        read(samples.TRADOVATE_ORDERS, "metatrader5")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1850-01-01T00:00:00Z"])
def test_a_time_outside_the_years_a_trade_may_have_is_named(moment):
    data = f"account,executed_at,symbol,asset_class,side,quantity,price\nU1,{moment},AAPL,stock,buy,1,10\n"
    with pytest.raises(FileProblem, match="outside the years") as refused:
        read(data)
    assert (refused.value.row, refused.value.column) == (2, "executed_at")


def test_an_xml_with_entities_is_refused_unexpanded():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b"<FlexQueryResponse><FlexStatements><FlexStatement accountId='&lol2;'/></FlexStatements></FlexQueryResponse>"
    )
    with pytest.raises(FileProblem, match="XML cannot be read"):
        read(bomb)


def test_a_header_without_rows_reads_no_fill():
    _, fills, skipped, _ = read("account,executed_at,symbol,asset_class,side,quantity,price\n")
    assert fills == [] and skipped == []


def test_tradovates_other_header_revision_reads_the_same_and_summer_time_is_five_hours_behind():
    data = (
        "Order ID,Account,B/S,Contract,Product,Avg Fill Price,Filled Qty,Fill Time,Status\n"
        "77,DEMO1,Sell,NQU6,NQ,21010.50,1,07/15/2026 09:30:00,Filled\n"
    )
    key, fills, _, _ = read(data)
    trade = fills[0].trade
    assert key == "tradovate_orders"
    # Chicago keeps daylight time in July: UTC-5.
    assert trade.executed_at == datetime(2026, 7, 15, 14, 30, tzinfo=UTC)
    assert (trade.side, trade.multiplier, trade.order_id) == ("SELL", 20, "77")


@pytest.mark.parametrize(
    ("instrument", "symbol", "multiplier"),
    [("NQ SEP26", "NQU6", 20), ("MNQ DEC25", "MNQZ5", 2), ("CL JAN27", "CLF7", 1000), ("ZZ MAR26", "ZZH6", 1)],
)
def test_ninjatrader_month_names_become_contract_codes_with_the_roots_point_value(instrument, symbol, multiplier):
    data = samples.NINJATRADER_EXECUTIONS.replace("MES JUN26", instrument)
    _, fills, _, options = read(data)
    assert (fills[0].trade.symbol, fills[0].trade.multiplier) == (symbol, multiplier)
    assert any("point value of ZZH6 is unknown" in n for n in options.notes) == (symbol == "ZZH6")


def test_a_point_value_the_accounts_synced_fills_know_wins_over_the_table():
    _, fills, _, _ = read(samples.TRADOVATE_ORDERS, known_multipliers={"MESZ5": Decimal("5.0")})
    assert fills[0].trade.multiplier == Decimal("5.0")


def test_a_localised_mt5_report_reads_decimal_commas_and_italian_headers():
    italian = (
        samples.MT5_REPORT.replace("<b>Deals</b>", "<b>Affari</b>")
        .replace("<td>Symbol</td><td>Type</td><td>Direction</td><td>Volume</td><td>Price</td>",
                 "<td>Simbolo</td><td>Tipo</td><td>Direzione</td><td>Volume</td><td>Prezzo</td>")
        .replace("<td>Time</td><td>Deal</td>", "<td>Ora</td><td>Affare</td>")
        .replace("1.08250", "1,08250").replace("0.10", "0,10").replace("- 0.35", "- 0,35")
    )  # fmt: skip
    _, fills, _, _ = read(italian, known_contract_sizes={"EURUSD": Decimal(100000)})
    assert (fills[0].trade.price, fills[0].trade.quantity, fills[0].trade.fees) == (
        Decimal("1.08250"),
        Decimal("10000.00"),
        Decimal("0.35"),
    )


def test_a_semicolon_template_reads_decimal_commas():
    data = (
        "account;executed_at;symbol;asset_class;side;quantity;price;commission\n"
        "U1;2026-03-04T09:31:07Z;A;stock;buy;1.000,5;1.234,56;0,5\n"
    )
    _, fills, _, _ = read(data)
    assert (fills[0].trade.quantity, fills[0].trade.price, fills[0].trade.fees) == (
        Decimal("1000.5"),
        Decimal("1234.56"),
        Decimal("0.5"),
    )


def test_an_excel_file_is_refused_with_the_way_to_save_it():
    with pytest.raises(FileProblem, match="save the export as CSV"):
        detect(b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 100)


def test_tradovate_position_history_gives_the_same_fills_as_performance_with_their_account():
    key, fills, _, _ = read(samples.TRADOVATE_POSITION_HISTORY)
    _, performance, _, _ = read(samples.TRADOVATE_PERFORMANCE)
    assert key == "tradovate_position_history"
    assert [
        (p.trade.broker_trade_id, p.trade.side, p.trade.quantity, p.trade.price, p.trade.executed_at) for p in fills
    ] == [
        (p.trade.broker_trade_id, p.trade.side, p.trade.quantity, p.trade.price, p.trade.executed_at)
        for p in performance
    ]
    assert {p.account for p in fills} == {"DEMO123456"}
