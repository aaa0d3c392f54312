"""Helpers for end-to-end tests: configs for a sandbox, the daemon in-process or as a
subprocess, and reading what the sinks wrote."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr
from runflow_tail.api.settings import ApiSettings
from runflow_tail.config.model import ServerSettings, Settings, StateSettings, StreamSettings
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.file import FileSinkConfig

DEADLINE = 60.0
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m runflow_tail ARGS`` with only the given environment (plus PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "runflow_tail", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_for(
    sandbox: SandboxHandle | Any,
    state_dir: Path,
    output: Path,
    *,
    api: dict[str, Any] | None = None,
    sinks: dict[str, Any] | None = None,
    **stream: Any,
) -> Settings:
    """Settings for one stream from the sandbox into one JSON Lines file."""
    stream_options: dict[str, Any] = {
        "name": "all",
        "start_at": "beginning",
        "poll_interval": 0.2,
        "lookback": 1,
        **stream,
    }
    return Settings(
        api=ApiSettings(
            **{
                "base_url": sandbox.url,
                "api_key": SecretStr(sandbox.api_key),
                "max_requests_per_second": 200,
                "backoff_initial": 0.05,
                "backoff_max": 0.5,
                **(api or {}),
            }
        ),
        state=StateSettings(dir=state_dir),
        server=ServerSettings(enabled=False),
        streams=(StreamSettings(**stream_options),),
        sinks=sinks or {"out": FileSinkConfig(path=output, fsync="never")},
    )


def config_toml(
    sandbox: Any,
    state_dir: Path,
    output: Path,
    *,
    api: str = "",
    stream: dict[str, Any] | None = None,
    sinks: str = "",
) -> str:
    """The same as ``settings_for``, as a TOML file for a daemon subprocess."""
    stream_options = {
        "name": "all",
        "start_at": "beginning",
        "poll_interval": 0.2,
        "lookback": 1,
        **(stream or {}),
    }
    stream_lines = "\n".join(
        f"{key} = {json.dumps(value)}" for key, value in stream_options.items()
    )
    default_sink = f'[sinks.out]\ntype = "file"\npath = "{output}"\nfsync = "never"'
    return f"""
[api]
base_url = "{sandbox.url}"
max_requests_per_second = 200
backoff_initial = 0.05
backoff_max = 0.5
{api}

[state]
dir = "{state_dir}"

[server]
listen = "127.0.0.1:0"

[[streams]]
{stream_lines}

{sinks or default_sink}
"""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


async def wait_for(condition: Callable[[], bool], *, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)


def wait_for_sync(condition: Callable[[], bool], *, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(0.05)


DaemonCondition = Callable[[Daemon], bool | Awaitable[bool]]


async def run_daemon_until(
    settings: Settings,
    condition: Callable[[], bool] | DaemonCondition,
    *,
    timeout: float = DEADLINE,
) -> Daemon:
    """Run the daemon in this event loop until ``condition`` holds, then stop it gracefully;
    ``condition`` may take the daemon and may be a coroutine function. An error the daemon
    raises fails the test."""
    assert settings.state.dir is not None
    daemon = Daemon(settings, settings.state.dir, RunOptions(handle_signals=False))
    wants_daemon = len(inspect.signature(condition).parameters) == 1
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        try:
            with anyio.fail_after(timeout):
                while True:
                    held = condition(daemon) if wants_daemon else condition()  # type: ignore[call-arg]
                    if held if isinstance(held, bool) else await held:
                        break
                    await anyio.sleep(0.05)
        finally:
            daemon.request_stop("test done")
    return daemon


def sandbox_ids(sandbox: Any, query: str = "") -> list[str]:
    """Every visible entry id in (timestamp, id) order, read from the sandbox's own store.

    Only call it while the sandbox is not changing (its world may live on another thread).
    """
    from runflow_tail.filters import parse_filter

    world = sandbox.world
    matcher = parse_filter(query)
    now = world.now()
    return [
        entry.id
        for entry in world.store.entries
        if entry.visible_at <= now and matcher.matches(entry.mapping())
    ]


def settled_ids(sandbox: Any) -> list[str]:
    """Stop the sandbox's simulator, wait until no simulated run has entries still to
    come, and return every entry id in (timestamp, id) order."""
    sandbox.patch_options(world_rate=0.0)
    wait_for_sync(lambda: sandbox.stats()["runs_playing"] == 0, timeout=60)
    return sandbox_ids(sandbox)


class DaemonProcess:
    """``runflow-tail run`` as a real subprocess, its stderr captured to a file."""

    def __init__(self, config: Path, log: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = log
        self.env = {**os.environ, "RUNFLOW_TAIL_LOG__FORMAT": "json", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runflow_tail", "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self, *, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
        return events

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def daemon_process(config: Path, log: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    process = DaemonProcess(config, log, **kwargs).start()
    try:
        yield process
    finally:
        process.stop()
