"""A real webhook receiver on loopback (uvicorn + starlette in a background thread) that records
every request and answers as a test tells it to."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    def entries(self) -> list[dict[str, Any]]:
        document = json.loads(self.body)
        return (
            document["entries"]
            if isinstance(document, dict) and "entries" in document
            else [document]
        )


@dataclass
class Receiver:
    """Answers ``status`` (200 by default) to every POST, optionally with headers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Answers for the next requests, in order, before falling back to ``status``."""
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        if self.delay:
            await anyio.sleep(self.delay)
        with self._lock:
            status, headers = self.script.pop(0) if self.script else (self.status, self.headers)
            self.requests.append(Received(dict(request.headers), body, status, time.monotonic()))
        return Response(b"{}" if status < 300 else b"nope", status_code=status, headers=headers)

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_ids(self) -> list[str]:
        return [entry["id"] for request in self.delivered() for entry in request.entries()]

    def set(self, status: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.status = status
            self.headers = headers or {}


@contextlib.contextmanager
def running_receiver(receiver: Receiver | None = None) -> Iterator[Receiver]:
    receiver = receiver or Receiver()
    app = Starlette(routes=[Route("/hook", receiver._handle, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    started = threading.Event()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            port = self.servers[0].sockets[0].getsockname()[1]
            receiver.url = f"http://127.0.0.1:{port}/hook"
            started.set()

    server = _Server(config)

    async def serve() -> None:
        await server.serve()

    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(serve)
        started.wait(timeout=30)
        try:
            yield receiver
        finally:
            server.should_exit = True
            future.result(timeout=30)
