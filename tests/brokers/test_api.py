"""The JSON API: auth, tenant isolation, services-backed writes in step with schedules, no secrets out."""

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import django_ratelimit.core
import pytest
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from brokers import periodic_tasks, services
from brokers.models import BrokerAccount, BrokerConnection, SyncLog
from brokers.providers.registry import provider_classes
from journal.models import Trade

# An unknown broker type is answered with how many are registered, and where they are listed.
KNOWN_COUNT = len(provider_classes())

# Transactional: on-commit callbacks run, so a queued sync runs (eagerly) inside the request.
pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-RECOGNISABLE-9f31c7d2"
OTHER_SECRET = "sk-RECOGNISABLE-second-55ab"
CONNECTION_FIELDS = {
    "id",
    "broker_type",
    "provider_name",
    "label",
    "environment",
    "status",
    "display_status",
    "next_attempt_at",
    "sync_enabled",
    "sync_interval_min",
    "last_sync_at",
    "last_success_at",
    "last_sync_error",
    "next_sync_at",
    "accounts",
    "created_at",
}


class RecordingClient(APIClient):
    """An APIClient that keeps every response body, so a test can search them all for secrets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bodies: list[str] = []

    def request(self, **kwargs):
        response = super().request(**kwargs)
        self.bodies.append(response.content.decode())
        return response


def assert_no_secret(client: RecordingClient):
    assert client.bodies
    for body in client.bodies:
        assert SECRET not in body and OTHER_SECRET not in body


@pytest.fixture
def anonymous():
    client = RecordingClient()
    yield client
    assert all(SECRET not in body for body in client.bodies)


@pytest.fixture
def api(trader):
    client = RecordingClient()
    # A request, as every real login has: django-axes counts logins per username and address.
    assert client.login(request=HttpRequest(), username="alice", password="alice-password-1")
    yield client
    assert all(SECRET not in body and OTHER_SECRET not in body for body in client.bodies)


@pytest.fixture
def other_api(other_trader):
    client = RecordingClient()
    assert client.login(request=HttpRequest(), username="bob", password="bob-password-1")
    yield client
    assert all(SECRET not in body for body in client.bodies)


@pytest.fixture
def connection(make_connection):
    # Eager tasks and a transactional test: the first sync runs on commit, so accounts exist.
    return make_connection(credentials={"api_key": SECRET})


@pytest.fixture
def quiet_connection(make_connection):
    """A connection with auto-sync off (no sync runs), for hand-made accounts and trades."""
    return make_connection(label="Quiet", credentials={"api_key": SECRET}, sync_enabled=False)


def periodic_task(connection_id: int) -> PeriodicTask:
    return PeriodicTask.objects.get(name=periodic_tasks.task_name(connection_id))


def task_state(connection_id: int) -> tuple:
    task = periodic_task(connection_id)
    return task.interval_id, task.enabled, task.expire_seconds, task.kwargs, task.date_changed


def make_trade(account, trade_id, symbol, executed_at, *, price="100.25", deleted=False):
    return Trade.objects.create(
        account=account,
        broker_trade_id=trade_id,
        symbol=symbol,
        side="BUY",
        quantity=Decimal(2),
        price=Decimal(price),
        fees=Decimal("1.005"),
        executed_at=executed_at,
        imported_at=timezone.now(),
        deleted_at=timezone.now() if deleted else None,
    )


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/connections/"),
        ("post", "/api/connections/"),
        ("get", "/api/connections/{id}/"),
        ("patch", "/api/connections/{id}/"),
        ("delete", "/api/connections/{id}/"),
        ("post", "/api/connections/{id}/sync/"),
        ("get", "/api/connections/{id}/logs/"),
        ("get", "/api/trades/"),
        ("get", "/api/providers/"),
    ],
)
def test_unauthenticated_requests_are_refused(anonymous, quiet_connection, method, url):
    response = getattr(anonymous, method)(url.format(id=quiet_connection.pk), {}, format="json")
    assert response.status_code in (401, 403)
    assert BrokerConnection.objects.filter(pk=quiet_connection.pk).exists()


def test_token_authentication(trader, quiet_connection):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {services.api_token_create(owner=trader, name='test')[1]}")
    response = client.get("/api/connections/")
    assert response.status_code == 200
    assert [c["id"] for c in response.json()] == [quiet_connection.pk]
    created = client.post(
        "/api/connections/",
        {"broker_type": "demo", "label": "By token", "credentials": {"api_key": "k"}},
        format="json",
    )
    assert created.status_code == 201
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    # 403 rather than 401 while SessionAuthentication is listed first in REST_FRAMEWORK.
    assert client.get("/api/connections/").status_code in (401, 403)


# --- connections ------------------------------------------------------------------------------


def test_create_validates_through_the_services_schedules_and_syncs(api, trader):
    response = api.post(
        "/api/connections/",
        {"broker_type": "demo", "label": "  My demo ", "credentials": {"api_key": SECRET}, "sync_interval_min": 20},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == CONNECTION_FIELDS
    assert body["label"] == "My demo" and body["provider_name"] == "Demo broker (simulated)"
    assert body["sync_enabled"] is True and body["sync_interval_min"] == 20
    # The first sync ran on commit: accounts are listed and the connection is healthy.
    assert body["status"] == "CONNECTED" and body["display_status"] == "CONNECTED"
    assert {a["external_id"] for a in body["accounts"]} == {"DEMO-FUT-1", "DEMO-STK-1"}
    assert set(body["accounts"][0]) == {"id", "external_id", "name", "currency"}
    assert body["last_success_at"] and body["next_sync_at"]
    connection = BrokerConnection.objects.get(pk=body["id"], owner=trader)
    assert connection.credentials == {"api_key": SECRET}
    task = periodic_task(connection.pk)
    assert task.enabled and task.interval.every == 20 and json.loads(task.kwargs) == {"connection_id": connection.pk}
    assert connection.sync_logs.get().trigger == SyncLog.Trigger.MANUAL


def test_list_and_retrieve_show_only_the_documented_fields(api, connection):
    listed = api.get("/api/connections/")
    assert listed.status_code == 200
    [item] = listed.json()
    assert set(item) == CONNECTION_FIELDS and item["id"] == connection.pk
    detail = api.get(f"/api/connections/{connection.pk}/")
    assert detail.status_code == 200 and detail.json() == item
    assert item["environment"] == "" and item["broker_type"] == "demo"
    assert item["last_sync_error"] == "" and item["created_at"]


def test_patch_changes_label_interval_and_auto_sync_with_the_periodic_task_in_step(api, connection):
    url = f"/api/connections/{connection.pk}/"
    response = api.patch(url, {"label": "Renamed", "sync_interval_min": 30}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["label"] == "Renamed" and response.json()["sync_interval_min"] == 30
    task = periodic_task(connection.pk)
    assert task.interval.every == 30 and task.expire_seconds == 30 * 60 and task.enabled

    response = api.patch(url, {"sync_enabled": False}, format="json")
    body = response.json()
    assert body["sync_enabled"] is False and body["display_status"] == "PAUSED" and body["next_sync_at"] is None
    assert not periodic_task(connection.pk).enabled

    runs_before = connection.sync_logs.count()
    response = api.patch(url, {"sync_enabled": True}, format="json")
    assert response.json()["display_status"] == "CONNECTED"
    assert periodic_task(connection.pk).enabled
    # Switching auto-sync back on syncs at once, as the services promise.
    assert connection.sync_logs.count() == runs_before + 1
    assert PeriodicTask.objects.filter(name__startswith=periodic_tasks.TASK_NAME_PREFIX).count() == 1


@pytest.mark.parametrize("bad", [3, 61, 0, "abc", 15.5, "15", True])
def test_patch_bad_interval_is_400_naming_field_and_rule_and_changes_nothing(api, connection, bad):
    before = task_state(connection.pk)
    response = api.patch(
        f"/api/connections/{connection.pk}/", {"sync_interval_min": bad, "label": "Changed"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"sync_interval_min": ["Sync interval must be a whole number of minutes from 5 to 60."]}
    assert task_state(connection.pk) == before
    connection.refresh_from_db()
    assert connection.sync_interval_min == 15 and connection.label == "Demo"


@pytest.mark.parametrize("bad", ["yes", "true", 1, 0, None])
def test_patch_non_boolean_auto_sync_is_400_and_changes_nothing(api, connection, bad):
    before = task_state(connection.pk)
    response = api.patch(f"/api/connections/{connection.pk}/", {"sync_enabled": bad}, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == ["sync_enabled"]
    if bad is not None:
        assert errors["sync_enabled"] == ["Auto-sync must be true or false."]
    assert task_state(connection.pk) == before
    connection.refresh_from_db()
    assert connection.sync_enabled is True


def test_patch_refuses_fields_it_cannot_change(api, connection):
    before = task_state(connection.pk)
    response = api.patch(
        f"/api/connections/{connection.pk}/", {"broker_type": "alpaca", "sync_interval": 30}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"broker_type": ["This field cannot be changed."], "sync_interval": ["Unknown field."]}
    assert task_state(connection.pk) == before
    connection.refresh_from_db()
    assert connection.broker_type == "demo"


def test_patch_replaces_credentials_without_returning_them(api, connection):
    url = f"/api/connections/{connection.pk}/"
    refused = api.patch(url, {"credentials": {"api_key": OTHER_SECRET, "scenario": "bogus"}}, format="json")
    assert refused.status_code == 400
    [rule] = refused.json()["credentials"]["scenario"]
    assert rule.startswith("Scenario must be one of: normal, auth_error, broker_down")
    connection.refresh_from_db()
    assert connection.credentials == {"api_key": SECRET}

    response = api.patch(url, {"credentials": {"api_key": OTHER_SECRET}}, format="json")
    assert response.status_code == 200 and "credentials" not in response.json()
    connection.refresh_from_db()
    assert connection.credentials == {"api_key": OTHER_SECRET}


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        (
            {"broker_type": "nope"},
            {
                "broker_type": [
                    f"Unknown broker type 'nope'. The {KNOWN_COUNT} known types are listed by /api/providers/ "
                    "and manage.py list_providers."
                ]
            },
        ),
        ({"credentials": {}}, {"credentials": {"api_key": ["Demo API key is required."]}}),
        ({"credentials": {"scenario": "normal"}}, {"credentials": {"api_key": ["Demo API key is required."]}}),
        (
            {"credentials": {"api_key": SECRET, "extra": SECRET}},
            {"credentials": {"extra": ["Demo broker (simulated) takes no field named 'extra'."]}},
        ),
        ({"credentials": SECRET}, {"credentials": ['Expected a dictionary of items but got type "str".']}),
        (
            {"sync_interval_min": 61},
            {"sync_interval_min": ["Sync interval must be a whole number of minutes from 5 to 60."]},
        ),
        (
            {"sync_interval_min": "abc"},
            {"sync_interval_min": ["Sync interval must be a whole number of minutes from 5 to 60."]},
        ),
        ({"sync_enabled": "yes"}, {"sync_enabled": ["Auto-sync must be true or false."]}),
        ({"label": ""}, {"label": ["This field may not be blank."]}),
        ({"label": "   "}, {"label": ["This field may not be blank."]}),
        (
            {"broker_type": "alpaca", "environment": "moon", "credentials": {"key_id": "k", "secret_key": SECRET}},
            {"environment": ["Environment must be one of: paper, live."]},
        ),
    ],
)
def test_create_refusals_are_400_naming_field_and_rule_and_save_nothing(api, payload, errors):
    body = {"broker_type": "demo", "label": "New", "credentials": {"api_key": SECRET}, **payload}
    response = api.post("/api/connections/", body, format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert not BrokerConnection.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith=periodic_tasks.TASK_NAME_PREFIX).exists()


def test_delete_goes_through_the_service(api, connection):
    assert Trade.objects.filter(account__connection=connection).exists()
    response = api.delete(f"/api/connections/{connection.pk}/")
    assert response.status_code == 204
    assert not BrokerConnection.objects.filter(pk=connection.pk).exists()
    assert not PeriodicTask.objects.filter(name=periodic_tasks.task_name(connection.pk)).exists()
    assert not Trade.objects.filter(account__connection_id=connection.pk).exists()
    assert api.get(f"/api/connections/{connection.pk}/").status_code == 404


def test_put_is_not_offered(api, connection):
    assert api.put(f"/api/connections/{connection.pk}/", {"label": "x"}, format="json").status_code == 405


# --- sync now and logs ------------------------------------------------------------------------


def test_sync_now_queues_a_run_and_returns_its_id(api, connection):
    response = api.post(f"/api/connections/{connection.pk}/sync/")
    assert response.status_code == 202
    body = response.json()
    run = SyncLog.objects.get(task_id=body["task_id"])
    assert run.connection_id == connection.pk and run.trigger == SyncLog.Trigger.MANUAL
    assert run.status == SyncLog.Status.SUCCESS
    assert body["logs_url"] == f"http://testserver/api/connections/{connection.pk}/logs/?task_id={body['task_id']}"
    logs = api.get(body["logs_url"]).json()
    assert logs["count"] == 1 and logs["results"][0]["id"] == run.pk


class FrozenClock:
    """Stands in for the time module of django-ratelimit, whose fixed windows follow the clock."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


