"""Exchanges answering in their documented formats, for the ccxt family's tests (mocked with `responses`).

Each fake holds a list of fills and answers the trade-history request from the query the
exchange documents (Kraken `end` in seconds, newest first, 50 a page; Binance `endTime`,
oldest first from the end of the window, per symbol; OKX `end`, newest first, 100 a page).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import responses

from tests.providers.contract import SECRET_MARK, SINCE, UNTIL

API_KEY = f"key-{SECRET_MARK}"
# Kraken and OKX sign with the secret; Kraken's is base64, so the mark is inside the decoded text.
SECRET = base64.b64encode(f"secret-{SECRET_MARK}-0123456789abcdef".encode()).decode()
PASSPHRASE = f"pass-{SECRET_MARK}"


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def spread(n: int, start: datetime = SINCE, end: datetime = UNTIL) -> list[int]:
    """n fill times in ms, evenly inside (start, end)."""
    step = (ms(end) - ms(start)) // (n + 1)
    return [ms(start) + step * (i + 1) for i in range(n)]


def query(request) -> dict[str, str]:
    source = request.body if request.method == "POST" and request.body else urlparse(request.url).query
    if isinstance(source, bytes):
        source = source.decode()
    return {k: v[0] for k, v in parse_qs(source).items()}


class Kraken:
    base = "https://api.kraken.com/0"
    page_size = 50

    def __init__(self, fills_ms: list[int]):
        self.fills = [
            {
                "ordertxid": f"OQCLML-BW3P3-{i:06d}",
                "postxid": "TKH2SE-M7IF5-CFI7LT",
                "pair": "XXBTZUSD",
                "time": t / 1000,
                "type": "buy" if i % 2 == 0 else "sell",
                "ordertype": "limit",
                "price": "30010.10000",
                "cost": "600.20200",
                "fee": "0.96032",
                "vol": "0.02000000",
                "margin": "0.00000",
                "misc": "",
                "trade_id": 40274859 + i,
                "maker": i % 3 == 0,
            }
            for i, t in enumerate(fills_ms)
        ]

    def stub_markets(self, rsps):
        # Kraken's markets carry helper data (marketHelperProps), so they load as ccxt loads
        # them: currencies first.
        assets = {
            "XXBT": {
                "aclass": "currency",
                "altname": "XBT",
                "decimals": 10,
                "display_decimals": 5,
                "status": "enabled",
            },
            "ZUSD": {"aclass": "currency", "altname": "USD", "decimals": 4, "display_decimals": 2, "status": "enabled"},
        }
        rsps.get(f"{self.base}/public/Assets", json={"error": [], "result": assets})
        rsps.get(
            f"{self.base}/public/AssetPairs",
            json={
                "error": [],
                "result": {
                    "XXBTZUSD": {
                        "altname": "XBTUSD",
                        "wsname": "XBT/USD",
                        "aclass_base": "currency",
                        "base": "XXBT",
                        "aclass_quote": "currency",
                        "quote": "ZUSD",
                        "lot": "unit",
                        "cost_decimals": 5,
                        "pair_decimals": 1,
                        "lot_decimals": 8,
                        "lot_multiplier": 1,
                        "leverage_buy": [2, 3, 4, 5],
                        "leverage_sell": [2, 3, 4, 5],
                        "fees": [[0, 0.26], [50000, 0.24]],
                        "fees_maker": [[0, 0.16], [50000, 0.14]],
                        "fee_volume_currency": "ZUSD",
                        "margin_call": 80,
                        "margin_stop": 40,
                        "ordermin": "0.0001",
                        "costmin": "0.5",
                        "tick_size": "0.1",
                        "status": "online",
                    }
                },
            },
        )

    def stub_balance(self, rsps, **answer):
        held = {
            "ZUSD": {"balance": "25435.21", "hold_trade": "8249.76"},
            "XXBT": {"balance": "1.2435", "hold_trade": "0"},
        }
        rsps.post(f"{self.base}/private/BalanceEx", **(answer or {"json": {"error": [], "result": held}}))

    def stub_trades(self, rsps):
        def answer(request):
            end_s = float(query(request).get("end", "1e12"))
            older = sorted((f for f in self.fills if f["time"] <= end_s), key=lambda f: f["time"], reverse=True)
            page = older[: self.page_size]
            trades = {f"T{f['trade_id']}-KRAKN-{f['trade_id']:06d}": f for f in page}
            return 200, {}, json.dumps({"error": [], "result": {"trades": trades, "count": len(older)}})

        rsps.add_callback(responses.POST, f"{self.base}/private/TradesHistory", callback=answer)

    def refused(self):
        return {"json": {"error": ["EAPI:Invalid key"], "result": {}}}

    def rate_limited(self):
        return {"json": {"error": ["EAPI:Rate limit exceeded"]}}

    def maintenance(self):
        return {"json": {"error": ["EService:Unavailable"]}}

    def server_error(self):
        return {"status": 500, "body": "<html><body>500 Internal Server Error</body></html>"}


class Binance:
    base = "https://api.binance.com/api/v3"

    def __init__(self, fills_ms: list[int], symbols=("BTCUSDT", "ETHUSDT")):
        self.symbols = symbols
        self.fills = {
            symbol: [
                {
                    "symbol": symbol,
                    "id": 28457 + i,  # numbered per symbol, as Binance does
                    "orderId": 100234 + i,
                    "orderListId": -1,
                    "price": "4.00000100",
                    "qty": "12.00000000",
                    "quoteQty": "48.000012",
                    "commission": "10.10000000",
                    "commissionAsset": "BNB",
                    "time": t,
                    "isBuyer": i % 2 == 0,
                    "isMaker": False,
                    "isBestMatch": True,
                }
                for i, t in enumerate(fills_ms)
            ]
            for symbol in symbols
        }

    @staticmethod
    def market(symbol, base, quote):
        return {
            "symbol": symbol,
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00", "tickSize": "0.01"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000.00", "stepSize": "0.00001"},
            ],
            "permissions": [],
            "permissionSets": [["SPOT", "MARGIN"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }

    def stub_markets(self, rsps):
        symbols = [
            self.market("BTCUSDT", "BTC", "USDT"),
            self.market("ETHUSDT", "ETH", "USDT"),
            self.market("SOLUSDT", "SOL", "USDT"),
        ]
        rsps.get(f"{self.base}/exchangeInfo", json={"timezone": "UTC", "serverTime": 1, "symbols": symbols})
        # With an API key, ccxt also reads which pairs allow (cross and isolated) margin.
        margin = [
            {
                "base": "BTC",
                "id": 351637150141315861,
                "isBuyAllowed": True,
                "isMarginTrade": True,
                "isSellAllowed": True,
                "quote": "USDT",
                "symbol": "BTCUSDT",
            }
        ]
        rsps.get("https://api.binance.com/sapi/v1/margin/allPairs", json=margin)
        rsps.get("https://api.binance.com/sapi/v1/margin/isolated/allPairs", json=[])
        rsps.get("https://fapi.binance.com/fapi/v1/exchangeInfo", json={"timezone": "UTC", "symbols": []})
        rsps.get("https://dapi.binance.com/dapi/v1/exchangeInfo", json={"timezone": "UTC", "symbols": []})

    def stub_balance(self, rsps, **answer):
        balances = [
            {"asset": "BTC", "free": "0.50000000", "locked": "0.00000000"},
            {"asset": "ETH", "free": "0.00000000", "locked": "2.00000000"},
            {"asset": "USDT", "free": "1000.00000000", "locked": "0.00000000"},
            {"asset": "SOL", "free": "0.00000000", "locked": "0.00000000"},
        ]
        payload = {
            "makerCommission": 10,
            "takerCommission": 10,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "updateTime": 123456789,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
        }
        rsps.get(f"{self.base}/account", **(answer or {"json": payload}))

    def stub_trades(self, rsps):
        def answer(request):
            q = query(request)
            limit = int(q.get("limit", 500))
            start, end = int(q.get("startTime", 0)), int(q.get("endTime", 10**15))
            window = [f for f in self.fills[q["symbol"]] if start <= f["time"] <= end]
            # From a start time, Binance answers the first `limit` fills after it; with an end
            # time alone, the last `limit` before it; oldest first either way.
            return 200, {}, json.dumps(window[:limit] if "startTime" in q else window[-limit:])

        rsps.add_callback(responses.GET, f"{self.base}/myTrades", callback=answer)

    def refused(self):
        return {"status": 401, "json": {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}}

    def rate_limited(self):
        return {"status": 429, "json": {"code": -1003, "msg": "Too many requests."}, "headers": {"Retry-After": "120"}}

    def maintenance(self):
        return {"status": 503, "json": {"code": -1008, "msg": "Server is currently overloaded."}}

    def server_error(self):
        return {"status": 500, "body": "Internal Server Error"}


def okx_fill(i: int, t_ms: int, inst_id: str = "BTC-USDT", inst_type: str = "SPOT") -> dict:
    """One fill of OKX's GET /api/v5/trade/fills-history; fees are negative when charged."""
    return {
        "side": "buy" if i % 2 == 0 else "sell",
        "fillSz": "0.00192834" if inst_type == "SPOT" else "3",
        "fillPx": "51858",
        "fillPxVol": "",
        "fillFwdPx": "",
        "fee": "-0.00000192834" if inst_type == "SPOT" else "-0.0155574",
        "fillPnl": "0",
        "ordId": f"6808000197499{i:05d}",
        "feeRate": "-0.001",
        "instType": inst_type,
        "fillPxUsd": "",
        "instId": inst_id,
        "clOrdId": "",
        "posSide": "net",
        "billId": f"6808000197540{i:05d}",
        "subType": "1",
        "fillMarkVol": "",
        "tag": "",
        "fillTime": str(t_ms),
        "execType": "T",
        "fillIdxPx": "",
        "tradeId": str(744876980 + i),
        "fillMarkPx": "",
        "feeCcy": "BTC" if inst_type == "SPOT" else "USDT",
        "ts": str(t_ms + 1),
    }


