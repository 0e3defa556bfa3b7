"""A webhook receiver on loopback for the notification tests: it can fail, stop listening and
recover, and records every request it gets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A webhook receiver: answers `status` (or 500 to keys in `refuse`) and records every
    request's Idempotency-Key, headers and body. `stop()` closes its port: nothing listens."""

    def __init__(self) -> None:
        self.status = 200
        self.refuse: set[str] = set()
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.accepted: list[str] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/arbiter"

    def start(self, status: int = 200) -> None:
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["Idempotency-Key"]
                receiver.requests.append((key, dict(self.headers), body))
                status = 500 if key in receiver.refuse else receiver.status
                if 200 <= status < 300:
                    receiver.accepted.append(key)
                answer = b"no such customer" if key in receiver.refuse else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
