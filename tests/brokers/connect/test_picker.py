"""The broker picker at /brokers/add/: every brokerage once, grouped by market, filtered by ?q= with or
without htmx, and each entry leading to its broker's add page with the firm or brokerage chosen."""

import html
import re

import pytest

from brokers.models import SnapTradeUser
from tests.fakes.metaapi import MetaApiSim
from tests.fakes.metaapi import configure as use_metaapi
from tests.fakes.snaptrade import SnapTradeSim
from tests.fakes.snaptrade import configure as use_snaptrade

pytestmark = pytest.mark.django_db

ENTRY = re.compile(
    r'<a class="picker-way" href="([^"]+)"><span class="picker-name">([^<]+)</span> '
    r'<span class="picker-how">([^<]+)</span></a>'
)


def entries(response) -> list[tuple[str, str, str]]:
    """(name, how it connects, link) of each link in the list, as the trader reads them."""
    assert response.status_code == 200
    return entries_in(response.content.decode())


def entries_in(text: str) -> list[tuple[str, str, str]]:
    return [(html.unescape(name), how, html.unescape(href)) for href, name, how in ENTRY.findall(text)]


def names(response) -> set[str]:
    return {name for name, _, _ in entries(response)}


def test_the_picker_lists_each_kind_of_brokerage_once_grouped_by_what_it_trades(trader_client):
    page = trader_client.get("/brokers/add/")
    text = page.content.decode()
    for group in ("Futures", "Stocks &amp; options", "Crypto", "Forex &amp; CFD"):
        assert re.search(rf"<h2 [^>]*>{group} <span", text)
    found = entries(page)
    assert [e for e in found if e[0] == "Demo broker"] == [("Demo broker", "API key", "/brokers/add/?broker=demo")]
    # The demo scenarios are a field of the demo broker, not entries.
    assert "Refuses the login" not in text and "Stocks account unavailable" not in text
    assert [(how, link) for name, how, link in found if name == "Tradovate"] == [
        ("API key", "/brokers/add/?broker=tradovate"),
        ("Sign in at the broker", "/brokers/add/?broker=tradovate_signin"),
    ]
    assert [how for name, how, _ in found if name == "NinjaTrader brokerage (through Tradovate)"] == [
        "API key",
        "Sign in at the broker",
    ]
    assert ("MetaTrader 4/5 — any broker", "Through MetaApi", "/brokers/add/?broker=metatrader") in found
    # One venue is one entry, each way in named as it is on its route: Binance's other markets...
    binance = entry_of(text, "Binance")
    assert [(name, how) for name, how, _ in binance] == [
        ("Binance", "API key"),
        ("Binance COIN-M", "API key"),
        ("Binance USDⓈ-M", "API key"),
        ("Binance", SNAP),
    ]
    assert binance[0] == ("Binance", "API key", "/brokers/add/?broker=ccxt_binance")
    # SnapTrade's Coinbase is the account ccxt trades as Coinbase Advanced: one venue.
    assert [(name, how) for name, how, _ in entry_of(text, "Coinbase Advanced")][-1] == ("Coinbase", SNAP)
    # ...and a brokerage reached by several routes, Alpaca's crypto exchange included.
    assert [(name, how) for name, how, _ in entry_of(text, "Alpaca")] == [
        ("Alpaca", "API key"),
        ("Alpaca", "Sign in at the broker"),
        ("Alpaca Crypto", "API key"),
        ("Alpaca", SNAP),
    ]
    assert [how for _, how, _ in entry_of(text, "Interactive Brokers")] == ["API key", SNAP]
    assert "You need: Your ProjectX username and an API key from Bulenox" in text
    # A prop firm whose accounts are Tradovate accounts: signing in at Tradovate with the firm's login.
    assert entry_of(text, "Apex Trader Funding")[0] == (
        "Apex Trader Funding",
        "Sign in at the broker",
        "/brokers/add/?broker=tradovate_signin",
    )
    assert "You need: The Tradovate login Apex Trader Funding gave you." in text


def entry_of(text: str, name: str) -> list[tuple[str, str, str]]:
    """The ways into the one entry whose first way is named `name`."""
    for item in text.split('<li class="picker-entry">')[1:]:
        ways = entries_in(item)
        if ways and ways[0][0] == name:
            return ways
    raise AssertionError(f"no entry {name}")


SNAP = "Through SnapTrade"


def test_typing_tops_finds_topstepx_and_choosing_it_preselects_the_firm(trader_client):
    found = entries(trader_client.get("/brokers/add/", {"q": "tops"}))
    # One entry: the firm's ProjectX platform, then its Tradovate accounts (a prop firm on Tradovate).
    assert found == [
        ("Topstep (TopstepX)", "API key", "/brokers/add/?broker=projectx&firm=topstep"),
        ("Topstep", "Sign in at the broker", "/brokers/add/?broker=tradovate_signin"),
        ("Topstep", "API key", "/brokers/add/?broker=tradovate"),
    ]
    form = trader_client.get(found[0][2]).content.decode()
    assert "Connect ProjectX" in form and '<a href="/brokers/add/">Search all brokers</a>' in form
    assert re.search(r'<option value="topstep" selected>Topstep \(TopstepX\)</option>', form)


