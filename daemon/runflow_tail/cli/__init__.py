"""The ``runflow-tail`` command line: one module per command, each adding its parser.

Exit codes: 0 ok; 1 unexpected failure; 2 usage or configuration error; 3 state problem
(state directory locked, unreadable journal, PostgreSQL refusing us); 4 the Runflow API
refused the request (bad key, filter or run), or a one-shot tail got no good answer from it
in time. No expected error ends in a Python traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from runflow_tail.cli import (
    alerts,
    check_config,
    checkpoint,
    cluster,
    demo,
    health,
    replay,
    run,
    sandbox,
    tail,
)
from runflow_tail.cli._common import Parser, common_options
from runflow_tail.errors import EXIT_CONFIG, EXIT_OK, ConfigError, RunflowTailError
from runflow_tail.observability import redact
from runflow_tail.version import __version__

EPILOG = """\
exit codes: 0 ok, 1 unexpected failure, 2 usage or configuration error,
            3 state problem (directory, journal or PostgreSQL),
            4 the Runflow API refused the request

Configuration: --config FILE (or RUNFLOW_TAIL_CONFIG), then RUNFLOW_TAIL_* environment
variables (RUNFLOW_TAIL_API__TIMEOUT=10s), then flags. The API key comes from
RUNFLOW_API_KEY, api.api_key_file, or systemd's $CREDENTIALS_DIRECTORY/runflow_api_key;
the API's URL from --api-url, RUNFLOW_API_URL or api.base_url (default https://api.runflow.io).
"""
COMMANDS = (run, check_config, sandbox, demo, health, checkpoint, cluster, replay, tail, alerts)
"""In the order ``runflow-tail --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="runflow-tail",
        description="Tail Runflow run logs into stdout, files, webhooks and alerts: "
        "durably, exactly once, in order.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"runflow-tail {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
    for command in COMMANDS:
        command.add_command(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return handler(args)
    except RunflowTailError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


def _print_error(exc: RunflowTailError) -> None:
    if isinstance(exc, ConfigError):
        print("runflow-tail: configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {redact(problem)}", file=sys.stderr)
    else:
        print(f"runflow-tail: {redact(str(exc))}", file=sys.stderr)


__all__ = ["build_parser", "main"]
