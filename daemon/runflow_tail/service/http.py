"""/healthz, /readyz and /metrics, served inside the daemon's event loop.

/healthz answers from the event loop itself, so a hung loop shows as no answer.
/readyz tells the truth: 503 with every problem named while any stream has not polled
successfully within ``ready_poll_multiplier`` times its interval (or has a configuration
problem), any sink has been failing longer than ``ready_sink_failing_after``, or the
journal is full. With the PostgreSQL state it also says which member this is and which
leases it holds (and a member that cannot reach the database, or renew, is not ready).

A small HTTP/1.1 server of its own (one request per connection) rather than a general one,
because this port may face a network (the Docker image listens on 0.0.0.0) and must not be
a way to starve the daemon: a client has ``HEADER_TIMEOUT`` seconds to send its request
head (at most ``MAX_HEAD_BYTES``), at most ``MAX_CONNECTIONS`` are open at once (more wait
in the kernel's backlog, costing no descriptor), and a failing ``accept`` (out of file
descriptors) is logged once, then retried quietly until it works again.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Protocol

import anyio
import msgspec
from anyio.abc import SocketListener, SocketStream, TaskStatus

from runflow_tail.config.model import split_listen
from runflow_tail.errors import ConfigError
from runflow_tail.observability import get_logger

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HEADER_TIMEOUT = 5.0
"""Seconds a client has to send its request head, and to take the answer."""
MAX_CONNECTIONS = 64
MAX_HEAD_BYTES = 16 * 1024
ACCEPT_RETRY = 0.5
"""Seconds between attempts while accepting fails (no descriptor left, say)."""
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {431: "Request Header Fields Too Large", 503: "Service Unavailable"}

log = get_logger(__name__)


class Observed(Protocol):
    """What the endpoints ask of the service they describe."""

    def readiness_problems(self) -> list[str]: ...

    def ownership(self) -> dict[str, Any]:
        """With several daemons sharing the state: this member and the leases it holds."""
        ...

    async def render_metrics(self) -> bytes:
        """The Prometheus exposition, with state gauges brought up to date."""
        ...


async def answer(daemon: Observed, method: str, target: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request."""
    path = target.split("?", 1)[0]
    if path not in ("/healthz", "/readyz", "/metrics"):
        return 404, "application/json", b'{"status":"not found"}'
    if method not in ("GET", "HEAD"):
        return 405, "application/json", b'{"status":"method not allowed"}'
    if path == "/healthz":
        return 200, "application/json", b'{"status":"ok"}'
    if path == "/metrics":
        return 200, PROMETHEUS_CONTENT_TYPE, await daemon.render_metrics()
    problems = daemon.readiness_problems()
    # With the PostgreSQL state: which member this is, and the leases it holds.
    owned = daemon.ownership()
    if problems:
        document = {"status": "not ready", "problems": problems, **owned}
        return 503, "application/json", msgspec.json.encode(document)
    return 200, "application/json", msgspec.json.encode({"status": "ready", **owned})


def bind(listen: str) -> socket.socket:
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"server.listen = {listen!r}: cannot listen there ({exc.strerror}); choose "
            "another address, or set server.enabled = false"
        ) from exc
    sock.setblocking(False)
    return sock


async def serve_health(daemon: Observed, listen: str, *, task_status: TaskStatus[str]) -> None:
    """Serve until cancelled; reports the bound address (``host:port``) once listening."""
    sock = bind(listen)
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    listener = await SocketListener.from_socket(sock)
    slots = anyio.Semaphore(MAX_CONNECTIONS)
    started = time.monotonic()
    async with listener, anyio.create_task_group() as tg:
        log.info("server.listening", address=address, endpoints="/healthz /readyz /metrics")
        task_status.started(address)
        try:
            await _accept_forever(daemon, listener, slots, tg)
        finally:
            log.debug("server.stopping", uptime=round(time.monotonic() - started, 1))


async def _accept_forever(
    daemon: Observed, listener: SocketListener, slots: anyio.Semaphore, tg: anyio.abc.TaskGroup
) -> None:
    failing = False
    while True:
        # At the cap, stop accepting: the next connections wait in the kernel's backlog.
        await slots.acquire()
        try:
            stream = await listener.accept()
        except OSError as exc:
            slots.release()
            if not failing:
                log.warning(
                    "server.accept_failed",
                    error=exc.strerror or str(exc),
                    action=f"retrying every {ACCEPT_RETRY:g}s; said once until it works again",
                )
                failing = True
            await anyio.sleep(ACCEPT_RETRY)
            continue
        if failing:
            log.info("server.accepting_again")
            failing = False
        tg.start_soon(_serve_one, daemon, stream, slots)


async def _serve_one(daemon: Observed, stream: SocketStream, slots: anyio.Semaphore) -> None:
    try:
        async with stream:
            with anyio.move_on_after(HEADER_TIMEOUT):
                head = await _read_head(stream)
                if head is None:
                    return
                status, content_type, body = await _respond(daemon, head)
                await stream.send(
                    (
                        f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                        "Connection: close\r\n\r\n"
                    ).encode()
                    + (b"" if head.startswith(b"HEAD ") else body)
                )
    except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError):
        pass  # the client went away: nothing to tell anyone
    finally:
        slots.release()


async def _read_head(stream: SocketStream) -> bytes | None:
    """The request line and headers, or None when the client closed or sent too much."""
    received = b""
    while b"\r\n\r\n" not in received and b"\n\n" not in received:
        if len(received) > MAX_HEAD_BYTES:
            await stream.send(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
            return None
        try:
            received += await stream.receive(4096)
        except anyio.EndOfStream:
            return None
    return received


async def _respond(daemon: Observed, head: bytes) -> tuple[int, str, bytes]:
    parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return 400, "application/json", b'{"status":"bad request"}'
    return await answer(daemon, parts[0].decode("latin-1"), parts[1].decode("latin-1"))