def test_sync_now_is_rate_limited_per_trader_and_connection(api, connection, quiet_connection, monkeypatch):
    # A frozen clock keeps every request in one window, which a real one could cross mid-test.
    clock = FrozenClock(time.time())
    monkeypatch.setattr(django_ratelimit.core, "time", clock)
    limit = int(settings.SYNC_NOW_RATE_LIMIT.split("/")[0])
    url = f"/api/connections/{connection.pk}/sync/"
    for _ in range(limit):
        assert api.post(url).status_code == 202
    runs = connection.sync_logs.count()
    refused = api.post(url)
    assert refused.status_code == 429
    wait = int(refused["Retry-After"])
    assert 1 <= wait <= 61
    assert refused.json() == {
        "detail": f"Too many syncs requested for this connection; try again in {wait} seconds.",
        "retry_after": wait,
    }
    assert connection.sync_logs.count() == runs
    # Another connection of the same trader has its own allowance.
    assert api.post(f"/api/connections/{quiet_connection.pk}/sync/").status_code == 202
    # Once the announced wait is over, the connection can be synced again.
    clock.now += wait
    assert api.post(url).status_code == 202


def test_sync_now_allowance_is_shared_with_the_brokers_page(api, quiet_connection, monkeypatch):
    monkeypatch.setattr(django_ratelimit.core, "time", FrozenClock(time.time()))
    limit = int(settings.SYNC_NOW_RATE_LIMIT.split("/")[0])
    for _ in range(limit):
        assert api.post(f"/brokers/{quiet_connection.pk}/sync/").status_code in (200, 302)
    assert api.post(f"/api/connections/{quiet_connection.pk}/sync/").status_code == 429


