"""The broker's answers a read used: recorded for the raw archive, and served again for a reparse.

BrokerHTTP hands every answer it returns to its caller to the recorder the current read opened
(a context variable, so each thread and task records its own read) and, while a reparse replays
an archived read, takes its answers from the replayer instead of the network: today's parser
then reads exactly what the broker said then, with no request made and no rate-limit slot taken.
Only the answers a parser read are kept: a transient failure that BrokerHTTP sent again is not
part of what the broker said, and replaying it would only wait again.

Answers are served again per method and path in the order they came, whatever the query: a
signed request's timestamp and signature differ on every call, while a parser reading the same
answers asks for the same pages in the same order. A request the archive does not hold (a parser
that now asks for more) ends the replay with ArchiveMiss.

Secrets never enter the record: query strings are dropped (brokers such as IBKR Flex carry the
token there), headers are not kept, and every secret value of the read (the credentials' secret
fields, the session's tokens, the installation's own keys) is blanked in paths and bodies, as
are the string values of token-named keys. Bodies keep their exact bytes otherwise (bytes that
are not UTF-8 pass through as surrogate escapes), so a parser reads what it read then.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from http import HTTPStatus
from urllib.parse import urlsplit

import requests

from brokers.providers.errors import BrokerError

REDACTED = "[redacted]"
# A shorter secret value is not blanked by value: replacing a few characters everywhere would
# corrupt prices and ids that happen to hold them. Token-named keys are blanked whatever their length.
SHORTEST_BLANKED = 6
# Keys whose values are a session's or a login's secret wherever they appear in an answer. Narrow on
# purpose: a parser must find every other field as the broker sent it (Binance's "T" is a time).
SECRET_ANSWER_KEYS = re.compile(
    r"^(access|refresh|id|md_?access|bearer)_?token$|^password$|^user_?secret$|^(api_?|client_?)?secret$"
    r"|^private_?key$",
    re.IGNORECASE,
)
# A JSON string value of any key ("accessToken": "…"), found in the answer's text.
_KEY_AND_STRING = re.compile(r'("([A-Za-z_]+)"\s*:\s*")(?:[^"\\]|\\.)*"')
_BYTES = ("utf-8", "surrogateescape")


class ArchiveMiss(BrokerError):
    """The replayed read asks for an answer the archive does not hold: a replay cannot get it, nor a retry."""


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int
    content_type: str
    body: str

    def as_response(self, url: str) -> requests.Response:
        response = requests.Response()
        response.status_code = self.status
        response.reason = _phrase(self.status)
        response._content = self.body.encode(*_BYTES)
        if self.content_type:
            response.headers["Content-Type"] = self.content_type
        response.url = url
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        return response

    def as_row(self) -> dict:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "content_type": self.content_type,
            "body": self.body,
        }


@dataclass
class Recorder:
    """The answers of one read, in the order they came, and the window the read asked for."""

    answers: list[Answer] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None

    def add(self, method: str, url: str, response: requests.Response) -> None:
        self.answers.append(
            Answer(
                method=method.upper(),
                path=urlsplit(url).path,
                status=response.status_code,
                content_type=response.headers.get("Content-Type", ""),
                body=response.content.decode(*_BYTES),
            )
        )

    def packed(self, secrets: Iterable[str]) -> bytes:
        """The answers as compressed JSON, with every secret value and token-named key blanked."""
        values = blanked_values(secrets)
        rows = [
            {**a.as_row(), "path": blank(a.path, values), "body": blank(_blank_keys(a.body), values)}
            for a in self.answers
        ]
        return pack(rows)


class Replayer:
    """Serves archived answers again, per method and path in their order.

    `answers` are the read's own; `others` (the rest of its run: the login, the account list,
    a report another account's step fetched and shared through the run cache) serve a request
    the read's own answers do not hold, since today's read may not find what the run shared.
    """

    def __init__(self, answers: Iterable[Answer], others: Iterable[Answer] = (), *, secrets: Iterable[str] = ()):
        self._secrets = blanked_values(secrets)
        self._queues = _queues(answers)
        self._others = _queues(others)

    def answer(self, method: str, url: str) -> requests.Response:
        # The path as archived: a secret in it was blanked when the answer was kept.
        key = (method.upper(), blank(urlsplit(url).path, self._secrets))
        for queues in (self._queues, self._others):
            if queues.get(key):
                return queues[key].popleft().as_response(url)
        raise ArchiveMiss(
            f"The archive holds no further answer for {key[0]} {key[1]}: today's parser asks for more "
            "than the archived sync read, so this part is not reparsed."
        )


def _phrase(status: int) -> str:
    """The reason phrase a live answer carries (ccxt reads it), "" for a status HTTP does not name."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _queues(answers: Iterable[Answer]) -> dict[tuple[str, str], deque[Answer]]:
    queues: dict[tuple[str, str], deque[Answer]] = defaultdict(deque)
    for answer in answers:
        queues[(answer.method, answer.path)].append(answer)
    return queues


def pack(rows: list[dict]) -> bytes:
    return gzip.compress(json.dumps(rows).encode(), compresslevel=6)


def unpacked(packed: bytes) -> list[Answer]:
    return [Answer(**row) for row in json.loads(gzip.decompress(packed))]


_current: ContextVar[Recorder | Replayer | None] = ContextVar("broker_answers", default=None)


def current() -> Recorder | Replayer | None:
    return _current.get()


def replaying_now() -> bool:
    """Whether the current read is a reparse's replay (no request leaves, nothing to wait for)."""
    return isinstance(_current.get(), Replayer)


def note_window(since: datetime, until: datetime) -> None:
    """Remember the window the current read asks for: a reparse asks for the same, so the same pages."""
    recorder = _current.get()
    if isinstance(recorder, Recorder):
        recorder.since, recorder.until = since, until


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    recorder = Recorder()
    token = _current.set(recorder)
    try:
        yield recorder
    finally:
        _current.reset(token)


@contextlib.contextmanager
def replaying(replayer: Replayer) -> Iterator[Replayer]:
    token = _current.set(replayer)
    try:
        yield replayer
    finally:
        _current.reset(token)


def blanked_values(secrets: Iterable[str]) -> list[str]:
    """The values to blank, longest first (a secret that holds another is blanked whole), each also as
    a JSON string or XML text spells it (a "/" or "&" in a key arrives escaped)."""
    values = {s for s in secrets if s and len(s) >= SHORTEST_BLANKED}
    spelled = {v for s in values for v in (json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1], escape(s))}
    return sorted(values | spelled, key=len, reverse=True)


def blank(text: str, values: list[str]) -> str:
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def _blank_keys(body: str) -> str:
    """A token-named key's string value blanked in the text itself: the rest of the answer keeps the
    broker's own spelling (a number re-encoded from JSON could lose digits)."""

    def blanked(match: re.Match) -> str:
        return f'{match.group(1)}{REDACTED}"' if SECRET_ANSWER_KEYS.search(match.group(2)) else match.group(0)

    return _KEY_AND_STRING.sub(blanked, body)
