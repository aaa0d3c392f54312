"""A hostile Runflow API on loopback: it serves whatever bytes a test gives it.

The sandbox speaks well-formed JSON; the real world does not always. This server answers
``GET /v1/runs/{run_id}/logs`` with one page made of the items a test sets, byte for byte
(invalid UTF-8, absurd nesting, timestamps in year 1600 or 2263, path-like run ids), or
with a body that trickles in or never ends, and ``GET /v1/auth/me`` with 200.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.receivers import serving

API_KEY = "rf_hostile_0123456789abcdef"


def item(entry_id: str, timestamp: str = "2026-01-01T00:00:00Z", **fields: Any) -> bytes:
    """One well-formed entry, as JSON bytes."""
    return json.dumps({"id": entry_id, "timestamp": timestamp, **fields}).encode()


@dataclass
class HostileApi:
    items: list[bytes] = field(default_factory=list)
    trickle: float = 0.0
    """Seconds between the bytes of the body (0: all at once)."""
    extra_bytes: int = 0
    """Bytes of padding after the items (a huge page)."""
    requests: int = 0
    url: str = ""
    api_key: str = API_KEY
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def page(self) -> bytes:
        with self._lock:
            items = list(self.items)
        return b'{"items":[' + b",".join(items) + b'],"next":null}'

    async def _logs(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
        body = self.page()
        if self.trickle:
            return StreamingResponse(self._trickled(body), media_type="application/json")
        if self.extra_bytes:
            return StreamingResponse(self._padded(body), media_type="application/json")
        return Response(body, media_type="application/json")

    async def _trickled(self, body: bytes) -> AsyncIterator[bytes]:
        for index in range(len(body)):
            yield body[index : index + 1]
            await anyio.sleep(self.trickle)

    async def _padded(self, body: bytes) -> AsyncIterator[bytes]:
        # Whitespace before the page: valid JSON, as large as the test wants.
        chunk = b" " * (1024 * 1024)
        left = self.extra_bytes
        while left > 0:
            yield chunk[: min(left, len(chunk))]
            left -= len(chunk)
        yield body

    async def _me(self, request: Request) -> Response:
        return Response(b'{"id": "me"}', media_type="application/json")


@contextlib.contextmanager
def hostile_api(api: HostileApi | None = None) -> Iterator[HostileApi]:
    api = api or HostileApi()
    app = Starlette(
        routes=[
            Route("/v1/runs/{run_id}/logs", api._logs),
            Route("/v1/auth/me", api._me),
        ]
    )
    with serving(app) as base_url:
        api.url = base_url
        yield api