def test_logs_are_newest_first_and_paginated(api, quiet_connection):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for minutes in (0, 30, 10):
        SyncLog.objects.create(
            connection=quiet_connection,
            started_at=start + timedelta(minutes=minutes),
            status=SyncLog.Status.SUCCESS,
            task_id=f"t{minutes}",
            trades_imported=minutes,
        )
    response = api.get(f"/api/connections/{quiet_connection.pk}/logs/?page_size=2")
    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 3 and page["next"] and page["previous"] is None
    assert [r["task_id"] for r in page["results"]] == ["t30", "t10"]
    assert set(page["results"][0]) == {
        "id",
        "trigger",
        "status",
        "started_at",
        "finished_at",
        "duration_ms",
        "trades_imported",
        "trades_skipped",
        "attempt",
        "task_id",
        "error_kind",
        "error_message",
        "detail",
        "undone_at",
        "trades_undone",
    }
    assert [r["task_id"] for r in api.get(page["next"]).json()["results"]] == ["t0"]


# --- trades -----------------------------------------------------------------------------------


@pytest.fixture
def journal(trader, quiet_connection):
    """Two connections of the trader with hand-made trades, one of them deleted."""
    second = services.connection_create(
        owner=trader, broker_type="demo", label="Second", credentials={"api_key": SECRET}, sync_enabled=False
    )
    stocks = BrokerAccount.objects.create(connection=quiet_connection, external_id="STK-1", name="Stocks")
    futures = BrokerAccount.objects.create(connection=second, external_id="FUT-1", name="Futures")
    t0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    trades = {
        "aapl-1": make_trade(stocks, "aapl-1", "AAPL", t0, price="230.01"),
        "aapl-2": make_trade(stocks, "aapl-2", "AAPL", t0 + timedelta(hours=1)),
        "msft-1": make_trade(stocks, "msft-1", "MSFT", t0 + timedelta(hours=2)),
        "gone": make_trade(stocks, "gone", "AAPL", t0 + timedelta(hours=3), deleted=True),
        "es-1": make_trade(futures, "es-1", "ESZ6", t0 + timedelta(hours=4)),
    }
    return {"t0": t0, "stocks": stocks, "futures": futures, "second": second, "trades": trades}


