"""A slow webhook receiver: answers every POST after a fixed delay, counts what it got.

Plain ``http.server`` in a thread (one thread per connection): it only needs to be slow,
and keeping uvicorn out of it keeps the bench process's CPU for tailing and sampling.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class SlowReceiver:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        self.entries = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(receiver.delay)
                receiver._count(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per request would flood the bench's output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _count(self, body: bytes) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            return
        batched = isinstance(document, dict) and isinstance(document.get("entries"), list)
        count = len(document["entries"]) if batched else 1
        with self._lock:
            self.requests += 1
            self.entries += count

    def __enter__(self) -> SlowReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
