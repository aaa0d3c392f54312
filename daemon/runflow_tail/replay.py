"""``runflow-tail replay``: re-send dead letters, or a time range from the journal, to one sink.

Replay never touches the sink's live offset, so it can run beside the daemon. It sends
under the name ``<sink>.replay`` (a file sink keeps a separate crash-intent record; a
webhook's idempotency keys differ from the live ones), in the sink's own batch size and
with its own ``match`` filter for ranges (dead letters were filtered when first sent).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from .errors import EXIT_FAILURE, EXIT_OK, ConfigError, SinkError
from .filters import parse_filter
from .journal import JOURNAL_NAME, JournalStore
from .models import Entry
from .settings import Settings
from .sinks.base import Sink
from .times import TimeValueError, format_instant, parse_instant


def add_replay_command(commands: Any, common: argparse.ArgumentParser) -> None:
    replay = commands.add_parser(
        "replay",
        parents=[common],
        help="re-send dead letters or a time range to one sink",
        description="Re-send to one sink, without moving its live offset: its dead letters "
        "(--dead-letters; each one is removed once delivered), or the entries the journal "
        "still holds in a time range (--from TS [--to TS]). Safe while the daemon runs.",
    )
    replay.add_argument("--sink", required=True, help="the sink's name ([sinks.NAME])")
    what = replay.add_mutually_exclusive_group(required=True)
    what.add_argument("--dead-letters", action="store_true", help="re-send dead letters")
    what.add_argument("--from", dest="start", metavar="TIMESTAMP", help="range start (RFC 3339)")
    replay.add_argument("--to", dest="end", metavar="TIMESTAMP", help="range end (exclusive)")
    replay.set_defaults(handler=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from .cli import _configure_logging, load_from_args

    settings: Settings = load_from_args(args, require_api_key=False)
    _configure_logging(args, settings)
    if args.sink not in settings.sinks:
        raise ConfigError(
            f"--sink {args.sink!r} is not a configured sink "
            f"(configured: {', '.join(sorted(settings.sinks))})"
        )
    if args.dead_letters:
        if args.end:
            raise ConfigError("--to only goes with --from")
        return anyio.run(replay_dead_letters, settings, args.sink)
    try:
        start = parse_instant(args.start)
        end = parse_instant(args.end) if args.end else None
    except TimeValueError as exc:
        raise ConfigError(f"--from/--to: {exc}") from None
    return anyio.run(replay_range, settings, args.sink, start, end)


def _open(settings: Settings) -> JournalStore:
    assert settings.state.dir is not None
    path = settings.state.dir / JOURNAL_NAME
    if not path.exists():
        raise ConfigError(f"no journal at {path}: nothing to replay (check state.dir)")
    return JournalStore(path)


async def replay_dead_letters(settings: Settings, sink_name: str) -> int:
    store = await anyio.to_thread.run_sync(_open, settings)
    sink = settings.sinks[sink_name].build(f"{sink_name}.replay")
    sent = 0
    try:
        letters = await anyio.to_thread.run_sync(store.dead_letters, sink_name)
        for letter in letters:
            if not await _send(sink, letter.entries, f"dead letter {letter.id}"):
                return EXIT_FAILURE
            await anyio.to_thread.run_sync(store.delete_dead_letter, letter.id)
            sent += len(letter.entries)
    finally:
        await sink.aclose()
        await anyio.to_thread.run_sync(store.close)
    print(f"replayed {len(letters)} dead letter(s), {sent} entries, to {sink_name}")
    return EXIT_OK


async def replay_range(settings: Settings, sink_name: str, start: int, end: int | None) -> int:
    config = settings.sinks[sink_name]
    streams = settings.streams_for_sink(sink_name)
    matcher = parse_filter(config.match)
    batch_size = config.batching().max_events
    store = await anyio.to_thread.run_sync(_open, settings)
    sink = config.build(f"{sink_name}.replay-{int(time.time())}")
    sent, after = 0, 0
    try:
        while True:
            rows = await anyio.to_thread.run_sync(
                functools.partial(
                    store.read_range, streams, start, end, after_seq=after, limit=batch_size
                )
            )
            if not rows:
                break
            after = rows[-1].seq
            batch = [entry for entry in rows if matcher.matches(entry.data())]
            if batch and not await _send(sink, batch, "range"):
                return EXIT_FAILURE
            sent += len(batch)
    finally:
        await sink.aclose()
        await anyio.to_thread.run_sync(store.close)
    until = f" until {format_instant(end)}" if end is not None else ""
    print(f"replayed {sent} entries from {format_instant(start)}{until} to {sink_name}")
    return EXIT_OK


async def _send(sink: Sink, batch: Sequence[Entry], what: str) -> bool:
    try:
        await sink.send(batch)
    except SinkError as exc:
        print(f"runflow-tail: replay stopped at {what}: {exc}", file=sys.stderr)
        return False
    return True