def trade_ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [t["broker_trade_id"] for t in response.json()["results"]]


def test_trades_newest_first_without_tombstones_and_decimals_as_strings(api, journal):
    response = api.get("/api/trades/")
    assert trade_ids(response) == ["es-1", "msft-1", "aapl-2", "aapl-1"]
    oldest = response.json()["results"][-1]
    # Every digit stored, no padding to the column's 18 places.
    assert (oldest["price"], oldest["quantity"], oldest["fees"], oldest["multiplier"]) == ("230.01", "2", "1.005", "1")
    assert oldest["executed_at"] == "2026-03-02T14:30:00Z"
    assert oldest["account"] == journal["stocks"].pk and oldest["account_external_id"] == "STK-1"
    assert oldest["connection"] == journal["stocks"].connection_id


def test_trades_filters(api, journal):
    t0 = journal["t0"]
    assert trade_ids(api.get("/api/trades/", {"account": journal["futures"].pk})) == ["es-1"]
    assert trade_ids(api.get("/api/trades/", {"connection": journal["stocks"].connection_id})) == [
        "msft-1",
        "aapl-2",
        "aapl-1",
    ]
    assert trade_ids(api.get("/api/trades/", {"symbol": "aapl"})) == ["aapl-2", "aapl-1"]
    since, until = (t0 + timedelta(hours=1)).isoformat(), (t0 + timedelta(hours=4)).isoformat()
    assert trade_ids(api.get("/api/trades/", {"since": since})) == ["es-1", "msft-1", "aapl-2"]
    assert trade_ids(api.get("/api/trades/", {"since": since, "until": until})) == ["msft-1", "aapl-2"]
    assert trade_ids(api.get("/api/trades/", {"until": "2026-03-02T14:30:00Z"})) == []


