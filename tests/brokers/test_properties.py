"""Property-based tests (hypothesis) of the forms and commands: any input is either accepted as
typed, or refused with a message naming the field, and a refused one changes nothing.

These run inside one transaction per test (no transaction=True): nothing commits, so no
sync is ever queued and each example is cheap.
"""

import string
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from brokers import services
from brokers.forms import CREDENTIAL_PREFIX
from brokers.models import BrokerConnection
from brokers.providers.text import has_control_characters

pytestmark = pytest.mark.django_db

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True
)
# Every kind of character a form can receive: control characters, other scripts' digits ("²",
# "٣"), separators, and long runs of digits.
ANY_TEXT = (
    st.text(max_size=40) | st.text(string.digits, min_size=1, max_size=5000) | st.sampled_from(["²", "٣", "\u2028"])
)
NUMBERISH = st.integers(-(10**30), 10**30).map(str) | ANY_TEXT


@pytest.fixture
def page(trader):
    client = Client()
    client.force_login(trader)
    return client


def refused_fields(response) -> set[str]:
    form = response.context["form"]
    assert form.errors, "a refused form says why"
    assert set(form.errors) <= set(form.fields), f"every message names a field: {set(form.errors)}"
    return set(form.errors)


@PROPERTY_SETTINGS
@given(label=ANY_TEXT, interval=NUMBERISH, cid=ANY_TEXT, environment=ANY_TEXT, app_version=ANY_TEXT)
@example(label="Futures", interval="15", cid="²", environment="demo", app_version="1.0")
@example(label="Fut\r\nBcc: x", interval="15", cid="42", environment="demo", app_version="1.0")
@example(label="Futures", interval="9" * 5000, cid="9" * 5000, environment="live", app_version="1.0")
def test_the_add_form_accepts_as_typed_or_refuses_naming_the_field(
    page, label, interval, cid, environment, app_version
):
    before = BrokerConnection.objects.count()
    data = {
        "broker_type": "tradovate",
        "label": label,
        "sync_interval_min": interval,
        "environment": environment,
        f"{CREDENTIAL_PREFIX}username": "jdoe",
        f"{CREDENTIAL_PREFIX}password": "pw",
        f"{CREDENTIAL_PREFIX}app_id": "TJ",
        f"{CREDENTIAL_PREFIX}app_version": app_version,
        f"{CREDENTIAL_PREFIX}cid": cid,
        f"{CREDENTIAL_PREFIX}sec": "sec",
    }
    response = page.post("/brokers/add/?broker=tradovate", data)
    if response.status_code == 302:
        created = BrokerConnection.objects.latest("pk")
        assert BrokerConnection.objects.count() == before + 1
        assert created.label == label.strip() and created.sync_interval_min == int(interval)
        assert created.environment == environment and created.credentials["cid"] == cid.strip()
        created.delete()
    else:
        assert response.status_code == 200
        refused_fields(response)
        assert BrokerConnection.objects.count() == before


@PROPERTY_SETTINGS
@given(expires_on=ANY_TEXT | st.dates().map(str), query_id=ANY_TEXT)
@example(expires_on="9999-12-31", query_id="1")
def test_the_flex_form_accepts_as_typed_or_refuses_naming_the_field(page, expires_on, query_id):
    data = {
        "broker_type": "ibkr_flex",
        "label": "Flex",
        "sync_interval_min": "15",
        f"{CREDENTIAL_PREFIX}token": "token",
        f"{CREDENTIAL_PREFIX}query_id": query_id,
        f"{CREDENTIAL_PREFIX}token_expires_on": expires_on,
    }
    response = page.post("/brokers/add/?broker=ibkr_flex", data)
    if response.status_code == 302:
        created = BrokerConnection.objects.get()
        assert created.credentials.get("token_expires_on", "") == expires_on.strip()
        created.delete()
    else:
        assert response.status_code == 200
        refused_fields(response)
        assert not BrokerConnection.objects.exists()


@PROPERTY_SETTINGS
@given(enabled=st.sampled_from(["on", "", "off", "²", "true"]), interval=NUMBERISH)
def test_the_sync_settings_form_applies_as_typed_or_changes_nothing(trader, settings, enabled, interval):
    settings.SYNC_NOW_RATE_LIMIT = "100000/m"
    page = Client()  # a fresh session: no message left over from the last example
    page.force_login(trader)
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="Demo", credentials={"api_key": "k"}, sync_enabled=False
    )
    response = page.post(
        f"/brokers/{connection.pk}/settings/", {"sync_enabled": enabled, "sync_interval_min": interval}
    )
    assert response.status_code == 302
    after = BrokerConnection.objects.get(pk=connection.pk)
    messages = [m.message for m in response.wsgi_request._messages]
    if any(m.startswith("Saved") for m in messages):
        assert after.sync_interval_min == int(interval) and after.sync_enabled == bool(enabled)
    else:
        assert messages and all("Sync interval" in m for m in messages), messages
        assert (after.sync_interval_min, after.sync_enabled) == (15, False)
    connection.delete()


@PROPERTY_SETTINGS
@given(
    date_from=ANY_TEXT | st.dates().map(str),
    date_to=ANY_TEXT | st.dates().map(str),
    account=NUMBERISH,
    page_no=NUMBERISH,
)
@example(date_from="", date_to="9999-12-31", account="", page_no="1")
@example(date_from="0001-01-01", date_to="", account="9" * 30, page_no="-1")
def test_the_trades_filter_never_fails(page, date_from, date_to, account, page_no):
    response = page.get("/trades/", {"date_from": date_from, "date_to": date_to, "account": account, "page": page_no})
    assert response.status_code == 200
    form = response.context["form"]
    assert set(form.errors) <= set(form.fields)


@PROPERTY_SETTINGS
@given(label=ANY_TEXT, interval=NUMBERISH, environment=ANY_TEXT)
@example(label="Evil\nlabel", interval="15", environment="")
@example(label="Demo", interval="²", environment="")
def test_create_connection_creates_as_typed_or_refuses_naming_the_field(trader, label, interval, environment):
    options = [f"--label={label}", f"--interval={interval}", f"--environment={environment}", "--field=scenario=normal"]
    out = StringIO()
    try:
        call_command(
            "create_connection", "--owner=alice", "--broker=demo", "--disabled", "--no-input", *options, stdout=out
        )
    except CommandError as exc:
        message = str(exc)
        assert any(f"{name}:" in message for name in ("label", "sync_interval_min", "environment", "api_key")), message
        assert not has_control_characters(message), "a refusal prints safely"
        assert not BrokerConnection.objects.exists()
    else:
        created = BrokerConnection.objects.get()
        assert created.label == label.strip() and created.sync_interval_min == int(interval)
        assert not has_control_characters(out.getvalue())
        created.delete()


@PROPERTY_SETTINGS
# Any text a database can hold (PostgreSQL refuses NUL in text columns).
@given(
    label=st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40),
    error=st.text(st.characters(exclude_characters="\x00"), max_size=60),
)
def test_sync_status_prints_any_stored_text_safely(trader, label, error):
    connection = services.connection_create(
        owner=trader, broker_type="demo", label="x", credentials={"api_key": "k"}, sync_enabled=False
    )
    # Rows written before the rule (or by SQL) may hold anything.
    BrokerConnection.objects.filter(pk=connection.pk).update(label=label, last_sync_error=error)
    out = StringIO()
    call_command("sync_status", stdout=out)
    assert not has_control_characters(out.getvalue().replace("\n", ""))
    connection.delete()
