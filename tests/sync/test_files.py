"""A file imported into an account: the sync's dedup, positions and history; nothing stored from a bad file."""

import dataclasses
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from brokers import services
from brokers.models import SyncLog
from journal.files import template
from journal.models import RoundTrip, Trade
from sync.files import file_import
from sync.runs import run_inline
from tests import factories
from tests.fakes.ibkr_flex import QUERY_ID, TOKEN, FakeFlex
from tests.journal.files import samples

pytestmark = pytest.mark.django_db
HEADER = "account,executed_at,symbol,asset_class,side,quantity,price,multiplier,exec_id\n"


@pytest.fixture
def account(trader):
    connection = factories.connection(trader, label="Files", sync_enabled=False)
    return connection.accounts.create(external_id="U1234567", name="Main account")


def imported(account, data, name="fills.csv", **options):
    data = data.encode() if isinstance(data, str) else data
    return file_import(account=account, stream=io.BytesIO(data), name=name, **options)


def test_a_template_file_lands_as_fills_with_round_trips_and_a_file_run_in_the_history(account):
    result = imported(account, template.EXAMPLE)
    assert (result.ok, result.imported, result.already_there, result.format) == (True, 3, 0, "template")
    assert Trade.objects.filter(account=account).count() == 3
    assert RoundTrip.objects.filter(account=account, symbol="MESH6", closed_at__isnull=True).exists()
    log = SyncLog.objects.get(pk=result.sync_log_id)
    assert (log.trigger, log.status, log.trades_imported) == ("file", "SUCCESS", 3)
    assert log.detail["file"]["name"] == "fills.csv" and len(log.detail["file"]["sha256"]) == 64
    assert log.detail["U1234567"]["imported"] == 3


def test_the_same_file_twice_is_already_there_the_second_time(account):
    account.name = "DEMO123456"
    account.save()
    assert imported(account, samples.TRADOVATE_ORDERS).imported == 2
    again = imported(account, samples.TRADOVATE_ORDERS)
    assert (again.imported, again.already_there, again.not_a_fill) == (0, 2, 1)
    assert Trade.objects.filter(account=account).count() == 2


def test_a_bad_row_after_thousands_of_good_ones_stores_nothing_and_names_row_and_column(account):
    start = datetime(2026, 3, 2, 15, tzinfo=UTC)
    rows = [f"U1234567,{(start + timedelta(seconds=n)).isoformat()},AAPL,stock,buy,1,10,,x{n}\n" for n in range(4500)]
    rows[4321] = rows[4321].replace(",buy,", ",bye,")
    result = imported(account, HEADER + "".join(rows))
    assert not result.ok and result.imported == 0
    assert result.error == "Row 4323, column side: 'bye' is neither buy nor sell"
    assert not Trade.objects.filter(account=account).exists()
    assert not RoundTrip.objects.filter(account=account).exists()
    log = SyncLog.objects.get(pk=result.sync_log_id)
    assert (log.status, log.trades_imported, log.error_message) == ("FAILED", 0, result.error)


def test_rows_of_another_account_are_left_out_and_counted(account):
    data = (
        HEADER
        + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,a\nU7654321,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,b\n"
    )
    result = imported(account, data)
    assert (result.imported, result.other_account) == (1, 1)


def test_a_fill_a_sync_stored_under_its_id_is_recognised_by_content_in_a_file_without_ids(trader):
    synced = factories.fill(
        1, "BUY", 2, "6850.25", datetime(2025, 11, 25, 10, 38, 24, tzinfo=UTC), symbol="MESZ5", multiplier="5"
    )
    account = factories.account_with(trader, [synced], external_id="DEMO123456")
    result = imported(account, samples.TRADOVATE_ORDERS)
    assert (result.imported, result.already_there, result.matched_by_content) == (1, 1, 1)
    assert Trade.objects.filter(account=account).count() == 2