@pytest.mark.parametrize(("params", "field"), [({"since": "yesterday"}, "since"), ({"account": "abc"}, "account")])
def test_bad_trade_filters_are_400_naming_the_field(api, journal, params, field):
    response = api.get("/api/trades/", params)
    assert response.status_code == 400 and list(response.json()) == [field]


def test_trades_cursor_pagination_walks_every_trade_once(api, journal):
    seen, url = [], "/api/trades/?page_size=2"
    while url:
        page = api.get(url).json()
        assert "count" not in page and len(page["results"]) <= 2
        seen += [t["broker_trade_id"] for t in page["results"]]
        url = page["next"]
    assert seen == ["es-1", "msft-1", "aapl-2", "aapl-1"]


# --- tenant isolation -------------------------------------------------------------------------


def test_a_trader_never_reaches_another_traders_objects(other_api, connection):
    pk = connection.pk
    before = task_state(pk)
    runs = connection.sync_logs.count()
    assert other_api.get("/api/connections/").json() == []
    assert other_api.get(f"/api/connections/{pk}/").status_code == 404
    assert other_api.patch(f"/api/connections/{pk}/", {"sync_interval_min": 30}, format="json").status_code == 404
    assert other_api.delete(f"/api/connections/{pk}/").status_code == 404
    assert other_api.post(f"/api/connections/{pk}/sync/").status_code == 404
    assert other_api.get(f"/api/connections/{pk}/logs/").status_code == 404
    assert other_api.get("/api/trades/").json()["results"] == []
    assert other_api.get("/api/trades/", {"connection": pk}).json()["results"] == []
    account = connection.accounts.first()
    assert other_api.get("/api/trades/", {"account": account.pk}).json()["results"] == []
    connection.refresh_from_db()
    assert connection.sync_interval_min == 15 and task_state(pk) == before
    assert connection.sync_logs.count() == runs
    assert Trade.objects.filter(account__connection=connection).exists()


