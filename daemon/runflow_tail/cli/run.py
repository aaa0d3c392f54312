"""``runflow-tail run``: the daemon."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio

from runflow_tail.cli._common import (
    add_api_url,
    add_max_requests_per_second,
    configure_logging_for,
    load_settings_for,
)
from runflow_tail.config.load import environ_snapshot
from runflow_tail.errors import EXIT_OK
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.service.systemd import SystemdNotifier


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the daemon: poll every stream, deliver to every sink",
        description="Poll every configured stream and deliver new entries to every sink "
        "until SIGTERM/SIGINT (graceful: finishes the batch in hand; a second signal stops "
        "at once). SIGHUP reloads the configuration (an invalid file keeps the running one).",
    )
    add_api_url(run)
    add_max_requests_per_second(run)
    run.add_argument("--state-dir", type=Path, metavar="DIR", help="override state.dir")
    run.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings_for(args)
    configure_logging_for(args, settings)
    assert settings.state.dir is not None
    options = RunOptions(
        reload=lambda: load_settings_for(args),
        notifier=SystemdNotifier.from_environ(environ_snapshot()),
    )
    anyio.run(Daemon(settings, settings.state.dir, options).run)
    return EXIT_OK