def test_busted_in_the_template_voids_the_fill_its_exec_id_stored(account):
    imported(account, HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,e-1\n")
    result = imported(
        account,
        "status," + HEADER.replace("\n", "") + "\nbusted,U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,e-1\n",
    )
    assert result.busted == 1
    assert Trade.objects.get(account=account).deleted_at is not None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty"),
        (b"\xff\xd8\xff\xe0 a picture", "do not recognise"),
        (b"<html><body>hello</body></html>", "do not recognise"),
        (b"<?xml version='1.0'?><FlexQueryResponse><FlexStatements", "XML cannot be read"),
    ],
)
def test_odd_files_are_refused_with_a_reason_and_store_nothing(account, data, message):
    result = imported(account, data)
    assert message in result.error
    assert not Trade.objects.exists()


@pytest.fixture
def flex(settings):
    with FakeFlex({"U1111111": "USD"}, executions_per_account=4) as fake:
        settings.BROKER_BASE_URLS = {**settings.BROKER_BASE_URLS, "ibkr_flex": fake.url}
        settings.IBKR_FLEX_POLL_PAUSE_S = 0
        yield fake


def flex_connection(trader):
    return services.connection_create(
        owner=trader,
        broker_type="ibkr_flex",
        label="Flex",
        credentials={"token": TOKEN, "query_id": QUERY_ID},
        sync_enabled=False,
    )


def flex_file(flex) -> bytes:
    today = datetime.now(UTC).date()
    return flex._report(today - timedelta(days=30), today).encode()


def test_a_flex_file_then_the_sync_stores_each_execution_once(trader, flex):
    connection = flex_connection(trader)
    account = connection.accounts.create(external_id="U1111111", name="U1111111")
    result = imported(account, flex_file(flex), name="flex.xml")
    assert result.imported == 4 and result.not_a_fill > 0  # the ORDER and CLOSED_LOT rows of the same fills
    log = run_inline(connection.pk)
    assert (log.status, log.trades_imported) == ("SUCCESS", 0)
    assert Trade.objects.filter(account=account).count() == 4
    assert set(Trade.objects.values_list("broker_trade_id", flat=True)) == flex.expected_ids("U1111111")


def test_the_sync_then_a_flex_file_stores_each_execution_once(trader, flex):
    connection = flex_connection(trader)
    assert run_inline(connection.pk).trades_imported == 4
    account = connection.accounts.get(external_id="U1111111")
    result = imported(account, flex_file(flex), name="flex.xml")
    assert (result.imported, result.already_there) == (0, 4)
    assert Trade.objects.filter(account=account).count() == 4


def upload(data, name="fills.csv"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data.encode() if isinstance(data, str) else data)


def test_the_page_imports_a_file_into_the_traders_account_and_says_what_it_did(trader_client, account):
    page = trader_client.get(f"/sync/accounts/{account.pk}/import/")
    assert page.status_code == 200 and b"Import a broker file" in page.content
    answer = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(template.EXAMPLE)})
    text = answer.content.decode()
    assert answer.status_code == 200
    assert "<strong>3</strong> fills imported" in text and "<strong>0</strong> already there" in text
    again = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(template.EXAMPLE)}).content
    assert b"<strong>3</strong> already there" in again
    history = trader_client.get(f"/sync/connections/{account.connection_id}/history/").content.decode()
    assert "File import" in history


def test_the_page_names_the_row_and_column_of_a_bad_file_and_stores_nothing(trader_client, account):
    bad = HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,10,,a\nU1234567,soon,AAPL,stock,buy,1,10,,b\n"
    answer = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(bad)})
    assert answer.status_code == 400
    assert "Row 3, column executed_at: &#x27;soon&#x27; is not ISO 8601" in answer.content.decode()
    assert not Trade.objects.exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x01\x02" * 1000, "\u00e9\u4e2d".encode("utf-16"), b"a," * 200_000, b"x" * 1_100_000 + b"\n"],
    ids=["empty", "binary", "utf16-nonsense", "wide-header", "huge-line"],
)
def test_odd_uploads_get_an_answer_not_a_server_error(trader_client, account, data):
    answer = trader_client.post("/sync/import/", {"account": account.pk, "file": upload(data)})
    assert answer.status_code == 400
    assert not Trade.objects.exists()


