"""IBKR Flex XML saved from the Client Portal (Activity or Trade Confirmation): the Flex provider's own row parser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO
from xml.etree.ElementTree import ParseError

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from brokers.providers.errors import UnreadableRow
from brokers.providers.ibkr_flex import execution_of
from journal.files.reading import FileProblem, NotAFill, Options, Parsed

KEY = "ibkr_flex"
LABEL = "IBKR Flex XML (Activity or Trade Confirmation)"
ROWS = {"Trade", "TradeConfirm"}


def recognises_text(head: str) -> bool:
    return "<FlexQueryResponse" in head or "<FlexStatements" in head


def read(stream: IO[bytes], encoding: str, options: Options) -> Iterator[Parsed | NotAFill]:
    """Row by row as the XML streams (elements cleared once read); a row is numbered by its place
    among the file's Trade and TradeConfirm elements, and its id is named with the problem."""
    statement_account = ""
    number = 0
    found = False
    # The element holding the rows: each row read is taken out of it, so the tree never grows.
    container = None
    try:
        for event, element in ElementTree.iterparse(stream, events=("start", "end")):
            if event == "start":
                if element.tag == "FlexStatement":
                    statement_account = (element.get("accountId") or "").strip()
                elif element.tag == "FlexQueryResponse":
                    found = True
                elif element.tag in ("Trades", "TradeConfirms"):
                    container = element
                continue
            if element.tag not in ROWS:
                if element.tag == "FlexStatement":
                    element.clear()
                continue
            number += 1
            try:
                trade = execution_of(dict(element.attrib), statement_account)
            except UnreadableRow as exc:
                ids = element.get("ibExecID") or element.get("execID") or element.get("tradeID") or "without id"
                raise FileProblem(f"{element.tag} {ids}: {exc}", row=number) from None
            finally:
                element.clear()
                if container is not None and len(container) and container[0] is element:
                    container.remove(element)
            if trade is None:
                yield NotAFill(number, "not an execution (levelOfDetail)")
            else:
                yield Parsed(number, trade, trade.account_external_id)
    except (ParseError, DefusedXmlException) as exc:
        raise FileProblem(f"the XML cannot be read ({exc})") from None
    if not found:
        raise FileProblem("this XML is no Flex report (no FlexQueryResponse)")
