"""``runflow-tail demo``: a live sandbox world, tailed to the terminal by the real engine."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

import runflow_tail.sandbox as simulator
from runflow_tail.api.settings import ApiSettings
from runflow_tail.cli._common import common_options, configure_logging_for
from runflow_tail.config.model import ServerSettings, Settings, StateSettings, StreamSettings
from runflow_tail.errors import EXIT_OK
from runflow_tail.sandbox import SandboxOptions
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.stdout import StdoutSinkConfig

NEXT_STEPS_HEADER = (
    "\nThat was runflow-tail following a simulated Runflow organization. Try next "
    "(README: Tail logs interactively):"
)
NEXT_STEPS = """\
  runflow-tail sandbox &                        # a simulated Runflow API on 127.0.0.1:8080
  export RUNFLOW_API_URL=http://127.0.0.1:8080 RUNFLOW_API_KEY=rf_sandbox_0123456789abcdef
  runflow-tail tail -f --level error,warning    # follow the errors and warnings
  runflow-tail tail --since 1m --fields id,run_id,level_code,message,timestamp,run
  runflow-tail run --config config/examples/sandbox.toml   # the daemon, with a config
"""
"""Each line is in the README, as written (a test checks)."""
DEMO_FIELDS = ("id", "run_id", "level_code", "message", "timestamp", "meta", "run")
"""The run too (a few KB an entry, nothing on loopback): pretty shows its model's name."""


def path_hint(scripts: Path | None = None, cwd: Path | None = None) -> str | None:
    """How to put this installation's runflow-tail on PATH, when it is not there yet."""
    scripts = scripts or Path(sysconfig.get_path("scripts"))
    found = shutil.which("runflow-tail")
    if found is not None and Path(found).resolve().parent == scripts.resolve():
        return None
    activate = scripts / "activate"
    if not activate.exists():
        return f'  export PATH="{scripts}:$PATH"    # runflow-tail on your PATH'
    here = (cwd or Path.cwd()).resolve()
    shown = activate.resolve()
    text = str(shown.relative_to(here)) if shown.is_relative_to(here) else str(shown)
    return f"  . {text:<43} # runflow-tail on your PATH (or: pipx install .)"


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[common_options(with_config=False)],
        help="zero-config demo: a sandbox world tailed to your terminal",
        description="Start the sandbox in-process and tail its live world to the terminal "
        "with the real tail engine, until Ctrl-C.",
    )
    demo.add_argument(
        "--rate", type=float, default=1.0, metavar="RUNS", help="runs started per second"
    )
    demo.add_argument(
        "--seconds",
        type=float,
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C)",
    )
    demo.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    # The demo's stdout is the show; daemon chatter on stderr only when asked for.
    configure_logging_for(args, quiet=True)
    return run_demo(rate=args.rate, seconds=args.seconds)


def demo_settings(handle: simulator.SandboxHandle, state_dir: Path) -> Settings:
    return Settings(
        api=ApiSettings(
            base_url=handle.url,
            api_key=SecretStr(handle.api_key),
            max_requests_per_second=20,
        ),
        state=StateSettings(dir=state_dir),
        server=ServerSettings(enabled=False),
        streams=(
            StreamSettings(
                name="demo", start_at="-30s", poll_interval=0.5, lookback=1, fields=DEMO_FIELDS
            ),
        ),
        sinks={
            "terminal": StdoutSinkConfig(
                format="pretty",
                meta_keys=("node", "step"),
                # https://no-color.org, as the config loader does for configured sinks
                color="never" if os.environ.get("NO_COLOR") else "auto",
            )
        },
    )


def run_demo(*, rate: float, seconds: float | None) -> int:
    # Offline means offline: the in-process sandbox is on loopback, never behind a proxy.
    for name in ("no_proxy", "NO_PROXY"):
        os.environ[name] = ",".join(filter(None, (os.environ.get(name), "127.0.0.1")))
    # Ctrl-C before the daemon took over SIGINT: the same clean end.
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(_demo, rate, seconds)
    hint = path_hint()
    print(NEXT_STEPS_HEADER, file=sys.stderr)
    print((hint + "\n" if hint else "") + NEXT_STEPS, file=sys.stderr)
    return EXIT_OK


async def _demo(rate: float, seconds: float | None) -> None:
    # Whole-microsecond Z timestamps keep the demo's clock column tidy; tests cover
    # the other timestamp styles.
    options = SandboxOptions(world_rate=rate, world_seed=7, timestamp_style="z")
    with tempfile.TemporaryDirectory(prefix="runflow-tail-demo-") as state:
        async with anyio.create_task_group() as tg:
            handle: simulator.SandboxHandle = await tg.start(_serve, options)
            print(
                f"runflow-tail demo: tailing a simulated Runflow at {handle.url} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            daemon = Daemon(
                demo_settings(handle, Path(state)), Path(state), RunOptions(grace_period=2)
            )
            if seconds is not None:
                tg.start_soon(_stop_after, daemon, seconds)
            await daemon.run()
            tg.cancel_scope.cancel()


async def _serve(
    options: SandboxOptions, *, task_status: anyio.abc.TaskStatus[simulator.SandboxHandle]
) -> None:
    await simulator.serve_sandbox(options, task_status=task_status)


async def _stop_after(daemon: Daemon, seconds: float) -> None:
    await anyio.sleep(seconds)
    daemon.request_stop("time limit")
