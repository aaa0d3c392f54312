"""``runflow-tail tail``: a ``tail -f`` for Runflow logs, on the daemon's own engine.

It runs the same poller, journal and stdout sink as the daemon, with a throw-away journal
in a temporary directory: the same de-duplication and ordering, nothing left behind.
Exit 0 on Ctrl-C, on a closed pipe (``| head``), after ``--until-idle``, or when a
non-following tail has printed everything; exit 4 with one line when the API refuses, or
when a non-following tail got no good answer for ``--give-up-after``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from runflow_tail.cli import _tail_watch as watch
from runflow_tail.cli._common import (
    add_api_url,
    add_max_requests_per_second,
    configure_logging_for,
    load_settings_for,
)
from runflow_tail.cli._terminal import Progress, isatty
from runflow_tail.config.load import environ_snapshot
from runflow_tail.config.model import ServerSettings, Settings, StateSettings, StreamSettings
from runflow_tail.config.problems import suggest
from runflow_tail.errors import EXIT_OK, ApiError, ConfigError
from runflow_tail.filters import FilterSyntaxError, parse_filter
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.stdout import StdoutSinkConfig
from runflow_tail.times import TimeValueError, format_instant, parse_duration, parse_instant

DEFAULT_SINCE = "10m"
DEFAULT_INTERVAL = "2s"
DEFAULT_GIVE_UP = "20s"
KNOWN_LEVELS = frozenset(
    {"trace", "debug", "info", "notice", "warning", "warn", "error", "critical", "fatal"}
    | {"alert", "emergency"}
)
"""Levels runflow-tail knows (the API leaves the set open): the usual ones and syslog's."""

TAIL_EPILOG = """\
examples:
  runflow-tail tail --since 1h --level error            errors of the last hour, then exit
  runflow-tail tail -f                                   follow every run of the organization
  runflow-tail tail RUN_ID -f --format json              one run, as JSON Lines
  runflow-tail tail -f --query 'run.failure_code:NODE_TIMEOUT' --template '{timestamp} {message}'
  runflow-tail tail -f --until-idle 30s                  for scripts: stop after 30 s of quiet

against the sandbox:
  runflow-tail sandbox &
  export RUNFLOW_API_URL=http://127.0.0.1:8080 RUNFLOW_API_KEY=rf_sandbox_0123456789abcdef
"""


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    tail = commands.add_parser(
        "tail",
        parents=[common],
        help="print a run's (or every run's) log entries, and follow them",
        description="Print the entries of RUN_ID (default: every run, `any`) since --since, "
        "then exit, or keep following with -f. Uses the API settings of --config or the "
        "environment (RUNFLOW_API_KEY alone is enough; RUNFLOW_API_URL or --api-url for "
        "another API, such as the sandbox).",
        epilog=TAIL_EPILOG,
    )
    tail.add_argument("run_id", nargs="?", default="any", metavar="RUN_ID", help="a run id or any")
    add_api_url(tail)
    add_max_requests_per_second(tail)
    tail.add_argument("--query", "-q", default="", help="filter in the API's language (q)")
    tail.add_argument(
        "--level",
        help="only these levels, comma-separated (e.g. error,warning); for a level "
        "runflow-tail does not know, filter with --query 'level_code:NAME'",
    )
    tail.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        metavar="WHEN",
        help="start: a duration back (10m, 2h) or an RFC 3339 time",
    )
    tail.add_argument("--until", metavar="WHEN", help="stop at this RFC 3339 timestamp (exclusive)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    tail.add_argument(
        "--interval",
        default=DEFAULT_INTERVAL,
        metavar="DURATION",
        help="poll interval when following",
    )
    tail.add_argument(
        "--until-idle", metavar="DURATION", help="exit 0 after this long with nothing new"
    )
    tail.add_argument(
        "--give-up-after",
        default=DEFAULT_GIVE_UP,
        metavar="DURATION",
        help="without -f: exit 4 when the API has not answered successfully for this long "
        "(unreachable, timing out, failing); with -f it retries forever",
    )
    tail.add_argument(
        "--format",
        choices=["pretty", "json", "logfmt", "template"],
        default="pretty",
        help="pretty: time, level, run, message and meta; json: each entry as received "
        "(JSON Lines); logfmt; template: --template",
    )
    tail.add_argument(
        "--template",
        help="for --format template: '{timestamp} {level_code} {message}'; dotted fields "
        "such as {run.failure_code} work when the field is fetched",
    )
    tail.add_argument(
        "--fields",
        help="fields to fetch, comma-separated (default: id,run_id,level_code,message,"
        "timestamp,meta; add run for the run's fields, and its model name in pretty)",
    )
    tail.add_argument("--no-color", action="store_true", help="no colors (also: NO_COLOR)")
    tail.add_argument("--utc", action="store_true", help="show times in UTC, not local time")
    tail.add_argument(
        "--heartbeat",
        metavar="DURATION",
        help="while following, note on stderr when nothing arrived for this long",
    )
    tail.set_defaults(handler=_cmd_tail)


