"""``runflow-tail sandbox``: serve the simulator until Ctrl-C, and say how to use it."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import anyio

import runflow_tail.sandbox as simulator
from runflow_tail.cli._common import common_options, configure_logging_for
from runflow_tail.errors import EXIT_OK
from runflow_tail.sandbox import SandboxOptions, add_sandbox_arguments, options_from_arguments


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        parents=[common_options(with_config=False)],
        help="serve a local Runflow API simulator for offline testing",
        description="Serve the sandbox: a faithful Runflow API simulator with a live world "
        "of runs, every documented variant and fault selectable by flags.",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    add_sandbox_arguments(sandbox)
    sandbox.set_defaults(handler=_cmd_sandbox)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    configure_logging_for(args)
    anyio.run(_serve, options_from_arguments(args), args.host, args.port)
    return EXIT_OK


async def _serve(options: SandboxOptions, host: str, port: int) -> None:
    async with anyio.create_task_group() as tg:
        handle: simulator.SandboxHandle = await tg.start(_serve_task, options, host, port)
        print(
            f"Runflow sandbox listening on {handle.url}\n"
            f"  export RUNFLOW_API_URL={handle.url} RUNFLOW_API_KEY={handle.api_key}\n"
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
    task_status: anyio.abc.TaskStatus[simulator.SandboxHandle],
) -> None:
    await simulator.serve_sandbox(options, host=host, port=port, task_status=task_status)
