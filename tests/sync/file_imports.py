"""What the file import tests share: a file imported in a call, an upload, the API client, a listed-fills broker."""

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from brokers import services
from brokers.providers.types import AuthResult, BrokerAccountInfo, BrokerTrade
from sync.accounts import import_account
from sync.files import file_import
from tests import factories
from tests.fakes.ibkr_flex import QUERY_ID, TOKEN

HEADER = "account,executed_at,symbol,asset_class,side,quantity,price,multiplier,exec_id\n"


def imported(account, data, name="fills.csv", **options):
    data = data.encode() if isinstance(data, str) else data
    return file_import(account=account, stream=io.BytesIO(data), name=name, **options)


def upload(data, name="fills.csv"):

    return SimpleUploadedFile(name, data.encode() if isinstance(data, str) else data)


def api_client(trader):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {services.api_token_create(owner=trader, name='files')[1]}")
    return client


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


def metaapi_deals():
    """The MT5 sample's two deals as the MetaApi provider stores them: the ticket, units, the contract size."""

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