# --- providers, schema, secrets ---------------------------------------------------------------


def test_providers_list_their_environments_and_credential_fields(api):
    response = api.get("/api/providers/")
    assert response.status_code == 200
    providers = {p["key"]: p for p in response.json()}
    assert {"demo", "alpaca", "ibkr_flex", "tradovate"} <= set(providers)
    demo = providers["demo"]
    assert demo["display_name"] == "Demo broker (simulated)" and demo["environments"] == []
    api_key, scenario = demo["credential_fields"]
    assert api_key["name"] == "api_key" and api_key["secret"] is True and api_key["required"] is True
    assert api_key["label"] == "Demo API key" and api_key["help_text"] and api_key["choices"] == []
    assert (
        scenario["required"] is False and {"value": "auth_error", "label": "Refuses the login"} in scenario["choices"]
    )
    assert providers["alpaca"]["environments"] == [
        {"value": "paper", "label": "Paper trading"},
        {"value": "live", "label": "Live"},
    ]


def test_providers_serve_the_pickers_catalogue_by_the_names_traders_know(api):
    providers = {p["key"]: p for p in api.get("/api/providers/").json()}
    topstep = next(b for b in providers["projectx"]["brokerages"] if b["name"] == "Topstep (TopstepX)")
    assert topstep == {
        "name": "Topstep (TopstepX)",
        "listed_as": "Topstep (TopstepX)",
        "counted_under": "ProjectX firms",
        "market": "futures",
        "connects": "API key",
        "needs": "Your ProjectX username and an API key from Topstep (TopstepX) (the firm must enable API access).",
        "query": {"firm": "topstep"},
        "add_url": "/brokers/add/?broker=projectx&firm=topstep",
    }
    # The demo broker is one brokerage; its scenarios stay choices of its field.
    assert [b["name"] for b in providers["demo"]["brokerages"]] == ["Demo broker"]
    robinhood = next(b for b in providers["snaptrade"]["brokerages"] if b["name"] == "Robinhood")
    assert robinhood["connects"] == "Through SnapTrade" and robinhood["query"] == {"brokerage": "ROBINHOOD"}
    # Tradovate's two ways in reach the same brokerages: NinjaTrader's accounts and the prop firms whose
    # accounts are Tradovate accounts among them, a firm ProjectX counted under its ProjectX name.
    signin, api_key = (providers[key]["brokerages"] for key in ("tradovate_signin", "tradovate"))
    assert [b["name"] for b in signin] == [b["name"] for b in api_key]
    assert {"NinjaTrader brokerage (through Tradovate)", "Tradovate"} <= {b["name"] for b in signin}
    apex = next(b for b in signin if b["name"] == "Apex Trader Funding")
    assert apex["counted_under"] == "Tradovate prop firms" and apex["connects"] == "Sign in at the broker"
    topstep = next(b for b in signin if b["listed_as"] == "Topstep")
    assert topstep["name"] == "Topstep (TopstepX)" and topstep["counted_under"] == "ProjectX firms"
    # A venue's other market is a way into the venue, counted once, under the first route reaching it.
    coin_m = providers["ccxt_binancecoinm"]["brokerages"]
    assert [(b["name"], b["listed_as"], b["counted_under"]) for b in coin_m] == [("Binance", "Binance COIN-M", "ccxt")]
    alpaca = next(b for b in providers["snaptrade"]["brokerages"] if b["name"] == "Alpaca")
    assert alpaca["counted_under"] == "direct"
    assert {b["market"] for p in providers.values() for b in p["brokerages"]} == {
        "futures",
        "stocks",
        "crypto",
        "forex",
    }


