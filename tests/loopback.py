"""One small loopback HTTP server for tests whose broker must be reached by another process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# (method, path, query) -> (status, content type, body)
Answer = Callable[[str, str, dict[str, list[str]]], tuple[int, str, str]]


class LoopbackServer:
    """Serves `answer` on 127.0.0.1 while the context is open; `url` is its base address."""

    def __init__(self, answer: Answer):
        self.calls: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(answer))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self, answer: Answer):
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                parsed = urlparse(self.path)
                calls.append((self.command, parsed.path))
                status, content_type, body = answer(self.command, parsed.path, parse_qs(parsed.query))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):  # the test reads the client's logs, not the server's
                pass

        return Handler
