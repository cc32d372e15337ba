"""The one loopback HTTP server every broker simulator runs on: routes, a record of requests, generic faults.

`responses` mocks HTTP only inside the test process; worker processes need a real server.
A simulator routes (method, path) to a handler that takes the `Request` and returns
(status, body[, headers]) or a `Reply`. A dict or list body is sent as JSON, a str as XML,
bytes as they are (JSON unless the headers give a Content-Type). Faults any broker can have:

    delay_s, delays[path]    every answer (to path) waits this long (a broker across an ocean)
    fail_every(n, status)    every n-th request (to one path, or to any) answers HTTP status
    cut_next(times)          the next answers announce their whole body, send half and hang up
    heal()                   no more of the two above
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # below the server's prefix, e.g. "/fill/list"
    query: dict[str, str]  # the first value of each parameter
    headers: Message  # case-insensitive, as HTTP header names are
    body: bytes = b""
    raw_query: str = ""  # exactly as sent, for brokers that sign it (SnapTrade)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


class Reply(NamedTuple):
    status: int
    body: Any = b""
    headers: dict[str, str] = {}
    cut: bool = False  # announce the whole body, send half of it, close the connection


Handler = Callable[[Request], Reply | tuple]


@dataclass
class _Fault:
    status: int
    every: int
    path: str | None
    seen: int = 0


@dataclass
class _Cut:
    times: int
    path: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many workers connect at once; the default backlog of 5 would make some of them wait
    # for a SYN retry (a second or more): the kernel's delay, not the broker's.
    request_queue_size = 256


class LoopbackServer:
    """Serve on 127.0.0.1 at a free port; `url` is the root plus `prefix` (the API's base path).

    Simulators subclass it, add their routes, and keep their own state under `lock`.
    """

    def __init__(self, prefix: str = "", delay_s: float = 0.0):
        self.prefix = prefix
        self.delay_s = delay_s
        self.delays: dict[str, float] = {}  # path -> seconds its answers wait, on top of delay_s
        self.requests: list[Request] = []
        self.faults_served: Counter[str] = Counter()  # "500", "cut", ... -> answers given
        self.lock = threading.RLock()
        self._routes: dict[tuple[str, str], Handler] = {}
        self._faults: list[_Fault] = []
        self._cuts: list[_Cut] = []
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    def __enter__(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler

    def handler_for(self, method: str, path: str) -> Handler | None:
        """The route's handler; a simulator whose paths carry ids or times overrides it to match them."""
        return self._routes.get((method, path))

    def fail_every(self, n: int, status: int = 500, path: str | None = None) -> None:
        """From now on the n-th, 2n-th, ... request (to `path`, or to any path) answers `status`."""
        with self.lock:
            self._faults.append(_Fault(status, n, path))

    def cut_next(self, times: int = 1, path: str | None = None) -> None:
        with self.lock:
            self._cuts.append(_Cut(times, path))

    def heal(self) -> None:
        """Drop every fault set with fail_every and cut_next: the broker is well again."""
        with self.lock:
            self._faults.clear()
            self._cuts.clear()

    def count(self, path: str | None = None) -> int:
        """Requests received (to `path`, or in all), faults included."""
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    @property
    def calls(self) -> Counter[str]:
        """path -> requests received."""
        with self.lock:
            return Counter(r.path for r in self.requests)

    def _answer(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            failing = next(iter([f for f in self._faults if self._tick(f, request.path)]), None)
            cut = next((c for c in self._cuts if c.times > 0 and c.path in (None, request.path)), None)
            if cut is not None:
                cut.times -= 1
        time.sleep(self.delay_s + self.delays.get(request.path, 0.0))
        if failing is not None:
            self._served(str(failing.status))
            reply = Reply(failing.status, b"Injected server error", {"Content-Type": "text/plain"})
        else:
            handler = self.handler_for(request.method, request.path)
            reply = Reply(*handler(request)) if handler else Reply(404, {"message": f"no route {request.path}"})
        if cut is not None or reply.cut:
            self._served("cut")
            reply = reply._replace(cut=True)
        return reply

    @staticmethod
    def _tick(fault: _Fault, path: str) -> bool:
        if fault.path not in (None, path):
            return False
        fault.seen += 1
        return fault.seen % fault.every == 0

    def _served(self, kind: str) -> None:
        with self.lock:
            self.faults_served[kind] += 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session expects

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def do_PUT(self):
                self._serve()

            def do_DELETE(self):
                self._serve()

            def _serve(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=url.path.removeprefix(server.prefix) if url.path.startswith(server.prefix) else url.path,
                    query={k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                    headers=self.headers,
                    body=self.rfile.read(length) if length else b"",
                    raw_query=url.query,
                )
                # A client that gave up on a slow answer has hung up: that is the point of the fault.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send(server._answer(request))

            def _send(self, reply: Reply) -> None:
                body, content_type = _encoded(reply.body)
                headers = {"Content-Type": content_type, **reply.headers}
                self.send_response(reply.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if reply.cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self.wfile.write(body)

        return Handler


def _encoded(body: Any) -> tuple[bytes, str]:
    if isinstance(body, bytes):
        return body, "application/json"
    if isinstance(body, str):
        return body.encode(), "text/xml; charset=utf-8"
    return json.dumps(body).encode(), "application/json"
