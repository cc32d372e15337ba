"""Charles Schwab (Trader API): OAuth2 sign-in, accounts by hash value, fills from TRADE transactions."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from brokers.providers.errors import BrokerAPIError, BrokerAuthError, UnreadableRow
from brokers.providers.oauth import OAuthProvider, reconnect_message
from brokers.providers.types import (
    BUY,
    SELL,
    AuthResult,
    BrokerAccountInfo,
    BrokerPosition,
    BrokerTrade,
    OAuthSpec,
)

# Schwab documents a maximum range per transactions call that we could not confirm (clients
# use 60 to 365 days); 60-day windows stay inside every figure reported. UNCONFIRMED.
WINDOW = timedelta(days=60)
# A window whose answer is this long may have been cut short: it is fetched again in halves.
# Reported cap per answer, UNCONFIRMED.
MAX_TRANSACTIONS_PER_ANSWER = 3000
SMALLEST_WINDOW = timedelta(hours=1)
# Option contracts when the instrument does not say: US equity options deliver 100 shares.
OPTION_MULTIPLIER = Decimal("100")
ASSET_CLASSES = {"EQUITY": "STK", "COLLECTIVE_INVESTMENT": "STK", "OPTION": "OPT"}
RIGHTS = {"CALL": "C", "PUT": "P"}
DATA_BUCKETS = ("requests",)
# An option's OCC symbol: root padded to six, expiry YYMMDD, C or P, strike × 1000 in eight digits.
# Schwab's positions name an option this way (without its expiry and strike as fields of their own).
OCC_SYMBOL = re.compile(r"(?P<root>.{1,6}?)\s*(?P<expiry>\d{6})(?P<right>[CP])(?P<strike>\d{8})")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


class SchwabProvider(OAuthProvider):
    key = "schwab"
    display_name = "Charles Schwab"
    base_urls = {"": "https://api.schwabapi.com/trader/v1"}
    oauth = OAuthSpec(
        authorize_url="https://api.schwabapi.com/v1/oauth/authorize",
        token_url="https://api.schwabapi.com/v1/oauth/token",
        scopes=("readonly",),
        # Schwab's docs do not mention PKCE; a server without it ignores the parameters (RFC 7636
        # section 5), and with it a leaked code is useless to anyone else.
        pkce=True,
        access_lifetime=timedelta(minutes=30),
        refresh_lifetime=timedelta(days=7),
        client_auth="basic",
    )
    # Re-reading a day catches trades Schwab posts late (it books some after the trade date).
    sync_overlap = timedelta(days=1)
    # Schwab keeps about a year of transactions.
    max_history = timedelta(days=365)

    def get_accounts(self, auth: AuthResult) -> list[BrokerAccountInfo]:
        rows = self._get(auth, "accounts/accountNumbers")
        if not isinstance(rows, list):
            raise self.unreadable()
        accounts = []
        for row in rows:
            number, hash_value = str(row.get("accountNumber") or ""), row.get("hashValue")
            if not hash_value:
                raise BrokerAPIError(
                    "Charles Schwab sent an account without its hash value. Retrying will not help — please report it.",
                    provider=self.key,
                )
            # The hash value is what every call takes; the full number is never stored or shown.
            accounts.append(BrokerAccountInfo(external_id=hash_value, name=f"Schwab ····{number[-4:]}"))
        return accounts

    def get_trades(
        self, auth: AuthResult, account: BrokerAccountInfo, since: datetime, until: datetime
    ) -> Iterator[BrokerTrade]:
        start = since
        while start < until:
            end = min(start + WINDOW, until)
            yield from self._window(auth, account, start, end)
            start = end

    def _window(self, auth: AuthResult, account: BrokerAccountInfo, start: datetime, end: datetime):
        params = {"types": "TRADE", "startDate": _iso(start), "endDate": _iso(end)}
        rows = self._get(auth, f"accounts/{account.external_id}/transactions", params=params)
        if not isinstance(rows, list):
            raise self.unreadable()
        if len(rows) >= MAX_TRANSACTIONS_PER_ANSWER and end - start > SMALLEST_WINDOW:
            middle = start + (end - start) / 2
            yield from self._window(auth, account, start, middle)
            yield from self._window(auth, account, middle, end)
            return
        yield from self.readable((r for r in rows if r.get("type") == "TRADE"), lambda r: self._trade(r, account))

    def get_positions(self, auth: AuthResult, account: BrokerAccountInfo) -> list[BrokerPosition]:
        """GET /accounts/{hashValue}?fields=positions: long and short quantities per instrument, named as the fills.

        Only the kinds of instrument the fills import (stocks, ETFs, options) are positions here:
        a money-market sweep or a bond never arrives as a TRADE fill, so comparing it would only
        raise a false alarm.
        """
        body = self._get(auth, f"accounts/{account.external_id}", params={"fields": "positions"})
        if not isinstance(body, dict) or not isinstance(body.get("securitiesAccount"), dict):
            raise self.unreadable("the positions")
        rows = body["securitiesAccount"].get("positions") or []
        if not isinstance(rows, list):
            raise self.unreadable("the positions")
        positions = (self._position(row) for row in rows)
        return [p for p in positions if p is not None]

    def _position(self, row: Mapping[str, Any]) -> BrokerPosition | None:
        try:
            instrument = row["instrument"]
            asset_class = ASSET_CLASSES.get(instrument.get("assetType"))
            if asset_class is None:
                return None
            long, short = Decimal(str(row.get("longQuantity") or 0)), Decimal(str(row.get("shortQuantity") or 0))
            quantity = long - short
            if quantity == 0:
                return None
            average = row.get("averageLongPrice" if quantity > 0 else "averageShortPrice") or row.get("averagePrice")
            symbol = instrument.get("symbol") or instrument.get("cusip")
            if asset_class != "OPT":
                if not symbol:
                    raise ValueError("no symbol")
                return BrokerPosition(
                    symbol=symbol, quantity=quantity, average_price=Decimal(str(average)) if average else None
                )
            occ = OCC_SYMBOL.fullmatch(symbol or "")
            expiry = instrument.get("expirationDate")
            strike = instrument.get("strikePrice")
            return BrokerPosition(
                symbol=instrument.get("underlyingSymbol") or (occ["root"] if occ else symbol.split()[0]),
                quantity=quantity,
                average_price=Decimal(str(average)) if average else None,
                expiry=date.fromisoformat(expiry[:10]) if expiry else datetime.strptime(occ["expiry"], "%y%m%d").date(),
                strike=Decimal(str(strike)) if strike is not None else Decimal(occ["strike"]) / 1000,
                option_right=RIGHTS.get(instrument.get("putCall")) or occ["right"],
            )
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
            raise self.unreadable("a position") from None

    def _trade(self, row: Mapping[str, Any], account: BrokerAccountInfo) -> BrokerTrade:
        try:
            items = row.get("transferItems") or []
            # Fee lines carry a feeType (COMMISSION, SEC_FEE, ...); the traded instrument has none.
            fee_lines = [i for i in items if i.get("feeType")]
            traded = [
                i
                for i in items
                if not i.get("feeType") and (i.get("instrument") or {}).get("assetType") in ASSET_CLASSES
            ]
            if len(traded) != 1:
                raise ValueError("one traded instrument expected")
            item = traded[0]
            instrument = item["instrument"]
            amount = Decimal(str(item["amount"]))
            asset_class = ASSET_CLASSES[instrument["assetType"]]
            option = asset_class == "OPT"
            # Some ETF transactions come without a symbol (reported by users): the CUSIP names it then.
            symbol = instrument.get("symbol") or instrument.get("cusip")
            if not symbol or amount == 0:
                raise ValueError("no symbol or no quantity")
            return BrokerTrade(
                broker_trade_id=str(row["activityId"]),
                account_external_id=account.external_id,
                symbol=(instrument.get("underlyingSymbol") or symbol.split()[0]) if option else symbol,
                side=BUY if amount > 0 else SELL,
                quantity=abs(amount),
                price=Decimal(str(item["price"])),
                executed_at=_time(row["time"]),
                fees=sum((abs(Decimal(str(f.get("cost") or 0))) for f in fee_lines), Decimal("0")),
                currency=account.currency,
                asset_class=asset_class,
                multiplier=Decimal(str(instrument.get("optionPremiumMultiplier") or OPTION_MULTIPLIER))
                if option
                else Decimal("1"),
                order_id=str(row.get("orderId") or ""),
                expiry=date.fromisoformat(instrument["expirationDate"][:10]) if option else None,
                strike=Decimal(str(instrument["strikePrice"])) if option else None,
                option_right=RIGHTS[instrument["putCall"]] if option else "",
                raw=dict(row),
            )
        except (KeyError, TypeError, ValueError, InvalidOperation):
            raise UnreadableRow(
                f"trade {row.get('activityId') or 'without id'}: no instrument, amount, price or time we can read"
            ) from None

    def _get(self, auth: AuthResult, path: str, **kwargs):
        response = self.http.request(
            "GET", path, buckets=DATA_BUCKETS, allow_statuses=(401,), headers=self.bearer(auth), **kwargs
        )
        if response.status_code == 401:
            raise BrokerAuthError(
                reconnect_message(self.display_name, "Charles Schwab refused the link (HTTP 401)."),
                provider=self.key,
                status_code=401,
            )
        return self.http.json(response)


PROVIDERS = (SchwabProvider,)
