"""``runflow-tail replay``: re-send dead letters, or a time range from the journal, to one sink."""

from __future__ import annotations

import argparse
import time
from typing import Any

import anyio

from runflow_tail.cli._common import configure_logging_for, load_settings_for, open_journal_store
from runflow_tail.cli._terminal import Progress
from runflow_tail.config.model import Settings
from runflow_tail.delivery.replay import replay_dead_letters, replay_range
from runflow_tail.errors import EXIT_OK, ConfigError
from runflow_tail.models import Entry
from runflow_tail.times import TimeValueError, format_instant, parse_instant


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
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
    settings = load_settings_for(args, require_api_key=False)
    configure_logging_for(args, settings)
    if args.sink not in settings.sinks:
        raise ConfigError(
            f"--sink {args.sink!r} is not a configured sink "
            f"(configured: {', '.join(sorted(settings.sinks))})"
        )
    if args.dead_letters:
        if args.end:
            raise ConfigError("--to only goes with --from")
        return anyio.run(_dead_letters, settings, args.sink)
    try:
        start = parse_instant(args.start)
        end = parse_instant(args.end) if args.end else None
    except TimeValueError as exc:
        raise ConfigError(f"--from/--to: {exc}") from None
    return anyio.run(_range, settings, args.sink, start, end)


def _show_progress(bar: Progress, start: int | None, end: int | None) -> Any:
    """On a terminal, how far a replay has got: entries sent and the time reached (with the
    share of the range behind it when the range has an end)."""

    def show(sent: int, last: Entry) -> None:
        share = ""
        if start is not None and end is not None and end > start:
            share = f" ({min(1.0, (last.timestamp_ns - start) / (end - start)):.0%})"
        reached = format_instant(last.timestamp_ns, digits=0)
        bar.show(f"replaying: {sent:,} entries sent, up to {reached}{share}")

    return show


async def _dead_letters(settings: Settings, sink_name: str) -> int:
    store = await anyio.to_thread.run_sync(open_journal_store, settings)
    sink = settings.sinks[sink_name].build(f"{sink_name}.replay")
    bar = Progress()
    try:
        letters, sent = await replay_dead_letters(
            store, sink, sink_name, progress=_show_progress(bar, None, None)
        )
    finally:
        bar.clear()
        await sink.aclose()
        await anyio.to_thread.run_sync(store.close)
    print(f"replayed {letters} dead letter(s), {sent} entries, to {sink_name}")
    return EXIT_OK


async def _range(settings: Settings, sink_name: str, start: int, end: int | None) -> int:
    config = settings.sinks[sink_name]
    store = await anyio.to_thread.run_sync(open_journal_store, settings)
    sink = config.build(f"{sink_name}.replay-{int(time.time())}")
    bar = Progress()
    try:
        streams = settings.streams_for_sink(sink_name)
        sent = await replay_range(
            store,
            sink,
            sink_name,
            config,
            streams,
            start,
            end,
            progress=_show_progress(bar, start, end),
        )
    finally:
        bar.clear()
        await sink.aclose()
        await anyio.to_thread.run_sync(store.close)
    until = f" until {format_instant(end)}" if end is not None else ""
    print(f"replayed {sent} entries from {format_instant(start)}{until} to {sink_name}")
    return EXIT_OK