OKX_SPOT = {
    "alias": "",
    "baseCcy": "BTC",
    "category": "1",
    "ctMult": "",
    "ctType": "",
    "ctVal": "",
    "ctValCcy": "",
    "expTime": "",
    "instFamily": "",
    "instId": "BTC-USDT",
    "instType": "SPOT",
    "lever": "10",
    "listTime": "1606468572000",
    "lotSz": "0.00000001",
    "maxIcebergSz": "9999999999.0000000000000000",
    "maxLmtAmt": "1000000",
    "maxLmtSz": "9999999999",
    "maxMktAmt": "1000000",
    "maxMktSz": "",
    "maxStopSz": "",
    "maxTriggerSz": "9999999999.0000000000000000",
    "maxTwapSz": "9999999999.0000000000000000",
    "minSz": "0.00001",
    "optType": "",
    "quoteCcy": "USDT",
    "settleCcy": "",
    "state": "live",
    "stk": "",
    "tickSz": "0.1",
    "uly": "",
}
OKX_SWAP = {
    **OKX_SPOT,
    "baseCcy": "",
    "quoteCcy": "",
    "instId": "BTC-USDT-SWAP",
    "instType": "SWAP",
    "instFamily": "BTC-USDT",
    "uly": "BTC-USDT",
    "settleCcy": "USDT",
    "ctVal": "0.01",
    "ctMult": "1",
    "ctValCcy": "BTC",
    "ctType": "linear",
    "lever": "100",
    "lotSz": "1",
    "minSz": "1",
}


