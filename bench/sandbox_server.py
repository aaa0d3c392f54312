"""The sandbox in its own process, with byte and concurrency counters the bench needs.

``python -m bench.sandbox_server`` serves the product's sandbox app (``create_app`` over a
quiet ``World``) on a loopback port and prints ``BENCH_SANDBOX_URL <url>`` on stdout.

Why a separate process: the daemon, the sandbox and the bench's own loops share 2 cores;
with the sandbox in the bench process, the bench's loops and tailers would steal its
CPU and the comparison between product and fetch limit would be skewed.

Why not ``runflow-tail sandbox``: its stats count requests but not bytes. This wrapper
adds, under ``/_bench/stats``, the response bytes of every ``/v1`` request, the most
requests in flight at once (the only way to tell from outside whether a client fetches
in parallel), and the monotonic instants of the first request and last response (the
monotonic clock is system-wide on Linux, so the bench can compare them with its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

import msgspec
import uvicorn
from runflow_tail.sandbox import SandboxOptions, World, create_app
from starlette.types import ASGIApp, Message, Receive, Scope, Send

READY_PREFIX = "BENCH_SANDBOX_URL "


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.response_bytes = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_request_at: float | None = None
        self.last_response_at: float | None = None

    def document(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "response_bytes": self.response_bytes,
            "max_in_flight": self.max_in_flight,
            "first_request_at": self.first_request_at,
            "last_response_at": self.last_response_at,
        }


class Counting:
    """ASGI wrapper: counts /v1 traffic and answers /_bench/stats itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.counters = Counters()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/_bench/"):
            await self._control(scope, send)
            return
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        counters = self.counters
        counters.requests += 1
        if counters.first_request_at is None:
            counters.first_request_at = time.monotonic()
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                counters.response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    counters.last_response_at = time.monotonic()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            counters.in_flight -= 1

    async def _control(self, scope: Scope, send: Send) -> None:
        if scope["method"] == "POST" and scope["path"] == "/_bench/stats/reset":
            self.counters.reset()
        body = msgspec.json.encode(self.counters.document())
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def serve(host: str, port: int) -> None:
    world = World(SandboxOptions(world_rate=0.0))
    app = Counting(create_app(world))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises the bind error
            raise SystemExit(f"the sandbox could not listen on {host}:{port}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    print(f"{READY_PREFIX}http://{host}:{bound}", flush=True)
    await serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
