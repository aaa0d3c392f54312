"""``runflow-tail tail``: a ``tail -f`` for Runflow logs, on the daemon's own engine.

It runs the same poller, journal and stdout sink as the daemon, with a throw-away journal
in a temporary directory: the same de-duplication and ordering, nothing left behind.
Exit 0 on Ctrl-C, on a closed pipe (``| head``), after ``--until-idle``, or when a
non-following tail has printed everything; exit 4 with one line when the API refuses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from runflow_tail.cli._common import configure_logging_for, load_settings_for
from runflow_tail.config.load import environ_snapshot
from runflow_tail.config.model import ServerSettings, Settings, StateSettings, StreamSettings
from runflow_tail.errors import EXIT_OK, ConfigError
from runflow_tail.filters import FilterSyntaxError, parse_filter
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.sinks.stdout import StdoutSinkConfig
from runflow_tail.times import TimeValueError, format_instant, parse_duration, parse_instant

DEFAULT_SINCE = "10m"
DEFAULT_INTERVAL = 2.0

TAIL_EPILOG = """\
examples:
  runflow-tail tail --since 1h --level error            errors of the last hour, then exit
  runflow-tail tail -f                                   follow every run of the organization
  runflow-tail tail 0190b3a4-... -f --format json        one run, as JSON Lines
  runflow-tail tail -f --query 'run.status_code:failed' --template '{timestamp} {message}'
  runflow-tail tail -f --until-idle 30s                  for scripts: stop after 30 s of quiet
"""


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    tail = commands.add_parser(
        "tail",
        parents=[common],
        help="print a run's (or every run's) log entries, and follow them",
        description="Print the entries of RUN_ID (default: every run, `any`) since --since, "
        "then exit, or keep following with -f. Uses the API settings of --config or the "
        "environment (RUNFLOW_API_KEY alone is enough).",
        epilog=TAIL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tail.add_argument("run_id", nargs="?", default="any", metavar="RUN_ID", help="a run id or any")
    tail.add_argument("--query", "-q", default="", help="filter in the API's language (q)")
    tail.add_argument("--level", help="only these levels, comma-separated (e.g. error,warning)")
    tail.add_argument(
        "--since", default=DEFAULT_SINCE, help="start: a duration back (10m, 2h) or RFC 3339"
    )
    tail.add_argument("--until", help="stop at this RFC 3339 timestamp (exclusive)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    tail.add_argument(
        "--interval", default=str(DEFAULT_INTERVAL), help="poll interval when following (2s)"
    )
    tail.add_argument(
        "--until-idle", metavar="DURATION", help="exit 0 after this long with nothing new"
    )
    tail.add_argument(
        "--format", choices=["pretty", "json", "logfmt", "template"], default="pretty"
    )
    tail.add_argument("--template", help="for --format template: '{timestamp} {message}'")
    tail.add_argument("--fields", help="fields to fetch, comma-separated (default: the usual)")
    tail.add_argument("--no-color", action="store_true", help="no colors (also: NO_COLOR)")
    tail.add_argument("--utc", action="store_true", help="show times in UTC, not local time")
    tail.add_argument(
        "--heartbeat",
        metavar="DURATION",
        help="while following, note on stderr when nothing arrived for this long",
    )
    tail.set_defaults(handler=_cmd_tail)


def _cmd_tail(args: argparse.Namespace) -> int:
    configure_logging_for(args, quiet=True)
    base = load_settings_for(args)
    options = _TailOptions.from_args(args, no_color_env=bool(environ_snapshot().get("NO_COLOR")))
    with tempfile.TemporaryDirectory(prefix="runflow-tail-") as state:
        settings = options.settings(base, Path(state), no_color=args.no_color)
        daemon = Daemon(
            settings,
            Path(state),
            RunOptions(
                grace_period=2.0,
                stop_when_drained=not options.follow,
                fatal_api_problems=True,
                extra_tasks=options.watchers(),
            ),
        )
        # An API refusal (bad key, filter or run, a cursor that never advances) ends the
        # run as one line with exit 4, like every expected error (cli.main prints it).
        anyio.run(daemon.run)
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
        except (TimeValueError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
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
            query=_combine(args.query, args.level),
            start_at=start_at,
            until_ns=until_ns,
            follow=args.follow,
            interval=interval,
            until_idle=until_idle,
            heartbeat=heartbeat,
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

    def watchers(self) -> list[Any]:
        watchers: list[Any] = []
        if self.until_idle is not None:
            watchers.append(_stop_when_idle(self.until_idle))
        if self.heartbeat is not None:
            watchers.append(_heartbeat(self.heartbeat))
        if self.until_ns is not None and self.follow:
            watchers.append(_stop_past(self.until_ns))
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


def _combine(query: str, levels: str | None) -> str:
    parts = [f"({query})"] if query.strip() else []
    if levels:
        names = [level.strip() for level in levels.split(",") if level.strip()]
        parts.append("(" + " OR ".join(f"level_code:{name}" for name in names) + ")")
    return " AND ".join(parts)


def _delivered(daemon: Daemon) -> int:
    return sum(
        delivery.health.delivered + delivery.health.filtered_out for delivery in daemon.deliveries
    )


def _stop_when_idle(seconds: float) -> Any:
    async def watch(daemon: Daemon) -> None:
        seen, quiet_since = _delivered(daemon), time.monotonic()
        while True:
            await anyio.sleep(min(0.2, seconds / 4))
            count = _delivered(daemon)
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            elif time.monotonic() - quiet_since >= seconds:
                daemon.request_stop("idle")
                return

    return watch


def _heartbeat(seconds: float) -> Any:
    async def watch(daemon: Daemon) -> None:
        seen, quiet_since = _delivered(daemon), time.monotonic()
        while True:
            await anyio.sleep(seconds / 4)
            count = _delivered(daemon)
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            elif time.monotonic() - quiet_since >= seconds:
                stamp = time.strftime("%H:%M:%S")
                print(f"[{stamp}] still following; nothing new for {seconds:g}s", file=sys.stderr)
                quiet_since = time.monotonic()

    return watch


def _stop_past(until_ns: int) -> Any:
    async def watch(daemon: Daemon) -> None:
        while True:
            await anyio.sleep(0.2)
            marks = [p.health.watermark_ns for p in daemon.pollers]
            if marks and all(m is not None and m >= until_ns for m in marks):
                for poller in daemon.pollers:
                    await poller.health.caught_up.wait()
                daemon.request_stop("until reached")
                return

    return watch