class Okx:
    base = "https://www.okx.com/api/v5"
    page_size = 100

    def __init__(self, fills_ms: list[int]):
        self.fills = [okx_fill(i, t) for i, t in enumerate(fills_ms)]

    def stub_markets(self, rsps):
        def answer(request):
            kind = query(request)["instType"]
            return 200, {}, json.dumps({"code": "0", "msg": "", "data": [OKX_SPOT] if kind == "SPOT" else []})

        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(self.base)}/public/instruments\b.*"), callback=answer)

    def stub_balance(self, rsps, **answer):
        payload = {
            "code": "0",
            "msg": "",
            "data": [
                {
                    "adjEq": "",
                    "details": [
                        {"availBal": "1", "availEq": "1", "cashBal": "1", "ccy": "USDT", "eq": "1", "frozenBal": "0"},
                        {
                            "availBal": "0.1",
                            "availEq": "0.1",
                            "cashBal": "0.1",
                            "ccy": "BTC",
                            "eq": "0.1",
                            "frozenBal": "0",
                        },
                    ],
                    "totalEq": "5000",
                    "uTime": "1705474164160",
                }
            ],
        }
        rsps.get(f"{self.base}/account/balance", **(answer or {"json": payload}))

    def stub_trades(self, rsps):
        def answer(request):
            q = query(request)
            end = int(q.get("end", 10**15))
            older = sorted((f for f in self.fills if int(f["ts"]) <= end), key=lambda f: int(f["ts"]), reverse=True)
            return 200, {}, json.dumps({"code": "0", "msg": "", "data": older[: self.page_size]})

        rsps.add_callback(
            responses.GET, re.compile(rf"{re.escape(self.base)}/trade/fills-history\b.*"), callback=answer
        )

    def refused(self):
        return {"status": 401, "json": {"msg": "Invalid OK-ACCESS-KEY", "code": "50111"}}

    def rate_limited(self):
        return {"status": 429, "json": {"msg": "Too Many Requests", "code": "50011"}}

    def maintenance(self):
        return {
            "json": {"code": "50001", "msg": "Service temporarily unavailable. Please try again later.", "data": []}
        }

    def server_error(self):
        return {"status": 500, "json": {"code": "50000", "msg": "System error"}}


