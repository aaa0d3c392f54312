"""``runflow-tail alerts test --destination NAME``: send one sample alert to a destination.

The sink is built from the configuration exactly as the daemon builds it and sent one
alert document (a realistic failed run), so a wrong webhook URL, routing key or proxy
shows up now rather than at the first real failure. Exit 0 when the destination accepted
it; 1 with one line saying why when it did not; 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import anyio

from runflow_tail.alerts.messages import sample_alert
from runflow_tail.cli._common import configure_logging_for, load_settings_for
from runflow_tail.config.alerts import alert_stream
from runflow_tail.config.problems import suggest
from runflow_tail.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, SinkError
from runflow_tail.models import Entry


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    alerts = commands.add_parser(
        "alerts",
        help="alert destinations: send a test alert",
        description="Work with alert destinations (the sinks named by [[alerts]] rules).",
    )
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    test = actions.add_parser(
        "test",
        parents=[common],
        help="send a sample alert to one destination",
        description="Build the sink NAME from the configuration and send it one sample "
        "alert (a failed run). Exit 0 when it was accepted, 1 when not.",
    )
    test.add_argument(
        "--destination", "-d", required=True, metavar="NAME", help="the sink to send to"
    )
    test.set_defaults(handler=_cmd_test)

    def usage(args: argparse.Namespace) -> int:
        alerts.print_help(sys.stderr)
        return EXIT_CONFIG

    alerts.set_defaults(handler=usage)


def _cmd_test(args: argparse.Namespace) -> int:
    settings = load_settings_for(args, require_api_key=False)
    configure_logging_for(args, settings)
    name: str = args.destination
    if name not in settings.sinks:
        raise ConfigError(
            f"--destination {name!r}: no sink of that name{suggest(name, set(settings.sinks))}"
        )
    config = settings.sinks[name]
    now = time.time_ns()
    identity, raw, _doc = sample_alert(name, now)
    entry = Entry(0, alert_stream(name), identity, now, raw)
    sink = config.build(name)

    async def send() -> None:
        try:
            await sink.send([entry])
        finally:
            await sink.aclose()

    try:
        anyio.run(send)
    except SinkError as exc:
        print(f"runflow-tail: alerts test: {name} did not accept the alert: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"sent a test alert to {name} ({config.type})")
    return EXIT_OK