def _cmd_tail(args: argparse.Namespace) -> int:
    # A one-shot tail's stderr is for its one-line outcome; a follow also shows retries.
    if args.log_level is None and not args.follow and args.until_idle is None:
        args.log_level = "error"
    configure_logging_for(args, quiet=True)
    options = _TailOptions.from_args(args, no_color_env=bool(environ_snapshot().get("NO_COLOR")))
    base = load_settings_for(args)
    # Progress only when the entries go elsewhere: on a terminal they are the progress.
    bar = Progress(enabled=isatty(sys.stderr) and not isatty(sys.stdout))
    try:
        with tempfile.TemporaryDirectory(prefix="runflow-tail-") as state:
            settings = options.settings(base, Path(state), no_color=args.no_color)
            daemon = Daemon(
                settings,
                Path(state),
                RunOptions(
                    grace_period=2.0,
                    stop_when_drained=not options.follow,
                    fatal_api_problems=True,
                    extra_tasks=options.watchers(bar),
                ),
            )
            # An API refusal (bad key, filter or run, a cursor that never advances) ends
            # the run as one line with exit 4, like every expected error (cli.main prints
            # it), naming the API it came from.
            try:
                anyio.run(daemon.run)
            except ApiError as exc:
                url = settings.api.shown_url
                if url in str(exc):
                    raise
                raise ApiError(f"{url}: {exc}", status=exc.status) from None
    finally:
        bar.clear()
    bar.done(f"{watch.delivered(daemon):,} entries in {bar.elapsed:.1f}s")
    if daemon.stop_reason == "output closed":
        _silence_stdout()
    return EXIT_OK


