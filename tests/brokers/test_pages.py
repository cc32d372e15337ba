"""The trader's pages: login required, only their own data, status and trades visible."""

import re
import time
import zlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from brokers import periodic_tasks, services
from brokers.models import BrokerAccount, BrokerConnection, SyncLog
from brokers.providers.types import AuthResult
from journal.models import Trade, TraderProfile
from sync.models import Notice

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def synced_connection(make_connection):
    # Eager tasks: creating the connection runs its first sync at once.
    return make_connection(label="My demo", credentials={"api_key": "demo-SECRET-value"})


@pytest.mark.parametrize("url", ["/brokers/", "/trades/", "/brokers/add/"])
def test_pages_need_a_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_brokers_page_shows_status_last_sync_and_trade_count(client, trader, synced_connection):
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert "My demo" in page and 'data-status="CONNECTED"' in page
    count = synced_connection.accounts.values_list("trades", flat=True).count()
    assert f'<span class="trade-count">{count}</span>' in page
    assert "Last successful sync:" in page and "never" not in page
    assert "Last failed sync:" not in page
    assert "demo-SECRET-value" not in page


WAITING = timezone.now() + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("fields", "badge", "says"),
    [
        ({"last_sync_at": None, "last_success_at": None, "last_sync_error": ""}, "NEW", "Not synced yet."),
        (
            {
                "status": "SYNCING",
                "next_attempt_at": WAITING,
                "next_attempt_reason": "retry",
                "last_sync_error": "Attempt 2 of 4 failed: Demo is temporarily unavailable (HTTP 503).",
            },
            "RETRYING",
            "Attempt 2 of 4 failed: Demo is temporarily unavailable (HTTP 503). Next try at",
        ),
        (
            {
                "status": "SYNCING",
                "next_attempt_at": WAITING,
                "next_attempt_reason": "rate_limit",
                "last_sync_error": "Demo asked us to slow down (HTTP 429). The sync pauses and continues",
            },
            "SYNCING",
            "Demo asked us to slow down (HTTP 429). The sync pauses and continues",
        ),
        ({"status": "SYNCING"}, "SYNCING", "Last successful sync:"),
        (
            {"last_sync_at": timezone.now(), "last_success_at": timezone.now(), "last_sync_error": "DEMO-STK-1: down"},
            "PARTIAL",
            "Some accounts did not sync: DEMO-STK-1: down",
        ),
        (
            {
                "status": "ERROR",
                "last_sync_at": timezone.now(),
                "last_sync_error": "Demo is down. All 4 attempts failed",
            },
            "ERROR",
            "Last failed sync:",
        ),
        ({"sync_enabled": False, "last_sync_at": timezone.now()}, "PAUSED", "off: auto-sync is switched off"),
    ],
    ids=["new", "retrying", "rate-limit-wait", "syncing", "partial", "error", "paused"],
)
def test_the_card_tells_each_state_at_a_glance(client, trader, fields, badge, says):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="States", credentials={"api_key": "k"}
    )
    BrokerConnection.objects.filter(pk=connection.pk).update(**fields)
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert f'data-status="{badge}"' in page
    assert says in page


def test_error_is_shown_with_what_to_do(client, trader):
    services.connection_create(
        owner=trader, broker_type="demo", label="Broken", credentials={"api_key": "k", "scenario": "auth_error"}
    )
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert 'data-status="ERROR"' in page
    assert "Edit the connection and choose the Healthy scenario." in page


def test_trades_page_lists_the_latest_trades(client, trader, synced_connection):
    client.force_login(trader)
    page = client.get("/trades/").content.decode()
    latest = synced_connection.accounts.first().trades.order_by("-executed_at").first()
    assert latest.symbol in page and "Page 1 of" in page


