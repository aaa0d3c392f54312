"""Operator commands: ``checkpoint show|set|reset`` and ``status``.

Reading works while the daemon runs (SQLite WAL lets a second reader in); writing needs
the state-directory lock, so it is refused while a daemon holds it. With the PostgreSQL
state, a checkpoint change holds the stream's lease instead (refused while a member
polls the stream), and ``status`` says which member polls or delivers what.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

from runflow_tail.cli._common import load_settings_for, open_journal_store
from runflow_tail.cli._terminal import isatty, table
from runflow_tail.config.model import Settings
from runflow_tail.errors import EXIT_OK, ConfigError, StateLocked
from runflow_tail.journal import JOURNAL_NAME, OperatorStore, StateDirLock
from runflow_tail.service.state import cluster_overview, holding_stream, refuse_reset_all
from runflow_tail.service.status import snapshot
from runflow_tail.times import TimeValueError, format_instant, parse_instant


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    checkpoint = commands.add_parser(
        "checkpoint",
        help="show or move a stream's checkpoint",
        description="Inspect or move stream checkpoints. `show` works while the daemon runs; "
        "`set` and `reset` need the daemon stopped.",
    )
    actions = checkpoint.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", parents=[common], help="watermark, cursor, sink offsets")
    show.add_argument("--stream", help="only this stream")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_cmd_show)
    move = actions.add_parser(
        "set",
        parents=[common],
        help="resume a stream from a timestamp",
        description="Resume polling STREAM from TIMESTAMP (entries before it are not fetched). "
        "Entries the journal still holds are not delivered twice; to re-send, use replay.",
    )
    move.add_argument("--stream", required=True, help="the stream's name ([[streams]] name)")
    move.add_argument("--to", required=True, metavar="TIMESTAMP", help="RFC 3339 timestamp")
    move.set_defaults(handler=_cmd_set)
    reset = actions.add_parser(
        "reset",
        parents=[common],
        help="forget a stream's checkpoint (start_at applies again)",
        description="Forget a stream's checkpoint so its start_at applies again; --all moves "
        "the whole journal aside (the way out of an unreadable journal).",
    )
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--stream", help="forget this stream's checkpoint")
    target.add_argument("--all", action="store_true", help="move the journal file aside")
    reset.set_defaults(handler=_cmd_reset)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="streams and sinks at a glance",
        description="Each stream's health, watermark and lag; each sink's offset, backlog "
        "and dead letters. Works while the daemon runs.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_cmd_status)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings_for(args, require_api_key=False)


def _state_dir(settings: Settings) -> Path:
    assert settings.state.dir is not None
    return settings.state.dir


def _snapshot(settings: Settings) -> dict[str, Any]:
    store = open_journal_store(settings)
    try:
        shared = settings.state.backend == "postgres"
        cluster = cluster_overview(store) if shared else None
        return snapshot(store, settings, _state_dir(settings), cluster)
    finally:
        store.close()


def _cmd_show(args: argparse.Namespace) -> int:
    snapshot = _snapshot(_settings(args))
    if args.stream:
        snapshot["streams"] = [s for s in snapshot["streams"] if s["stream"] == args.stream]
        if not snapshot["streams"]:
            raise ConfigError(f"no checkpoint for stream {args.stream!r}")
    _print(snapshot, as_json=args.json)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    _print(_snapshot(_settings(args)), as_json=args.json)
    return EXIT_OK


def _print(snapshot: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode(snapshot).decode() + "\n")
        return
    # A person at a terminal gets tables; a pipe keeps the line-per-item text scripts read.
    print(render_tables(snapshot) if isatty(sys.stdout) else render_plain(snapshot))


def _heading(snapshot: dict[str, Any]) -> str:
    running = "running" if snapshot["daemon_running"] else "not running"
    if "cluster" in snapshot:
        live = sum(1 for member in snapshot["cluster"]["members"] if member["live"])
        running = f"{live} member(s) running"
    else:
        running = f"daemon {running}"
    return (
        f"state {snapshot['state_dir']} ({running}); journal: "
        f"{snapshot['journal_entries']} entries, {snapshot['journal_bytes']} bytes"
    )


def render_plain(snapshot: dict[str, Any]) -> str:
    lines = [_heading(snapshot), "streams:"]
    for s in snapshot["streams"]:
        health = "ok" if s["healthy"] else f"UNHEALTHY: {s['problem']}"
        where = f" on {s['member'] or 'no member'}" if "member" in s else ""
        lines.append(f"  {s['stream']:<16} {health}{where}")
        lines.append(
            f"    strategy={s['strategy']} watermark={s['watermark']} lag={s['lag_seconds']}s"
        )
        if s["api_cursor"]:
            lines.append(f"    api_cursor={s['api_cursor']}")
    lines.append("sinks:")
    for k in snapshot["sinks"]:
        where = f" member={k['member'] or '-'}" if "member" in k else ""
        lines.append(
            f"  {k['sink']:<16} offset={k['offset']} backlog={k['backlog']} "
            f"dead_letters={k['dead_letters']} streams={','.join(k['streams'])}{where}"
        )
    problems = snapshot.get("alert_problems") or []
    if problems:
        lines.append("alert rules:")
    for problem in problems:
        lines.append(f"  {problem['rule']:<16} PROBLEM: {problem['problem']}")
    return "\n".join(lines)


def render_tables(snapshot: dict[str, Any]) -> str:
    streams = snapshot["streams"]
    # With the PostgreSQL state, each stream and sink shows the member that holds it.
    shared = "cluster" in snapshot
    member = ("member",) if shared else ()
    parts = [_heading(snapshot), ""]
    parts.append(
        table(
            ("stream", "health", "strategy", "watermark", "lag s", *member),
            [
                (
                    s["stream"],
                    "ok" if s["healthy"] else "UNHEALTHY",
                    s["strategy"],
                    s["watermark"],
                    s["lag_seconds"],
                    *((s.get("member"),) if shared else ()),
                )
                for s in streams
            ],
        )
    )
    parts += ["", _sinks_table(snapshot["sinks"], shared)]
    problems = [f"stream {s['stream']}: {s['problem']}" for s in streams if not s["healthy"]]
    problems += [
        f"alert rule {p['rule']}: {p['problem']}" for p in snapshot.get("alert_problems") or ()
    ]
    if problems:
        parts += ["", "problems:", *(f"  {problem}" for problem in problems)]
    return "\n".join(parts)


def _sinks_table(sinks: list[dict[str, Any]], shared: bool) -> str:
    return table(
        ("sink", "offset", "backlog", "dead letters", "streams", *(("member",) if shared else ())),
        [
            (
                k["sink"],
                k["offset"],
                k["backlog"],
                k["dead_letters"],
                ",".join(k["streams"]),
                *((k.get("member"),) if shared else ()),
            )
            for k in sinks
        ],
    )


def _lock(state_dir: Path) -> StateDirLock:
    lock = StateDirLock(state_dir)
    try:
        lock.acquire()
    except StateLocked as exc:
        raise StateLocked(f"{exc} (checkpoint changes need the daemon stopped)") from None
    return lock


@contextlib.contextmanager
def _changing(settings: Settings, stream: str) -> Iterator[OperatorStore]:
    """The store, for a change of ``stream``'s checkpoint while no daemon polls it: the
    state directory's lock (SQLite), or the stream's lease (PostgreSQL)."""
    if settings.state.backend == "postgres":
        store = open_journal_store(settings)
        try:
            with holding_stream(store, stream):
                yield store
        finally:
            store.close()
        return
    lock = _lock(_state_dir(settings))
    try:
        store = open_journal_store(settings)
        try:
            yield store
        finally:
            store.close()
    finally:
        lock.release()


def _cmd_set(args: argparse.Namespace) -> int:
    try:
        target = parse_instant(args.to, date_only_ok=True)
    except TimeValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    settings = _settings(args)
    with _changing(settings, args.stream) as store:
        cursor = store.load_cursor(args.stream)
        if cursor is None:
            raise ConfigError(f"no checkpoint for stream {args.stream!r} yet")
        store.save_cursor(
            args.stream, replace(cursor, watermark=target, floor=target, api_cursor=None)
        )
    print(f"stream {args.stream}: will resume from {format_instant(target)}")
    return EXIT_OK


def _cmd_reset(args: argparse.Namespace) -> int:
    settings = _settings(args)
    state_dir = _state_dir(settings)
    if args.all and settings.state.backend == "postgres":
        raise refuse_reset_all()
    if args.all:
        path = state_dir / JOURNAL_NAME
        if not path.exists():
            print(f"no journal at {path}: nothing to move aside")
            return EXIT_OK
        lock = _lock(state_dir)
        try:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = path.with_name(f"{JOURNAL_NAME}.{stamp}.bak")
            # Never replace an earlier backup (two resets within one second).
            for n in itertools.count(1):
                if not any(Path(f"{aside}{x}").exists() for x in ("", "-wal", "-shm")):
                    break
                aside = path.with_name(f"{JOURNAL_NAME}.{stamp}-{n}.bak")
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{path}{suffix}")
                if source.exists():
                    source.rename(Path(f"{aside}{suffix}"))
        finally:
            lock.release()
        print(f"journal moved to {aside}; the next start begins from each stream's start_at")
        return EXIT_OK
    with _changing(settings, args.stream) as store:
        store.delete_cursor(args.stream)
    print(f"stream {args.stream}: checkpoint forgotten; start_at applies on the next start")
    return EXIT_OK