def test_another_traders_account_is_not_found_and_cannot_be_posted_into(trader_client, account, other_trader):
    theirs = factories.connection(other_trader, label="Theirs", sync_enabled=False).accounts.create(external_id="X")
    assert trader_client.get(f"/sync/accounts/{theirs.pk}/import/").status_code == 404
    answer = trader_client.post("/sync/import/", {"account": theirs.pk, "file": upload(template.EXAMPLE)})
    assert answer.status_code == 400 and b"Select a valid choice" in answer.content
    assert not Trade.objects.exists()


def test_the_template_downloads_with_its_three_example_rows(trader_client):
    answer = trader_client.get("/sync/import/template.csv")
    assert answer["Content-Type"].startswith("text/csv") and "attachment" in answer["Content-Disposition"]
    assert answer.content.decode().count("\n") == 4


def test_the_card_links_to_the_import_of_its_accounts(trader_client, account):
    page = trader_client.get("/brokers/").content.decode()
    assert f"/sync/import/?connection={account.connection_id}" in page
    form = trader_client.get(f"/sync/import/?connection={account.connection_id}").content.decode()
    assert f'<option value="{account.pk}" selected>' in form


def api_client(trader):
    from rest_framework.test import APIClient

    from brokers import services as broker_services

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {broker_services.api_token_create(owner=trader, name='files')[1]}")
    return client


def test_the_api_imports_a_file_and_answers_with_the_counts(trader, account):
    client = api_client(trader)
    answer = client.post(f"/api/accounts/{account.pk}/import/", {"file": upload(template.EXAMPLE)}, format="multipart")
    assert answer.status_code == 201
    body = answer.json()
    assert (body["imported"], body["already_there"], body["format"]) == (3, 0, "template")
    assert client.get(f"/api/connections/{account.connection_id}/logs/").json()["results"][0]["trigger"] == "file"
    again = client.post(f"/api/accounts/{account.pk}/import/", {"file": upload(template.EXAMPLE)}, format="multipart")
    assert again.json()["already_there"] == 3


def test_the_api_refuses_a_bad_file_naming_row_and_column_and_stores_nothing(trader, account):
    bad = HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,1,ten,,a\n"
    answer = api_client(trader).post(f"/api/accounts/{account.pk}/import/", {"file": upload(bad)}, format="multipart")
    assert answer.status_code == 400
    assert answer.json() | {"sync_log": None} == {
        "error": "Row 2, column price: 'ten' is not a number",
        "row": 2,
        "column": "price",
        "sync_log": None,
    }
    assert not Trade.objects.exists()


def test_the_api_knows_no_other_traders_account_and_asks_for_a_file(trader, account, other_trader):
    theirs = factories.connection(other_trader, label="Theirs", sync_enabled=False).accounts.create(external_id="X")
    client = api_client(trader)
    assert client.post(f"/api/accounts/{theirs.pk}/import/", {"file": upload(template.EXAMPLE)}).status_code == 404
    missing = client.post(f"/api/accounts/{account.pk}/import/", {"format": "template"}, format="multipart")
    assert missing.status_code == 400 and missing.json()["column"] == "file"
    wrong_zone = client.post(
        f"/api/accounts/{account.pk}/import/", {"file": upload(template.EXAMPLE), "time_zone": "Mars/Base"}
    )
    assert wrong_zone.status_code == 400 and wrong_zone.json()["column"] == "time_zone"
    assert not Trade.objects.exists()