def test_trades_page_shows_every_digit_of_an_amount_and_no_padding(client, trader):
    account = quiet_connection(trader).accounts.create(external_id="spot", name="Spot")
    trade = add_trade(account, "t-1", "PEPE/USDT", timezone.now())
    Trade.objects.filter(pk=trade.pk).update(
        quantity=Decimal("100"), price=Decimal("0.000000012345678901"), fees=Decimal("0.000732004")
    )
    client.force_login(trader)
    row = client.get("/trades/").content.decode().split("<tbody>", 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells == ["100", "0.000000012345678901", "0.000732004"]


def test_the_card_says_how_fresh_an_aggregator_s_copy_of_an_account_is(client, trader):
    connection = quiet_connection(trader)
    connection.accounts.create(external_id="acc-1", name="Robinhood ····8443", broker_refreshed_on=date(2026, 11, 20))
    connection.accounts.create(external_id="acc-2", name="Direct")
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert page.count("data as of") == 1 and '<time datetime="2026-11-20">2026-11-20</time>' in page


def test_a_trader_never_sees_another_traders_data(client, other_trader, synced_connection):
    client.force_login(other_trader)
    assert "My demo" not in client.get("/brokers/").content.decode()
    assert "No trades yet" in client.get("/trades/").content.decode()
    pk = synced_connection.pk
    assert client.post(f"/brokers/{pk}/settings/", {"sync_interval_min": "30"}).status_code == 404
    assert client.post(f"/brokers/{pk}/sync/").status_code == 404
    assert client.post(f"/brokers/{pk}/delete/").status_code == 404
    assert BrokerConnection.objects.filter(pk=pk, sync_interval_min=15).exists()


def test_add_connection_form_shows_field_errors_and_saves_nothing(client, trader):
    client.force_login(trader)
    response = client.post("/brokers/add/?broker=demo", {"broker_type": "demo", "label": "X", "sync_interval_min": "2"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Demo API key" in page and "This field is required." in page
    assert "Sync interval must be a whole number of minutes from 5 to 60." in page
    assert not BrokerConnection.objects.exists()


def test_add_connection_form_creates_and_syncs(client, trader):
    client.force_login(trader)
    response = client.post(
        "/brokers/add/?broker=demo",
        {
            "broker_type": "demo",
            "label": "Fresh",
            "sync_interval_min": "10",
            "cred_api_key": "abc",
            "cred_scenario": "normal",
        },
    )
    assert response.status_code == 302
    connection = BrokerConnection.objects.get(label="Fresh")
    assert connection.sync_interval_min == 10 and connection.last_sync_at is not None
    # Saved without a test: the page does not claim the broker accepted the credentials.
    page = client.get("/brokers/").content.decode()
    assert "Saved Fresh, not verified yet: the connection was not tested." in page
    assert "abc" not in connection.credentials_ciphertext
    assert connection.credentials == {"api_key": "abc", "scenario": "normal"}


# --- Helpers for the tests below --------------------------------------------------------------


def quiet_connection(owner, label="Quiet", **credentials):
    """A connection whose auto-sync is off, so no sync runs and the test controls every row."""
    return services.connection_create(
        owner=owner,
        broker_type="demo",
        label=label,
        credentials={"api_key": "quiet-SECRET", **credentials},
        sync_enabled=False,
    )


def add_trade(account, trade_id, symbol, executed_at):
    return Trade.objects.create(
        account=account,
        broker_trade_id=trade_id,
        symbol=symbol,
        side="BUY",
        quantity=Decimal(1),
        price=Decimal(100),
        executed_at=executed_at,
        imported_at=executed_at,
    )


def trade_rows(page: str) -> int:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return body.count("<tr>") - body.count('colspan="8"')


def seconds_left_in_window(key: str, period: int) -> int:
    """What django-ratelimit computes: fixed windows that end at a per-key offset within the period."""
    now = int(time.time())
    end = now - now % period + zlib.crc32(key.encode()) % period
    return (end + period if end < now else end) - now


def csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


# --- Brokers page: status, controls, rate limit ----------------------------------------------


def test_badge_is_paused_when_auto_sync_is_off_and_interval_shows_an_odd_value(client, trader):
    connection = quiet_connection(trader)
    services.update_sync_interval(connection.pk, 17)
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert 'data-status="PAUSED"' in page
    assert '<option value="17" selected>every 17 min</option>' in page
    assert "auto-sync is switched off" in page


def test_status_partial_is_what_htmx_polls(client, trader, synced_connection):
    client.force_login(trader)
    response = client.get(f"/brokers/{synced_connection.pk}/status/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert 'data-status="CONNECTED"' in html and 'hx-trigger="every 5s' in html
    last_run = synced_connection.sync_logs.get()
    assert f"{last_run.trades_imported} imported, {last_run.trades_skipped} skipped" in html
    BrokerConnection.objects.filter(pk=synced_connection.pk).update(status=BrokerConnection.Status.SYNCING)
    html = client.get(f"/brokers/{synced_connection.pk}/status/").content.decode()
    assert 'data-status="SYNCING"' in html and 'hx-trigger="every 2s' in html


def test_sync_now_over_the_limit_goes_back_to_the_brokers_page_with_the_real_wait(client, trader, settings):
    settings.SYNC_NOW_RATE_LIMIT = "2/m"
    connection, other = quiet_connection(trader, "One"), quiet_connection(trader, "Two")
    client.force_login(trader)
    key = f"{trader.pk}:{connection.pk}"
    if seconds_left_in_window(key, 60) < 15:
        # The three requests must fall into one window, or the count starts again.
        time.sleep(seconds_left_in_window(key, 60) + 1)
    for _ in range(2):
        assert client.post(f"/brokers/{connection.pk}/sync/").status_code == 302
    response = client.post(f"/brokers/{connection.pk}/sync/")
    left = seconds_left_in_window(key, 60)
    # The trader lands on the brokers page at the card, not on the POST's URL.
    assert response.status_code == 302 and response["Location"] == f"/brokers/#connection-{connection.pk}"
    page = client.get(response["Location"]).content.decode()
    wait = int(re.search(r"Try again in (\d+) s\.", page).group(1))
    assert abs(wait - max(1, left)) <= 1
    assert connection.sync_logs.count() == 2
    # Per connection: the trader's other connection is not held back.
    assert client.post(f"/brokers/{other.pk}/sync/").status_code == 302


def test_state_changing_posts_need_the_csrf_token(trader, synced_connection):
    notice = Notice.objects.create(owner=trader, connection=synced_connection, kind="recovered", message="ok")
    client = csrf_client(trader)
    pk = synced_connection.pk
    posts = {
        f"/brokers/{pk}/settings/": {"sync_interval_min": "30"},
        f"/brokers/{pk}/sync/": {},
        f"/brokers/{pk}/edit/": {"label": "Renamed"},
        f"/brokers/{pk}/delete/": {},
        "/brokers/add/": {"broker_type": "demo", "label": "X", "sync_interval_min": "15", "cred_api_key": "k"},
        f"/sync/notices/{notice.pk}/dismiss/": {},
        "/trades/profile/": {"time_zone": "Europe/Berlin"},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 403, url
    synced_connection.refresh_from_db()
    assert synced_connection.label == "My demo" and synced_connection.sync_interval_min == 15
    assert BrokerConnection.objects.count() == 1 and synced_connection.sync_logs.count() == 1
    assert not TraderProfile.objects.exists()
    notice.refresh_from_db()
    assert notice.dismissed_at is None
    # With the token the same request goes through.
    client.get("/brokers/")
    token = client.cookies["csrftoken"].value
    response = client.post(f"/brokers/{pk}/settings/", {"sync_interval_min": "30", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert BrokerConnection.objects.get(pk=pk).sync_interval_min == 30


# --- Notices ----------------------------------------------------------------------------------


def test_notices_are_shown_and_dismissed(client, trader, other_trader):
    connection = quiet_connection(trader)
    notice = Notice.objects.create(
        owner=trader, connection=connection, kind=Notice.Kind.REPEATED_FAILURE, message="Sync failed 3 times."
    )
    htmx_notice = Notice.objects.create(owner=trader, connection=connection, kind="recovered", message="Back again.")
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    assert "Sync failed 3 times." in page and "Back again." in page

    assert client.post(f"/sync/notices/{notice.pk}/dismiss/").status_code == 302
    response = client.post(f"/sync/notices/{htmx_notice.pk}/dismiss/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response.content == b""
    assert Notice.objects.filter(dismissed_at__isnull=False).count() == 2
    page = client.get("/brokers/").content.decode()
    assert "Sync failed 3 times." not in page and "Back again." not in page

    client.force_login(other_trader)
    fresh = Notice.objects.create(owner=trader, connection=connection, kind="recovered", message="Mine.")
    assert client.post(f"/sync/notices/{fresh.pk}/dismiss/").status_code == 404
    fresh.refresh_from_db()
    assert fresh.dismissed_at is None


def test_notices_resolve_when_a_sync_succeeds_again(client, trader):
    # Auto-sync on: the first sync (eager here) finds the credentials refused.
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Refused", credentials={"api_key": "k", "scenario": "auth_error"}
    )
    client.force_login(trader)
    assert "Credentials need attention" in client.get("/brokers/").content.decode()
    edit = {"label": connection.label, "cred_api_key": "new-key", "cred_scenario": "normal"}
    assert client.post(f"/brokers/{connection.pk}/edit/", edit).status_code == 302
    # The saved credentials synced (tasks are eager here): the notice about them is gone by itself.
    page = client.get("/brokers/").content.decode()
    assert "Credentials need attention" not in page
    assert Notice.objects.get(kind=Notice.Kind.CREDENTIALS).dismissed_at is not None


def saved_message(client, label: str, scenario: str, *, test_first: str | None) -> str:
    data = {"broker_type": "demo", "label": label, "sync_interval_min": "15", "cred_api_key": "k"}
    if test_first is not None:
        client.post("/brokers/add/", data | {"action": "test", "cred_scenario": test_first}, HTTP_HX_REQUEST="true")
    client.post("/brokers/add/?broker=demo", data | {"action": "save", "cred_scenario": scenario})
    return re.search(r'<ul class="messages".*?</ul>', client.get("/brokers/").content.decode(), re.S).group(0)


def test_saving_says_whether_the_connection_test_passed(client, trader):
    client.force_login(trader)
    assert "Tested is connected; the first sync has started." in saved_message(
        client, "Tested", "normal", test_first="normal"
    )
    failed = saved_message(client, "Failed", "auth_error", test_first="auth_error")
    assert "Saved Failed, not verified yet: the connection test failed." in failed and "is connected" not in failed
    # Tested with other credentials than the ones saved: not verified either.
    assert "not verified yet: the connection was not tested" in saved_message(
        client, "Changed", "auth_error", test_first="normal"
    )


# --- Add and edit: test connection, credentials -----------------------------------------------


def test_test_connection_lists_the_accounts_and_saves_nothing(client, trader):
    client.force_login(trader)
    data = {"broker_type": "demo", "action": "test", "cred_api_key": "typed-SECRET", "cred_scenario": "normal"}
    page = client.post("/brokers/add/?broker=demo", data).content.decode()
    assert "The broker accepted the login." in page and "DEMO-FUT-1" in page and "DEMO-STK-1" in page
    assert "typed-SECRET" not in page
    fragment = client.post("/brokers/add/", data, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and "Demo futures" in fragment
    assert not BrokerConnection.objects.exists()


def test_test_connection_shows_the_brokers_error(client, trader):
    client.force_login(trader)
    data = {"broker_type": "demo", "action": "test", "cred_api_key": "k", "cred_scenario": "auth_error"}
    fragment = client.post("/brokers/add/", data, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-result="error"' in fragment and "The demo broker refused the login" in fragment
    missing = client.post("/brokers/add/", {"broker_type": "demo", "action": "test"}, HTTP_HX_REQUEST="true")
    assert "Demo API key is required." in missing.content.decode()
    assert not BrokerConnection.objects.exists()


def test_editing_credentials_clears_the_auth_error_and_resumes_sync(client, trader):
    broken = services.connection_create(
        owner=trader,
        broker_type="demo",
        label="Broken",
        credentials={"api_key": "saved-SECRET", "scenario": "auth_error"},
    )
    broken.refresh_from_db()
    assert broken.status == "ERROR" and broken.credentials_rejected
    assert not PeriodicTask.objects.get(name=periodic_tasks.task_name(broken.pk)).enabled
    client.force_login(trader)
    url = f"/brokers/{broken.pk}/edit/"
    assert "saved-SECRET" not in client.get(url).content.decode()

    # The stored secret is used for the test when the field is left blank.
    fragment = client.post(url, {"action": "test", "cred_scenario": "normal"}, HTTP_HX_REQUEST="true")
    assert "The broker accepted the login." in fragment.content.decode()

    response = client.post(url, {"label": "Fixed", "cred_api_key": "", "cred_scenario": "normal"})
    assert response.status_code == 302
    broken.refresh_from_db()
    assert broken.label == "Fixed" and broken.status == "CONNECTED" and broken.last_sync_error == ""
    assert not broken.credentials_rejected
    assert broken.credentials == {"api_key": "saved-SECRET", "scenario": "normal"}
    assert PeriodicTask.objects.get(name=periodic_tasks.task_name(broken.pk)).enabled
    # Resumed at once (eager tasks): the trades are there.
    assert Trade.objects.filter(account__connection=broken).exists()
    assert 'data-status="CONNECTED"' in client.get("/brokers/").content.decode()


def test_edit_without_new_credentials_keeps_the_session(client, trader):
    connection = quiet_connection(trader)
    connection.auth = AuthResult(token="session", expires_at=None)
    connection.save()
    client.force_login(trader)
    client.post(f"/brokers/{connection.pk}/edit/", {"label": "Renamed", "cred_scenario": ""})
    connection.refresh_from_db()
    assert connection.label == "Renamed" and connection.auth.token == "session"


def test_delete_asks_first(client, trader, synced_connection):
    client.force_login(trader)
    page = client.get(f"/brokers/{synced_connection.pk}/delete/").content.decode()
    assert "Delete My demo?" in page and BrokerConnection.objects.exists()
    assert client.post(f"/brokers/{synced_connection.pk}/delete/").status_code == 302
    assert not BrokerConnection.objects.exists()
    assert not PeriodicTask.objects.filter(name=periodic_tasks.task_name(synced_connection.pk)).exists()


# --- Trades: filters and time zone ------------------------------------------------------------


@pytest.fixture
def two_accounts(trader):
    connection = quiet_connection(trader)
    fut = BrokerAccount.objects.create(connection=connection, external_id="FUT", name="Futures")
    stk = BrokerAccount.objects.create(connection=connection, external_id="STK", name="Stocks")
    add_trade(fut, "f1", "ESZ6", datetime(2026, 1, 14, 12, 0, tzinfo=UTC))
    add_trade(fut, "f2", "MESZ6", datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    add_trade(stk, "s1", "AAPL", datetime(2026, 1, 15, 23, 30, tzinfo=UTC))  # Jan 16, 00:30 in Berlin
    add_trade(stk, "s2", "aapl", datetime(2026, 1, 17, 9, 0, tzinfo=UTC))
    return fut, stk


def test_trades_filter_by_account_symbol_and_dates(client, trader, two_accounts):
    fut, stk = two_accounts
    client.force_login(trader)
    assert trade_rows(client.get("/trades/").content.decode()) == 4
    assert trade_rows(client.get(f"/trades/?account={fut.pk}").content.decode()) == 2
    # By prefix, any case: "es" finds ESZ6 but not MESZ6; a whole symbol finds just itself.
    page = client.get("/trades/?symbol=es").content.decode()
    assert trade_rows(page) == 1 and "<td>ESZ6</td>" in page and "<td>MESZ6</td>" not in page
    assert trade_rows(client.get("/trades/?symbol=M").content.decode()) == 1
    assert trade_rows(client.get("/trades/?symbol=esz6").content.decode()) == 1
    assert trade_rows(client.get("/trades/?symbol=AAPL").content.decode()) == 2
    assert trade_rows(client.get(f"/trades/?account={stk.pk}&symbol=ESZ6").content.decode()) == 0
    page = client.get("/trades/?date_from=2026-01-15&date_to=2026-01-15").content.decode()
    assert trade_rows(page) == 2 and "2 trades match" in page
    page = client.get("/trades/?date_from=2026-01-16&date_to=2026-01-15").content.decode()
    assert "The end date is before the start date." in page and trade_rows(page) == 0


def test_trades_pages_keep_the_filters(client, trader):
    connection = quiet_connection(trader)
    account = BrokerAccount.objects.create(connection=connection, external_id="A")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(60):
        add_trade(account, f"t{n}", "AAPL" if n % 2 else "MSFT", start + timedelta(minutes=n))
    client.force_login(trader)
    page = client.get("/trades/").content.decode()
    assert "Page 1 of 2" in page and trade_rows(page) == 50
    page = client.get("/trades/?symbol=AAPL").content.decode()
    assert "30 trades match" in page and "Page" not in page.split('id="trades"')[1]
    page = client.get("/trades/?symbol=&page=2").content.decode()
    assert trade_rows(page) == 10 and 'href="?symbol=&amp;page=1"' in page


def test_times_are_shown_and_filtered_in_the_traders_time_zone(client, trader, two_accounts):
    client.force_login(trader)
    page = client.get("/trades/").content.decode()
    assert "2026-01-15 23:30:00" in page and "Times in UTC" in page
    assert trade_rows(client.get("/trades/?date_from=2026-01-16&date_to=2026-01-16").content.decode()) == 0

    assert client.post("/trades/profile/", {"time_zone": "Nowhere/Atlantis"}).status_code == 200
    assert not TraderProfile.objects.exists()
    assert client.post("/trades/profile/", {"time_zone": "Europe/Berlin"}).status_code == 302
    assert TraderProfile.objects.get(user=trader).time_zone == "Europe/Berlin"

    page = client.get("/trades/").content.decode()
    assert "2026-01-16 00:30:00" in page and "2026-01-15 23:30:00" not in page and "Times in Europe/Berlin" in page
    assert trade_rows(client.get("/trades/?date_from=2026-01-16&date_to=2026-01-16").content.decode()) == 1
    assert 'value="Europe/Berlin" selected>Berlin</option>' in client.get("/trades/profile/").content.decode()


def test_the_time_zone_list_offers_places_not_aliases(client, trader):
    client.force_login(trader)
    page = client.get("/trades/profile/").content.decode()
    offered = re.findall(r'<option value="([^"]+)"', page)
    assert {"UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Sydney"} <= set(offered)
    assert not {"Factory", "localtime", "posixrules", "US/Eastern", "Etc/GMT+5", "Asia/Calcutta"} & set(offered)
    assert 300 < len(offered) < 450 and '<optgroup label="Europe">' in page
    # A zone saved before (the API or admin may set any valid one) is still shown and kept.
    TraderProfile.objects.create(user=trader, time_zone="US/Eastern")
    assert 'value="US/Eastern" selected' in client.get("/trades/profile/").content.decode()
    assert client.post("/trades/profile/", {"time_zone": "US/Eastern"}).status_code == 302


def test_the_brokers_page_shows_the_last_sync_in_the_traders_zone(client, trader, synced_connection):
    TraderProfile.objects.create(user=trader, time_zone="Asia/Tokyo")
    synced_connection.refresh_from_db()
    client.force_login(trader)
    page = client.get("/brokers/").content.decode()
    expected = synced_connection.last_sync_at.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S JST")
    assert f'title="{expected}"' in page


# --- Sync history -----------------------------------------------------------------------------


def test_sync_history_is_paginated(client, trader):
    connection = quiet_connection(trader)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    SyncLog.objects.bulk_create(
        SyncLog(
            connection=connection,
            started_at=start + timedelta(minutes=n),
            status=SyncLog.Status.FAILED if n == 29 else SyncLog.Status.SUCCESS,
            trades_imported=n,
            duration_ms=1200,
            error_message="The broker is down." if n == 29 else "",
        )
        for n in range(30)
    )
    client.force_login(trader)
    url = f"/sync/connections/{connection.pk}/history/"
    page = client.get(url).content.decode()
    assert page.count('class="sync-log"') == 25 and "Page 1 of 2" in page and "30 runs" in page
    assert "The broker is down." in page and "1200 ms" in page
    page = client.get(url + "?page=2").content.decode()
    assert page.count('class="sync-log"') == 5 and "2026-01-01 00:00:00" in page


# --- Ownership and login on every new URL -----------------------------------------------------


def new_urls(connection, notice):
    pk = connection.pk
    return [
        ("get", f"/brokers/{pk}/status/"),
        ("get", f"/brokers/{pk}/edit/"),
        ("post", f"/brokers/{pk}/edit/"),
        ("get", f"/brokers/{pk}/delete/"),
        ("get", f"/sync/connections/{pk}/history/"),
        ("post", f"/sync/notices/{notice.pk}/dismiss/"),
    ]


def test_another_trader_gets_404_on_every_new_url(client, trader, other_trader):
    connection = quiet_connection(trader)
    notice = Notice.objects.create(owner=trader, connection=connection, kind="recovered", message="m")
    client.force_login(other_trader)
    for method, url in new_urls(connection, notice):
        assert getattr(client, method)(url, {"label": "Hijack", "action": "test"}).status_code == 404, url
    connection.refresh_from_db()
    assert connection.label == "Quiet"


def test_every_new_url_needs_a_login(client, trader):
    connection = quiet_connection(trader)
    notice = Notice.objects.create(owner=trader, connection=connection, kind="recovered", message="m")
    for method, url in [*new_urls(connection, notice), ("get", "/trades/profile/")]:
        response = getattr(client, method)(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_a_poll_after_the_session_ended_reloads_the_page(client, trader):
    connection = quiet_connection(trader)
    response = client.get(f"/brokers/{connection.pk}/status/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Refresh"] == "true" and b"<form" not in response.content


def test_unreadable_credentials_are_explained_not_called_our_error(client, trader):
    connection = quiet_connection(trader)
    BrokerConnection.objects.filter(pk=connection.pk).update(credentials_ciphertext="not-a-fernet-token")
    periodic_tasks.request_sync_now(connection.pk, trigger=SyncLog.Trigger.MANUAL)
    connection.refresh_from_db()
    assert connection.last_sync_error.startswith("The saved credentials cannot be read with this installation's")
    assert "unexpected error on our side" not in connection.last_sync_error
    client.force_login(trader)
    assert "Edit the connection and enter them again" in client.get("/brokers/").content.decode()


def test_unreadable_credentials_can_be_typed_again(client, trader):
    connection = quiet_connection(trader)
    BrokerConnection.objects.filter(pk=connection.pk).update(credentials_ciphertext="not-a-fernet-token")
    client.force_login(trader)
    url = f"/brokers/{connection.pk}/edit/"
    assert client.get(url).status_code == 200
    assert "This field is required." in client.post(url, {"label": "Quiet"}).content.decode()
    assert client.post(url, {"label": "Quiet", "cred_api_key": "new-key"}).status_code == 302
    connection.refresh_from_db()
    assert connection.credentials == {"api_key": "new-key"}