class Bybit:
    base = "https://api.bybit.com/v5"
    page_size = 50

    def __init__(self, fills_ms: list[int]):
        self.fills = [
            {
                "symbol": "BTCUSDT",
                "orderType": "Market",
                "underlyingPrice": "",
                "orderLinkId": "",
                "side": "Buy" if i % 2 == 0 else "Sell",
                "indexPrice": "",
                "orderId": f"8c065341-7b52-4ca9-ac2c-{i:012d}",
                "stopOrderType": "UNKNOWN",
                "leavesQty": "0",
                "execTime": str(t),
                "feeCurrency": "USDT",
                "isMaker": False,
                "execFee": "0.071409",
                "feeRate": "0.0006",
                "execId": f"e0cbe81d-0f18-5866-9415-{i:012d}",
                "tradeIv": "",
                "blockTradeId": "",
                "markPrice": "1183.54",
                "execPrice": "1183.5",
                "markIv": "",
                "orderQty": "0.1",
                "orderPrice": "1236.9",
                "execValue": "118.35",
                "execType": "Trade",
                "execQty": "0.1",
                "closedSize": "",
                "seq": 4688002127 + i,
            }
            for i, t in enumerate(fills_ms)
        ]

    @staticmethod
    def answer(result, ret_code=0, ret_msg="OK"):
        return {"retCode": ret_code, "retMsg": ret_msg, "result": result, "retExtInfo": {}, "time": 1672712468011}

    def stub_markets(self, rsps):
        spot = {
            "symbol": "BTCUSDT",
            "baseCoin": "BTC",
            "quoteCoin": "USDT",
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "both",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": "0.000001",
                "quotePrecision": "0.00000001",
                "minOrderQty": "0.000048",
                "maxOrderQty": "71.73956243",
                "minOrderAmt": "1",
                "maxOrderAmt": "2000000",
            },
            "priceFilter": {"tickSize": "0.01"},
            "riskParameters": {"limitParameter": "0.05", "marketParameter": "0.05"},
        }

        def answer(request):
            category = query(request)["category"]
            listed = [spot] if category == "spot" else []
            return 200, {}, json.dumps(self.answer({"category": category, "list": listed, "nextPageCursor": ""}))

        rsps.add_callback(
            responses.GET, re.compile(rf"{re.escape(self.base)}/market/instruments-info\b.*"), callback=answer
        )

    def stub_balance(self, rsps, **answer):
        coin = {"coin": "BTC", "walletBalance": "0.5", "equity": "0.5", "locked": "0", "usdValue": "30000"}
        wallet = {"accountType": "UNIFIED", "totalEquity": "30000", "coin": [coin]}
        rsps.get(
            re.compile(rf"{re.escape(self.base)}/account/wallet-balance\b.*"),
            **(answer or {"json": self.answer({"list": [wallet]})}),
        )
        # ccxt asks once whether the key's account is a unified one.
        rsps.get(
            f"{self.base}/user/query-api",
            json=self.answer({"id": "13770661", "readOnly": 1, "unified": 1, "uta": 1, "permissions": {}}),
        )
        rsps.get(
            f"{self.base}/account/info", json=self.answer({"unifiedMarginStatus": 5, "marginMode": "REGULAR_MARGIN"})
        )

    def stub_trades(self, rsps):
        def answer(request):
            end = int(query(request).get("endTime", 10**15))
            older = sorted(
                (f for f in self.fills if int(f["execTime"]) <= end), key=lambda f: int(f["execTime"]), reverse=True
            )
            page = {"category": "spot", "list": older[: self.page_size], "nextPageCursor": ""}
            return 200, {}, json.dumps(self.answer(page))

        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(self.base)}/execution/list\b.*"), callback=answer)

    def refused(self):
        return {"status": 401, "json": self.answer({}, 10003, "API key is invalid.")}

    def rate_limited(self):
        return {"status": 429, "json": self.answer({}, 10006, "Too many visits!"), "headers": {"Retry-After": "90"}}

    def maintenance(self):
        return {"status": 503, "body": "<html>Service Unavailable</html>"}

    def server_error(self):
        return {"status": 500, "body": "Internal Server Error"}