def test_the_command_imports_a_file_and_prints_the_counts(account, tmp_path):
    from django.core.management import call_command

    path = tmp_path / "orders.csv"
    path.write_text(samples.TRADOVATE_ORDERS)
    out = io.StringIO()
    account.name = "DEMO123456"
    account.save()
    call_command("import_file", "--account", str(account.pk), str(path), stdout=out)
    assert "tradovate_orders: 2 imported, 0 already there, 1 not a fill" in out.getvalue()
    assert "Note: Tradovate's exports carry no fees" in out.getvalue()


def test_the_command_refuses_a_bad_file_with_its_row_and_column(account, tmp_path):
    from django.core.management import CommandError, call_command

    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "U1234567,2026-03-04T15:00:00Z,AAPL,stock,buy,-1,10,,a\n")
    with pytest.raises(CommandError, match="Nothing imported: Row 2, column quantity"):
        call_command("import_file", "--account", str(account.pk), str(path))
    with pytest.raises(CommandError, match="No account with id 999"):
        call_command("import_file", "--account", "999", str(path))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_file", "--account", str(account.pk), str(tmp_path / "missing.csv"))
    assert not Trade.objects.exists()


class ListedFills:
    """A broker that lists these fills and reports no positions: the sync's side of a file import."""

    key = "listed"
    sync_overlap = timedelta(hours=1)
    max_history = timedelta(days=3650)
    trades_ascending = False

    def __init__(self, fills):
        self.fills = fills

    def get_positions(self, auth, info):
        return None

    def get_trades(self, auth, info, since, until):
        return iter(self.fills)


def synced(account, fills):
    from brokers.providers.types import AuthResult, BrokerAccountInfo
    from sync.accounts import import_account

    account.refresh_from_db()
    info = BrokerAccountInfo(account.external_id, account.name)
    return import_account(ListedFills(fills), AuthResult(token="t"), account, info, datetime.now(UTC), None)


def tradovate_api_fills():
    """The Orders sample's two orders as Tradovate's API lists their fills (its ids, sub-second times)."""
    bought = datetime(2025, 11, 25, 10, 38, 24, 350000, tzinfo=UTC)
    sold = datetime(2025, 11, 25, 10, 41, 10, 900000, tzinfo=UTC)
    return [
        factories.fill(1, "BUY", 2, "6850.25", bought, symbol="MESZ5", multiplier="5", fees=Decimal(0)),
        factories.fill(2, "SELL", 2, "6852.50", sold, symbol="MESZ5", multiplier="5", fees=Decimal(0)),
    ]


def test_a_file_without_ids_then_the_sync_ends_with_the_brokers_rows_only(trader):
    account = factories.account_with(trader, [], external_id="DEMO123456")
    assert imported(account, samples.TRADOVATE_ORDERS).imported == 2
    account.refresh_from_db()
    assert account.has_file_fills
    result = synced(account, tradovate_api_fills())
    assert result.counts.imported == 2
    assert set(Trade.objects.filter(account=account).values_list("broker_trade_id", flat=True)) == {
        "MESZ5-1",
        "MESZ5-2",
    }
    trip = RoundTrip.objects.get(account=account)
    assert trip.closed_at is not None and trip.fill_count == 2 and trip.gross_pnl == Decimal("22.5")
    # The same file again: already there, by content.
    again = imported(account, samples.TRADOVATE_ORDERS)
    assert (again.imported, again.matched_by_content) == (0, 2)


def test_a_later_sync_leaves_a_file_fill_that_was_not_the_syncs(trader):
    at = datetime(2025, 11, 25, 10, 38, 24, tzinfo=UTC)
    api = factories.fill(1, "BUY", 1, "6850.25", at, symbol="MESZ5", multiplier="5", fees=Decimal(0))
    account = factories.account_with(trader, [api], external_id="DEMO123456")
    row = "DEMO123456,2025-11-25T10:38:24Z,MESZ5,future,buy,1,6850.25,5,\n"
    # Two identical fills in the file, one of them the synced one: the second is another fill.
    result = imported(account, HEADER + row + row)
    assert (result.imported, result.matched_by_content) == (1, 1)
    synced(account, [api])
    assert Trade.objects.filter(account=account).count() == 2


