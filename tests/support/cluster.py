"""Several daemons sharing one PostgreSQL state: their configuration, and reading the
leases and members from the database as ``runflow-tail cluster`` would."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
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