def test_typing_tradovate_lists_tradovate_before_the_prop_firms_found_by_their_note(trader_client):
    found = [name for name, _, _ in entries(trader_client.get("/brokers/add/", {"q": "tradovate"}))]
    named = ["NinjaTrader brokerage (through Tradovate)"] * 2 + ["Tradovate"] * 2
    assert found[:4] == named
    assert "Apex Trader Funding" in found[4:] and "Take Profit Trader" in found[4:]


def test_robin_finds_robinhood_through_snaptrade_whose_page_names_it(trader_client):
    found = entries(trader_client.get("/brokers/add/", {"q": "robin"}))
    assert found == [("Robinhood", SNAP, "/brokers/add/?broker=snaptrade&brokerage=ROBINHOOD")]
    page = trader_client.get(found[0][2]).content.decode()
    assert "Connect Robinhood through SnapTrade" in page
    # No key here yet: saving a Personal key comes back to Robinhood.
    assert '<input type="hidden" name="brokerage" value="ROBINHOOD">' in page


def test_with_a_snaptrade_key_the_picker_keeps_the_documented_list_and_the_snaptrade_page_the_live_one(
    trader_client, settings
):
    with SnapTradeSim() as sim:
        use_snaptrade(settings, sim)
        found = entries(trader_client.get("/brokers/add/", {"q": "snaptrade"}))
        page = trader_client.get("/brokers/add/", {"broker": "snaptrade", "brokerage": "ROBINHOOD"})
    # The picker counts what every installation reaches: SnapTrade's documented brokerages, Trading 212
    # too, which this simulator does not offer.
    assert ("Robinhood", SNAP, "/brokers/add/?broker=snaptrade&brokerage=ROBINHOOD") in found
    assert "Trading 212" in {name for name, _, _ in found}
    assert "free SnapTrade Personal key" not in page.content.decode()
    assert 'href="/brokers/snaptrade/connect/?brokerage=ROBINHOOD">Connect Robinhood through SnapTrade' in (
        page.content.decode()
    )
    assert not SnapTradeUser.objects.exists()


def test_ic_mark_finds_metatrader_whose_server_search_finds_ic_markets(trader_client, settings):
    page = trader_client.get("/brokers/add/", {"q": "ic mark"})
    assert entries(page) == [("MetaTrader 4/5 — any broker", "Through MetaApi", "/brokers/add/?broker=metatrader")]
    assert "any MetaTrader broker" in page.content.decode()
    settings.BROKER_HTTP_RETRY_BACKOFF_S = 0
    with MetaApiSim() as sim:
        use_metaapi(settings, sim)
        form = trader_client.get("/brokers/add/?broker=metatrader").content.decode()
        assert 'hx-get="/brokers/metatrader/suggest/server/"' in form
        servers = trader_client.get(
            "/brokers/metatrader/suggest/server/", {"cred_server": "ic mark", "cred_platform": "mt5"}
        ).json()["suggestions"]
    assert {"value": "ICMarketsSC-MT5", "label": "Raw Trading Ltd"} in servers


def test_as_the_trader_types_htmx_gets_just_the_filtered_list(trader_client):
    fragment = trader_client.get("/brokers/add/", {"q": "kraken"}, HTTP_HX_REQUEST="true")
    text = fragment.content.decode()
    assert "<html" not in text and 'role="search"' not in text
    assert names(fragment) == {"Kraken", "Kraken Futures"}
    assert re.search(r"2 of \d+ named brokerages match “kraken”", text)
    # Without htmx the same address is the whole page, the search box keeping what was typed.
    page = trader_client.get("/brokers/add/", {"q": "kraken"}).content.decode()
    assert (
        'role="search"' in page
        and 'value="kraken"' in page
        and names(fragment) == names(trader_client.get("/brokers/add/", {"q": "kraken"}))
    )


def test_a_broker_nobody_lists_is_offered_the_metatrader_route(trader_client):
    page = trader_client.get("/brokers/add/", {"q": "zzzq"})
    text = page.content.decode()
    assert "0 of" in text and "If your broker offers MetaTrader 4 or 5" in text
    assert names(page) == {"MetaTrader 4/5 — any broker"}


def test_only_installed_providers_are_offered(trader_client, settings):
    settings.BROKER_PROVIDERS = ["demo", "projectx"]
    found = names(trader_client.get("/brokers/add/"))
    assert "Demo broker" in found and "Bulenox" in found
    assert not {"Robinhood", "Binance", "Alpaca", "MetaTrader 4/5 — any broker"} & found


def test_a_secret_never_comes_preset_from_the_address(trader_client):
    form = trader_client.get("/brokers/add/", {"broker": "demo", "api_key": "from-a-link", "scenario": "broker_down"})
    text = form.content.decode()
    assert "from-a-link" not in text
    assert '<option value="broker_down" selected>Down</option>' in text