def metaapi_deals():
    """The MT5 sample's two deals as the MetaApi provider stores them: the ticket, units, the contract size."""
    from brokers.providers.types import BrokerTrade

    def deal(ticket, side, price, at):
        return BrokerTrade(
            broker_trade_id=ticket,
            account_external_id="12345678@Example-Server",
            symbol="EURUSD",
            side=side,
            quantity=Decimal("10000.00"),
            price=Decimal(price),
            executed_at=at,
            fees=Decimal("0.35"),
            asset_class="CFD",
            raw={"id": ticket, "lots": "0.1", "contractSize": "100000"},
        )

    return [
        deal("7001", "BUY", "1.08250", datetime(2026, 3, 4, 8, 0, 1, tzinfo=UTC)),
        deal("7002", "SELL", "1.08410", datetime(2026, 3, 4, 9, 30, 45, tzinfo=UTC)),
    ]


@pytest.fixture
def mt5_account(trader):
    connection = factories.connection(trader, label="MT5", sync_enabled=False)
    return connection.accounts.create(external_id="12345678@Example-Server", name="12345678")


def test_an_mt5_report_then_the_sync_stores_each_deal_once(mt5_account):
    result = imported(mt5_account, samples.MT5_REPORT, name="report.html", contract_sizes={"EURUSD": Decimal(100000)})
    assert (result.imported, result.not_a_fill, result.other_account) == (2, 2, 0)
    assert synced(mt5_account, metaapi_deals()).counts.skipped == 2
    assert Trade.objects.filter(account=mt5_account).count() == 2
    assert RoundTrip.objects.get(account=mt5_account).gross_pnl == Decimal("16")


def test_the_sync_then_an_mt5_report_takes_the_contract_size_from_the_synced_deals(mt5_account):
    synced(mt5_account, metaapi_deals())
    result = imported(mt5_account, samples.MT5_REPORT, name="report.html", time_zone=ZoneInfo("Etc/GMT-2"))
    assert (result.ok, result.imported, result.already_there) == (True, 0, 2)
    assert Trade.objects.filter(account=mt5_account).count() == 2


def test_tradovate_performance_and_the_sync_share_tradovates_fill_ids_in_either_order(trader):
    at = datetime(2025, 11, 25, 10, 38, 24, tzinfo=UTC)
    api = [
        factories.fill(9001, "BUY", 2, "6850.25", at, symbol="MESZ5", multiplier="5", fees=Decimal("1.04")),
        factories.fill(9002, "SELL", 1, "6852.50", at + timedelta(minutes=3), symbol="MESZ5", multiplier="5"),
        factories.fill(9003, "SELL", 1, "6849.00", at + timedelta(minutes=7), symbol="MESZ5", multiplier="5"),
    ]
    api = [dataclasses.replace(t, broker_trade_id=t.broker_trade_id.removeprefix("MESZ5-")) for t in api]
    first = factories.account_with(trader, [], external_id="FILE-FIRST")
    assert imported(first, samples.TRADOVATE_PERFORMANCE).imported == 3
    assert synced(first, api).counts.skipped == 3
    second = factories.account_with(trader, [], external_id="SYNC-FIRST")
    synced(second, api)
    assert imported(second, samples.TRADOVATE_PERFORMANCE).already_there == 3
    for account in (first, second):
        assert Trade.objects.filter(account=account).count() == 3