def _silence_stdout() -> None:
    """After `| head` closed the pipe, keep Python's final flush from complaining."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


class _TailOptions:
    def __init__(
        self,
        *,
        run_id: str,
        query: str,
        start_at: str,
        until_ns: int | None,
        follow: bool,
        interval: float,
        until_idle: float | None,
        heartbeat: float | None,
        give_up: float,
        stdout: StdoutSinkConfig,
        fields: tuple[str, ...] | None,
    ) -> None:
        self.run_id = run_id
        self.query = query
        self.start_at = start_at
        self.until_ns = until_ns
        self.follow = follow or until_idle is not None
        self.interval = interval
        self.until_idle = until_idle
        self.heartbeat = heartbeat
        self.give_up = give_up
        self.stdout = stdout
        self.fields = fields

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, no_color_env: bool = False) -> _TailOptions:
        try:
            start_at = _start_at(args.since)
            until_ns = parse_instant(args.until) if args.until else None
            interval = _duration(args.interval)
            until_idle = _duration(args.until_idle) if args.until_idle else None
            heartbeat = _duration(args.heartbeat) if args.heartbeat else None
            give_up = _duration(args.give_up_after)
        except (TimeValueError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        levels = _levels(args.level)
        try:
            parse_filter(args.query)
        except FilterSyntaxError as exc:
            raise ConfigError(f"--query: {exc}") from None
        if args.template and args.format not in ("template", "pretty"):
            raise ConfigError("--template goes with --format template")
        match = f'timestamp<"{format_instant(until_ns, digits=9)}"' if until_ns else ""
        stdout = StdoutSinkConfig(
            format="template" if args.template else args.format,
            template=args.template or StdoutSinkConfig.model_fields["template"].default,
            color="never" if args.no_color or no_color_env else "auto",
            utc=args.utc,
            match=match,
            batch={"max_events": 500},
        )
        fields = tuple(f.strip() for f in args.fields.split(",")) if args.fields else None
        return cls(
            run_id=args.run_id,
            query=_combine(args.query, levels),
            start_at=start_at,
            until_ns=until_ns,
            follow=args.follow,
            interval=interval,
            until_idle=until_idle,
            heartbeat=heartbeat,
            give_up=give_up,
            stdout=stdout,
            fields=fields,
        )

    def settings(self, base: Settings, state_dir: Path, *, no_color: bool) -> Settings:
        stream: dict[str, Any] = {
            "name": "tail",
            "run_id": self.run_id,
            "query": self.query,
            "start_at": self.start_at,
            "poll_interval": self.interval,
            "lookback": min(5.0, base.state.dedup_window / 2),
        }
        if self.fields is not None:
            stream["fields"] = self.fields
        try:
            return Settings(
                api=base.api,
                log=base.log,
                state=StateSettings(dir=state_dir, dedup_window=base.state.dedup_window),
                server=ServerSettings(enabled=False),
                streams=(StreamSettings(**stream),),
                sinks={"stdout": self.stdout},
            )
        except ValidationError as exc:
            raise ConfigError(
                [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            ) from None

    def watchers(self, bar: Progress) -> list[watch.Watcher]:
        watchers: list[watch.Watcher] = []
        if self.until_idle is not None:
            watchers.append(watch.stop_when_idle(self.until_idle))
        if self.heartbeat is not None:
            watchers.append(watch.heartbeat(self.heartbeat))
        if self.until_ns is not None and self.follow:
            watchers.append(watch.stop_past(self.until_ns))
        if not self.follow:
            watchers.append(watch.give_up_after(self.give_up))
        if bar.enabled:
            watchers.append(watch.progress(bar, give_up=None if self.follow else self.give_up))
        elif not self.follow and isatty(sys.stderr):
            watchers.append(watch.waiting_notice(self.give_up))
        return watchers


def _start_at(since: str) -> str:
    """``--since``: an RFC 3339 timestamp or date, or a duration back from now (10m, -2h)."""
    text = since.strip()
    try:
        parse_instant(text)
        return text
    except TimeValueError:
        pass
    try:
        parse_duration(text.lstrip("-"))
    except TimeValueError:
        raise ValueError(
            f"--since {since!r}: expected a duration back (10m, 2h) or an RFC 3339 timestamp"
        ) from None
    return "-" + text.lstrip("-")


def _duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"{text!r}: expected a duration above zero")
    return value


def _levels(text: str | None) -> list[str]:
    """``--level``: names runflow-tail knows, so a typo is an error rather than silence."""
    # Runflow writes levels in lower case, and its filters compare case-sensitively.
    names = [level.strip().lower() for level in (text or "").split(",") if level.strip()]
    for name in names:
        if name not in KNOWN_LEVELS:
            hint = suggest(name, set(KNOWN_LEVELS))
            raise ConfigError(
                f"--level {name!r}: not a level runflow-tail knows{hint} "
                f"(known: {', '.join(sorted(KNOWN_LEVELS))}); to filter on another level "
                f"the API uses, give --query 'level_code:{name}'"
            )
    return names


def _combine(query: str, levels: list[str]) -> str:
    parts = [f"({query})"] if query.strip() else []
    if levels:
        parts.append("(" + " OR ".join(f"level_code:{name}" for name in levels) + ")")
    return " AND ".join(parts)
