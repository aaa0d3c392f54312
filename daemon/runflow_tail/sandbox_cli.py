"""``runflow-tail sandbox``: serve the simulator until Ctrl-C, and say how to use it."""

from __future__ import annotations

import signal
import sys

import anyio

from .errors import EXIT_OK
from .sandbox import SandboxHandle, SandboxOptions, serve_sandbox


def serve_forever(options: SandboxOptions, *, host: str, port: int) -> int:
    anyio.run(_serve, options, host, port)
    return EXIT_OK


async def _serve(options: SandboxOptions, host: str, port: int) -> None:
    async with anyio.create_task_group() as tg:
        handle: SandboxHandle = await tg.start(_serve_task, options, host, port)
        print(
            f"Runflow sandbox listening on {handle.url}\n"
            f"  export RUNFLOW_TAIL_API__BASE_URL={handle.url}\n"
            f"  export RUNFLOW_API_KEY={handle.api_key}\n"
            f"  control: {handle.url}/_sandbox/options, /_sandbox/stats, /_sandbox/entries\n"
            "Stop with Ctrl-C.",
            file=sys.stderr,
            flush=True,
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tg.cancel_scope.cancel()


async def _serve_task(
    options: SandboxOptions,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[SandboxHandle],
) -> None:
    await serve_sandbox(options, host=host, port=port, task_status=task_status)
