"""Several daemons sharing one PostgreSQL state: their configuration, and reading the
leases and members from the database as ``runflow-tail cluster`` would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import psycopg
from pydantic import SecretStr
from runflow_tail.api.settings import ApiSettings
from runflow_tail.config.model import (
    ServerSettings,
    Settings,
    StateSettings,
    StreamSettings,
)
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.file import FileSinkConfig

LEVELS = ("info", "warn", "error")
"""Three streams that split the sandbox's entries between them (one level each)."""


def stream_settings(level: str, **options: Any) -> StreamSettings:
    return StreamSettings(
        **{
            "name": level,
            "query": f"level_code:{level}",
            "start_at": "beginning",
            "poll_interval": 0.2,
            "lookback": 1,
            **options,
        }
    )


def member_settings(
    sandbox: Any,
    dsn: str,
    directory: Path,
    member: str,
    *,
    levels: Sequence[str] = LEVELS,
    ttl: float = 1.5,
    sinks: dict[str, Any] | None = None,
) -> Settings:
    """One member's settings: a stream per level, and a file sink per stream (``out-LEVEL``)
    writing ``directory/LEVEL.jsonl`` (the members run on one host here)."""
    return Settings(
        api=ApiSettings(
            base_url=sandbox.url,
            api_key=SecretStr(sandbox.api_key),
            max_requests_per_second=200,
            backoff_initial=0.05,
            backoff_max=0.5,
        ),
        state=StateSettings(
            dir=directory / member,
            backend="postgres",
            dsn=SecretStr(dsn),
            member=member,
            lease_ttl=ttl,
        ),
        server=ServerSettings(enabled=False),
        streams=tuple(stream_settings(level) for level in levels),
        sinks=sinks
        or {
            f"out-{level}": FileSinkConfig(
                path=directory / f"{level}.jsonl", fsync="never", streams=(level,)
            )
            for level in levels
        },
    )


@contextlib.asynccontextmanager
async def members(*settings: Settings) -> AsyncIterator[list[tuple[Daemon, anyio.CancelScope]]]:
    """Run a daemon per settings in this event loop; each in a scope of its own, so that
    cancelling it is a crash (no hand-over) and ``request_stop`` a graceful stop."""
    running: list[tuple[Daemon, anyio.CancelScope]] = []
    async with anyio.create_task_group() as tg:
        for one in settings:
            assert one.state.dir is not None
            daemon = Daemon(one, one.state.dir, RunOptions(handle_signals=False, grace_period=5))
            scope = anyio.CancelScope()
            running.append((daemon, scope))

            async def run(daemon: Daemon = daemon, scope: anyio.CancelScope = scope) -> None:
                with scope:
                    await daemon.run()

            tg.start_soon(run)
        try:
            yield running
        finally:
            for daemon, _ in running:
                daemon.request_stop("test done")


def leases(dsn: str) -> dict[str, tuple[str | None, int, float]]:
    """lease -> (owner's member name, or None; epoch; seconds until it expires)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        exists = connection.execute("SELECT to_regclass('runflow_tail.leases')").fetchone()
        if exists is None or exists[0] is None:
            return {}
        rows = connection.execute(
            "SELECT l.name, m.name, l.epoch,"
            " CASE WHEN l.owner IS NULL OR NOT isfinite(l.expires_at) THEN 0"
            " ELSE extract(epoch FROM l.expires_at - now())::float8 END"
            " FROM runflow_tail.leases AS l LEFT JOIN runflow_tail.members AS m"
            " ON m.id = l.owner"
        ).fetchall()
    return {row[0]: (row[1] if row[3] > 0 else None, int(row[2]), float(row[3])) for row in rows}


def owners(dsn: str) -> dict[str, str | None]:
    """lease -> the member holding it now (None when free or expired)."""
    return {name: owner for name, (owner, _, _) in leases(dsn).items()}


def ids_in(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_bytes().splitlines() if line.strip()]


# -- members as processes ----------------------------------------------------------------


def cluster_toml(
    *,
    sandbox_url: str,
    dsn: str,
    member: str,
    state_dir: Path,
    hooks: dict[str, str],
    ttl: float,
    poll_interval: float = 1.0,
    batch: int = 20,
) -> str:
    """A member's configuration: a stream per key of ``hooks`` (every entry, from the
    beginning), each delivered to its own webhook."""
    streams = "\n".join(
        f'[[streams]]\nname = "{stream}"\nstart_at = "beginning"\n'
        f"poll_interval = {poll_interval}\nlookback = 1\n"
        for stream in hooks
    )
    sinks = "\n".join(
        f'[sinks.hook-{stream}]\ntype = "webhook"\nurl = "{url}"\nstreams = ["{stream}"]\n'
        f"backoff_initial = 0.05\nbackoff_max = 0.5\n"
        f"[sinks.hook-{stream}.batch]\nmax_events = {batch}\nmax_wait = 0.2\n"
        for stream, url in hooks.items()
    )
    return f"""
[api]
base_url = "{sandbox_url}"
max_requests_per_second = 200
backoff_initial = 0.05
backoff_max = 0.5

[state]
dir = "{state_dir}"
backend = "postgres"
dsn = "{dsn}"
member = "{member}"
lease_ttl = {ttl}

[server]
listen = "0.0.0.0:0"

{streams}
{sinks}
"""


class Member:
    """``runflow-tail run`` for one member, as a real process (optionally inside a network
    namespace: ``prefix`` = ``["ip", "netns", "exec", NAME]``, which execs in place, so the
    pid is the daemon's)."""

    def __init__(
        self, name: str, config: str, directory: Path, *, prefix: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.config = directory / f"{name}.toml"
        self.config.write_text(config)
        self.log = directory / f"{name}.log"
        self.prefix = list(prefix)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> Member:
        command = [sys.executable, "-m", "runflow_tail", "run", "--config", str(self.config)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *command],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "RUNFLOW_TAIL_LOG__FORMAT": "json", **env},
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        if not self.log.exists():
            return found
        for line in self.log.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and (name is None or event.get("event") == name):
                    found.append(event)
        return found

    def tracebacks(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if "Traceback" in line]


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll ``condition`` every 20 ms; returns when it held (monotonic), or fails naming it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic()
