"""/healthz, /readyz and /metrics, served by uvicorn inside the daemon's event loop.

/healthz answers from the event loop itself, so a hung loop shows as no answer.
/readyz tells the truth: 503 with every problem named while any stream has not polled
successfully within ``ready_poll_multiplier`` times its interval (or has a configuration
problem), any sink has been failing longer than ``ready_sink_failing_after``, or the
journal is full. With the PostgreSQL state it also says which member this is and which
leases it holds (and a member that cannot reach the database, or renew, is not ready).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any, Protocol

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runflow_tail.config.model import split_listen
from runflow_tail.errors import ConfigError
from runflow_tail.observability import get_logger

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


def create_app(daemon: Observed) -> Starlette:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = daemon.readiness_problems()
        owned = daemon.ownership()
        if problems:
            body = {"status": "not ready", "problems": problems, **owned}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", **owned})

    async def metrics(request: Request) -> Response:
        return Response(await daemon.render_metrics(), media_type=PROMETHEUS_CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns SIGTERM/SIGINT/SIGHUP; uvicorn must not take them.
        yield


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
    config = uvicorn.Config(
        create_app(daemon), log_level="warning", lifespan="off", access_log=False
    )
    server = _Server(config)
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_serve, server, sock)
        # Everything after the shielded server starts is inside the try: whatever ends
        # this task (a cancel, or an error reporting the start) must tell uvicorn to exit,
        # or the task group would wait for it forever.
        try:
            log.info("server.listening", address=address, endpoints="/healthz /readyz /metrics")
            task_status.started(address)
            await anyio.sleep_forever()
        finally:
            server.should_exit = True
            log.debug("server.stopping", uptime=round(time.monotonic() - started, 1))


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    # Shielded so that cancellation becomes uvicorn's own graceful exit (should_exit).
    with anyio.CancelScope(shield=True):
        await server.serve(sockets=[sock])