def test_contract_sizes_reach_the_import_from_the_page_and_the_command(trader_client, mt5_account, tmp_path):
    from django.core.management import CommandError, call_command

    answer = trader_client.post(
        "/sync/import/",
        {"account": mt5_account.pk, "file": upload(samples.MT5_REPORT), "contract_sizes": "EURUSD=lots"},
    )
    assert answer.status_code == 400 and b"is not SYMBOL=size" in answer.content
    refused = trader_client.post("/sync/import/", {"account": mt5_account.pk, "file": upload(samples.MT5_REPORT)})
    assert b"contract size of EURUSD is unknown" in refused.content
    path = tmp_path / "report.html"
    path.write_text(samples.MT5_REPORT)
    with pytest.raises(CommandError, match="Row 18, column Volume"):
        call_command("import_file", "--account", str(mt5_account.pk), str(path))
    out = io.StringIO()
    call_command(
        "import_file", "--account", str(mt5_account.pk), str(path), "--contract-size", "EURUSD=100000", stdout=out
    )
    assert "metatrader5: 2 imported" in out.getvalue()


def test_a_file_with_a_header_only_imports_nothing_and_says_so(account):
    result = imported(account, HEADER)
    assert result.ok and result.imported == 0
    assert result.notes == ["The file holds no fill for this account."]


def test_the_card_says_its_last_run_was_a_file_import(trader_client, account):
    imported(account, template.EXAMPLE)
    page = trader_client.get("/brokers/").content.decode()
    assert "3 imported, 0 skipped · a file you imported" in page
    imported(account, b"garbage")
    page = trader_client.get("/brokers/").content.decode()
    assert "0 imported, 0 skipped (failed) · a file you imported" in page


def test_a_failure_on_our_side_stores_nothing_and_answers_without_a_server_error(trader_client, account, monkeypatch):
    from journal.files import formats

    original = formats.BY_KEY["template"]

    def broken(stream, encoding, options):
        yield from original.read(stream, encoding, options)
        raise KeyError("a bug")

    monkeypatch.setitem(formats.BY_KEY, "template", dataclasses.replace(original, read=broken))
    answer = trader_client.post(
        "/sync/import/", {"account": account.pk, "file": upload(template.EXAMPLE), "format": "template"}
    )
    assert answer.status_code == 400 and b"failed on our side" in answer.content
    assert not Trade.objects.exists()


def test_a_file_waits_for_a_running_sync_of_its_connection_and_stores_nothing(account):
    from sync import locks

    assert locks.acquire(account.connection_id, "a-running-sync")
    result = imported(account, template.EXAMPLE)
    assert "A sync of this connection is running" in result.error
    assert not Trade.objects.exists()
    locks.release(account.connection_id, "a-running-sync")
    assert imported(account, template.EXAMPLE).imported == 3
    # The import gave its lock back: a sync may start.
    assert locks.acquire(account.connection_id, "the-next-sync")


def test_one_fill_in_two_files_of_different_formats_is_stored_once(trader):
    account = factories.account_with(trader, [], external_id="Sim101")
    ninja = imported(account, samples.NINJATRADER_EXECUTIONS)
    assert ninja.imported == 2
    # The same two fills written into the template, without ids, in UTC (the PC's zone was UTC).
    template_rows = (
        "account,executed_at,symbol,asset_class,side,quantity,price,multiplier\n"
        "Sim101,2026-04-27T06:05:02Z,MESM6,future,buy,1,7200.75,5\n"
        "Sim101,2026-04-27T06:09:40Z,MESM6,future,sell,1,7203.25,5\n"
    )
    again = imported(account, template_rows)
    assert (again.imported, again.already_there) == (0, 2)


def test_each_imported_fill_records_its_file_and_line(account):
    result = imported(account, template.EXAMPLE)
    rows = sorted(Trade.objects.filter(account=account).values_list("raw", flat=True), key=lambda r: r["file"]["row"])
    assert [r["file"] for r in rows] == [{"sha256": result.sha256, "row": n} for n in (2, 3, 4)]


def test_a_busted_template_row_without_id_voids_the_file_fill_of_the_same_content(account):
    row = "U1234567,2026-03-04T15:00:00Z,MESH6,future,buy,1,5812.25,5,\n"
    imported(account, HEADER + row)
    result = imported(account, "status," + HEADER.replace("\n", "") + "\nbusted," + row)
    assert result.busted == 1
    assert Trade.objects.get(account=account).deleted_at is not None
