"""The health server under a hostile client: half-open connections are closed after the
header timeout, connections are capped, and a failing accept is logged once."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from anyio._backends._asyncio import TCPSocketListener  # the listener this backend uses
from anyio.abc import SocketListener
from runflow_tail.service import http
from structlog.testing import capture_logs

pytestmark = pytest.mark.anyio


class Ready:
    def readiness_problems(self) -> list[str]:
        return []

    def ownership(self) -> dict[str, Any]:
        return {}  # SQLite: no member, no leases

    async def render_metrics(self) -> bytes:
        return b"# metrics\n"


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setattr(http, "HEADER_TIMEOUT", 0.5)
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 4)
    async with anyio.create_task_group() as tg:
        address = await tg.start(http.serve_health, Ready(), "127.0.0.1:0")
        yield address
        tg.cancel_scope.cancel()


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    server: str,
) -> None:
    """A client that connects and sends nothing is disconnected after the header timeout
    (0.5 s here), not kept for tens of seconds."""
    idle = connect(server)
    idle.settimeout(5)
    started = anyio.current_time()
    assert await anyio.to_thread.run_sync(idle.recv, 1) == b""
    assert anyio.current_time() - started < 3
    idle.close()


async def test_many_idle_connections_take_no_more_descriptors_than_the_cap(server: str) -> None:
    """20 idle connections: the server holds at most 4 of them open (the rest wait in the
    backlog), and /healthz answers once the idle ones time out."""
    before = len(os.listdir("/proc/self/fd"))
    idle = [connect(server) for _ in range(20)]
    # Until the server has accepted what it will: it runs in this event loop.
    await anyio.wait_all_tasks_blocked()
    held = len(os.listdir("/proc/self/fd")) - before - len(idle)
    assert held <= 4
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"http://{server}/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}
    for sock in idle:
        sock.close()


async def test_a_failing_accept_is_logged_once_not_per_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """accept() failing with EMFILE twenty times: one warning, then one line when it works
    again, and the request after it is answered."""
    monkeypatch.setattr(http, "ACCEPT_RETRY", 0.001)
    failures = {"left": 20}
    accept = TCPSocketListener.accept

    async def out_of_descriptors(self: SocketListener) -> object:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await accept(self)

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            address = await tg.start(http.serve_health, Ready(), "127.0.0.1:0")
            monkeypatch.setattr(TCPSocketListener, "accept", out_of_descriptors)
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.get(f"http://{address}/readyz")
            tg.cancel_scope.cancel()
    assert answer.status_code == 200
    events = [entry["event"] for entry in logs]
    assert events.count("server.accept_failed") == 1 and "server.accepting_again" in events
