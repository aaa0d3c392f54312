"""Running the sandbox: in the current event loop, in a background thread, or from the CLI."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import httpx
import uvicorn
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal

from runflow_tail.sandbox.app import create_app
from runflow_tail.sandbox.options import SandboxOptions
from runflow_tail.sandbox.simulator import run_world
from runflow_tail.sandbox.world import World

DEFAULT_HOST = "127.0.0.1"
GRACEFUL_SHUTDOWN_SECONDS = 2.0
CONTROL_TIMEOUT_SECONDS = 120.0  # generating 200k entries is one long control request


@dataclass(frozen=True, slots=True)
class SandboxHandle:
    """A running sandbox: where it listens, the key it accepts, and its state."""

    url: str
    api_key: str
    world: World

    @property
    def options(self) -> SandboxOptions:
        return self.world.options


class _Server(uvicorn.Server):
    """uvicorn.Server that reports readiness through an event and leaves signals alone
    (the embedding program owns them; the sandbox stops by cancellation)."""

    def __init__(self, config: uvicorn.Config, ready: anyio.Event) -> None:
        super().__init__(config)
        self.ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


async def serve_sandbox(
    options: SandboxOptions | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    world: World | None = None,
    task_status: TaskStatus[SandboxHandle] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the sandbox until cancelled; reports a SandboxHandle once it accepts connections."""
    world = world or World(options or SandboxOptions())
    config = uvicorn.Config(
        create_app(world),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SECONDS),
    )
    ready = anyio.Event()
    server = _Server(config, ready)
    failure: list[BaseException] = []

    async def serve() -> None:
        # Shielded so that cancellation becomes a graceful shutdown instead of leaving
        # sockets and connections behind: the host task sets should_exit instead.
        with anyio.CancelScope(shield=True):
            try:
                await server.serve()
            except (SystemExit, OSError) as exc:  # uvicorn exits when it cannot bind
                failure.append(exc)
            finally:
                ready.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        try:
            await ready.wait()
            if server.started:
                bound_port = server.servers[0].sockets[0].getsockname()[1]
                shown_host = f"[{host}]" if ":" in host else host
                url = f"http://{shown_host}:{bound_port}"
                tasks.start_soon(run_world, world)
                handle = SandboxHandle(url=url, api_key=world.options.api_key, world=world)
                task_status.started(handle)
                await anyio.sleep_forever()
        finally:
            server.should_exit = True
            tasks.cancel_scope.cancel()
    # Raised outside the task group so that callers see the error itself, not a group.
    raise RuntimeError(f"the sandbox could not listen on {host}:{port}: {failure}")


class SandboxThread:
    """The sandbox in a background thread with its own event loop, for synchronous tests
    and for tests that drive the daemon as a subprocess.

    ``with SandboxThread(SandboxOptions(...)) as sandbox: sandbox.url, sandbox.api_key``;
    the convenience methods call the control endpoints over HTTP.
    """

    def __init__(
        self, options: SandboxOptions | None = None, *, host: str = DEFAULT_HOST, port: int = 0
    ) -> None:
        self.options = options or SandboxOptions()
        self.host = host
        self.port = port
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._future: Any = None
        self._handle: SandboxHandle | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> SandboxThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> SandboxHandle:
        """Start serving; returns once the server accepts connections."""
        with self._lock:
            if self._handle is not None:
                return self._handle
            portal_cm = anyio.from_thread.start_blocking_portal(backend="asyncio")
            portal = portal_cm.__enter__()
            try:
                task = functools.partial(
                    serve_sandbox, self.options, host=self.host, port=self.port
                )
                handle: SandboxHandle
                self._future, handle = portal.start_task(task, name="runflow-tail sandbox")
            except BaseException:
                portal_cm.__exit__(None, None, None)
                raise
            self._portal_cm = portal_cm
            self._handle = handle
            self._client = httpx.Client(base_url=handle.url, timeout=CONTROL_TIMEOUT_SECONDS)
            return handle

    def stop(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._future is not None:
                self._future.cancel()
                self._future = None
            if self._portal_cm is not None:
                self._portal_cm.__exit__(None, None, None)
                self._portal_cm = None
            self._handle = None

    @property
    def handle(self) -> SandboxHandle:
        if self._handle is None:
            raise RuntimeError("the sandbox thread is not running")
        return self._handle

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def api_key(self) -> str:
        return self.handle.api_key

    @property
    def world(self) -> World:
        """The live world; touch it only through the control endpoints (it lives on another
        thread's event loop) unless the sandbox is idle."""
        return self.handle.world

    # -- control endpoints ------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._client is None:
            raise RuntimeError("the sandbox thread is not running")
        response = self._client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def patch_options(self, **changes: Any) -> dict[str, Any]:
        return dict(self._call("PATCH", "/_sandbox/options", changes))

    def queue_faults(self, faults: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._call("POST", "/_sandbox/faults", {"queue": faults}))

    def append(
        self, entries: list[dict[str, Any]], *, visible_after: float = 0.0
    ) -> dict[str, Any]:
        body = {"entries": entries, "visible_after": visible_after}
        return dict(self._call("POST", "/_sandbox/entries", body))

    def generate(self, count: int, **spec: Any) -> dict[str, Any]:
        body = {"generate": {"count": count, **spec}}
        return dict(self._call("POST", "/_sandbox/entries", body))

    def clusters(self, ages: list[float], **spec: Any) -> dict[str, Any]:
        body = {"clusters": {"ages": ages, **spec}}
        return dict(self._call("POST", "/_sandbox/entries", body))

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_sandbox/stats"))

    def reset_stats(self) -> None:
        self._call("POST", "/_sandbox/stats/reset")