def coinbase_secret() -> str:
    """A Coinbase Developer Platform key's secret: an EC private key in PEM (ccxt signs a JWT with it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def _iso(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Coinbase:
    base = "https://api.coinbase.com/api/v3/brokerage"
    page_size = 50

    def __init__(self, fills_ms: list[int]):
        self.fills = [
            {
                "entry_id": f"22222-2222222-{i:08d}",
                "trade_id": f"1111-11111-{i:06d}",
                "order_id": f"0000-000000-{i:06d}",
                "trade_time": _iso(t),
                "trade_type": "FILL",
                "price": "10000.00",
                "size": "0.001",
                "commission": "1.25",
                "product_id": "BTC-USD",
                "sequence_timestamp": _iso(t),
                "liquidity_indicator": "MAKER",
                "size_in_quote": False,
                "user_id": "3333-333333-3333333",
                "side": "BUY" if i % 2 == 0 else "SELL",
                "retail_portfolio_id": "4444-444444-4444444",
            }
            for i, t in enumerate(fills_ms)
        ]

    def stub_markets(self, rsps):
        product = {
            "product_id": "BTC-USD",
            "price": "140.21",
            "price_percentage_change_24h": "9.43%",
            "volume_24h": "1908432",
            "volume_percentage_change_24h": "9.43%",
            "base_increment": "0.00000001",
            "quote_increment": "0.01",
            "quote_min_size": "1",
            "quote_max_size": "1000000",
            "base_min_size": "0.00000001",
            "base_max_size": "1000",
            "base_name": "Bitcoin",
            "quote_name": "US Dollar",
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": "USD",
            "base_currency_id": "BTC",
            "fcm_trading_session_details": None,
            "mid_market_price": "140.22",
            "alias": "",
            "alias_to": [],
            "base_display_symbol": "BTC",
            "quote_display_symbol": "USD",
            "view_only": False,
            "price_increment": "0.01",
            "display_name": "BTC-USD",
            "product_venue": "CBE",
        }

        def answer(request):
            kind = query(request).get("product_type", "SPOT")
            listed = [product] if kind == "SPOT" else []
            return 200, {}, json.dumps({"products": listed, "num_products": len(listed)})

        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(self.base)}/market/products\b.*"), callback=answer)
        # With a key, ccxt reads the key's fee tier along with the markets.
        summary = {
            "total_volume": 1000,
            "total_fees": 25,
            "fee_tier": {
                "pricing_tier": "<$10k",
                "usd_from": "0",
                "usd_to": "10,000",
                "taker_fee_rate": "0.0060",
                "maker_fee_rate": "0.0040",
            },
            "advanced_trade_only_volume": 1000,
            "advanced_trade_only_fees": 25,
        }
        rsps.get(re.compile(rf"{re.escape(self.base)}/transaction_summary\b.*"), json=summary)

    def stub_balance(self, rsps, **answer):
        # ccxt reads balances from the v2 accounts listing (Coinbase's wallets), one page here.
        account = {
            "id": "58542935-67b5-56e1-a3f9-42686e07fa40",
            "name": "BTC Wallet",
            "primary": True,
            "type": "wallet",
            "currency": {"code": "BTC", "name": "Bitcoin", "color": "#F7931A", "exponent": 8, "type": "crypto"},
            "balance": {"amount": "1.23000000", "currency": "BTC"},
            "created_at": "2015-01-31T20:49:02Z",
            "updated_at": "2015-01-31T20:49:02Z",
            "resource": "account",
            "resource_path": "/v2/accounts/58542935-67b5-56e1-a3f9-42686e07fa40",
            "ready": True,
        }
        pagination = {
            "ending_before": None,
            "starting_after": None,
            "limit": 25,
            "order": "desc",
            "previous_uri": None,
            "next_uri": None,
        }
        payload = {"pagination": pagination, "data": [account]}
        rsps.get(re.compile(r"https://api\.coinbase\.com/v2/accounts\b.*"), **(answer or {"json": payload}))

    def stub_trades(self, rsps):
        def answer(request):
            end = query(request).get("end_sequence_timestamp")
            end_ms = int(datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp() * 1000) if end else 10**15
            older = sorted((f for f in self.fills if _ms_of(f) <= end_ms), key=_ms_of, reverse=True)
            return 200, {}, json.dumps({"fills": older[: self.page_size], "cursor": ""})

        rsps.add_callback(
            responses.GET, re.compile(rf"{re.escape(self.base)}/orders/historical/fills\b.*"), callback=answer
        )

    def refused(self):
        return {"status": 401, "body": "Unauthorized\n"}

    def rate_limited(self):
        return {"status": 429, "json": {"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}}

    def maintenance(self):
        return {"status": 503, "json": {"error": "UNAVAILABLE", "message": "Service unavailable"}}

    def server_error(self):
        return {"status": 500, "json": {"error": "INTERNAL", "message": "Internal error"}}


def _ms_of(fill: dict) -> int:
    return int(datetime.fromisoformat(fill["trade_time"].replace("Z", "+00:00")).timestamp() * 1000)
