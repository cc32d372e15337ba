"""The one list of brokerages (brokers/catalogue.py): every provider is a way into it, and the picker,
/api/providers/ and `manage.py list_brokers` show the same brokerages with the same count."""

import re
from io import StringIO

import pytest
from django.core.management import call_command

from brokers.catalogue import API_KEY, METATRADER, PROJECTX, SIGN_IN, TRADOVATE_FIRMS, catalogue
from brokers.providers.registry import shipped_providers

pytestmark = pytest.mark.django_db


def test_every_provider_we_ship_is_a_way_into_a_brokerage(settings):
    settings.BROKER_PROVIDERS = list(shipped_providers())
    ways = {way.provider for brokerage in catalogue().brokerages for way in brokerage.ways}
    # A provider of our own missing from OWN_PROVIDERS would not get here: the catalogue raises KeyError.
    assert ways == set(shipped_providers())


def test_the_picker_the_api_and_list_brokers_show_the_same_brokerages(trader_client):
    out = StringIO()
    call_command("list_brokers", stdout=out)
    printed = out.getvalue()
    total = int(re.search(r"^Total: (\d+) named brokerages$", printed, re.MULTILINE).group(1))
    counted = {line.strip() for line in printed.splitlines() if line.startswith("  ") and "also reached" not in line}
    counted.discard("any MT4/MT5 broker (not counted: one route, not a named brokerage)")
    assert len(counted) == total

    served = [b for p in trader_client.get("/api/providers/").json() for b in p["brokerages"]]
    assert {b["name"] for b in served if b["counted_under"]} == counted
    assert {b["name"] for b in served if not b["counted_under"]} == {"Demo broker", METATRADER}

    page = trader_client.get("/brokers/add/").content.decode()
    assert f"{total} named brokerages, and any MetaTrader 4/5 broker." in page
    # Each counted brokerage once, beside the demo broker and MetaTrader.
    assert page.count('<li class="picker-entry">') == total + 2


def test_a_prop_firm_on_tradovate_is_counted_under_its_route_with_the_sign_in_first():
    found = catalogue()
    (firm,) = [b for b in found.brokerages if b.name == "Take Profit Trader"]
    assert firm.counted_under == TRADOVATE_FIRMS and firm.market == "futures"
    assert [(w.provider, w.how) for w in firm.ways] == [("tradovate_signin", SIGN_IN), ("tradovate", API_KEY)]
    assert firm.ways[0].needs == "The Tradovate login Take Profit Trader gave you."
    assert "UNCONFIRMED" in firm.ways[1].needs
    assert firm.note == "A futures prop firm whose accounts are Tradovate accounts."
    assert "Take Profit Trader" in found.routes[TRADOVATE_FIRMS]


def test_a_firm_reached_through_projectx_and_tradovate_counts_once():
    found = catalogue()
    # Topstep's Tradovate accounts are the firm ProjectX lists as "Topstep (TopstepX)" (SAME_AS).
    (topstep,) = [b for b in found.brokerages if "topstep" in b.name.lower()]
    assert topstep.name == "Topstep (TopstepX)" and topstep.counted_under == PROJECTX
    assert [(w.provider, w.name) for w in topstep.ways] == [
        ("projectx", "Topstep (TopstepX)"),
        ("tradovate_signin", "Topstep"),
        ("tradovate", "Topstep"),
    ]
    assert {"TickTickTrader", "Topstep", "TradeDay"} <= set(found.also[TRADOVATE_FIRMS])
    assert not {"Topstep", "TickTickTrader", "TradeDay"} & set(found.routes[TRADOVATE_FIRMS])


def test_without_the_api_key_provider_a_prop_firm_is_reached_by_signing_in_only(settings):
    settings.BROKER_PROVIDERS = [key for key in shipped_providers() if key != "tradovate"]
    (firm,) = [b for b in catalogue().brokerages if b.name == "Apex Trader Funding"]
    assert [w.provider for w in firm.ways] == ["tradovate_signin"]