def test_schema_renders_and_docs_page_answers(anonymous):
    schema = anonymous.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in (
        "/api/connections/",
        "/api/connections/{id}/sync/",
        "/api/connections/{id}/logs/",
        "/api/trades/",
        "/api/providers/",
    ):
        assert path in text
    assert anonymous.get("/api/docs/").status_code == 200


def test_credentials_never_appear_in_any_response(api, other_api):
    created = api.post(
        "/api/connections/",
        {"broker_type": "demo", "label": "Secret", "credentials": {"api_key": SECRET}},
        format="json",
    )
    pk = created.json()["id"]
    api.get("/api/connections/")
    api.get(f"/api/connections/{pk}/")
    api.patch(f"/api/connections/{pk}/", {"label": "Still secret", "sync_interval_min": 10}, format="json")
    api.patch(f"/api/connections/{pk}/", {"credentials": {"api_key": OTHER_SECRET}}, format="json")
    api.patch(f"/api/connections/{pk}/", {"credentials": {"api_key": SECRET, "extra": SECRET}}, format="json")
    api.patch(f"/api/connections/{pk}/", {"credentials": {"scenario": SECRET}}, format="json")
    api.post(
        "/api/connections/", {"broker_type": "demo", "label": "", "credentials": {"api_key": SECRET}}, format="json"
    )
    api.post(
        "/api/connections/", {"broker_type": "demo", "label": "x", "credentials": {"api_key": [SECRET]}}, format="json"
    )
    api.post(
        "/api/connections/",
        {"broker_type": "demo", "label": "x", "credentials": {"api_key": SECRET}, "sync_interval_min": 3},
        format="json",
    )
    # A browser asking for HTML still gets no form that echoes what was typed.
    api.post(
        "/api/connections/",
        {"broker_type": "demo", "label": "", "credentials": {"api_key": SECRET}},
        format="json",
        HTTP_ACCEPT="text/html",
    )
    api.post(f"/api/connections/{pk}/sync/")
    api.get(f"/api/connections/{pk}/logs/")
    api.get("/api/trades/")
    api.get("/api/providers/")
    api.get("/api/schema/")
    other_api.get(f"/api/connections/{pk}/")
    assert len(api.bodies) == 16
    assert_no_secret(api)
    assert_no_secret(other_api)
    assert BrokerConnection.objects.get(pk=pk).credentials == {"api_key": OTHER_SECRET}
