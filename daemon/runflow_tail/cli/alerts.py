"""``runflow-tail alerts test``: see a rule's alert, and send one to a destination.

``--rule NAME`` renders that rule's own alert (title, text, link, run context) for a
sample failed run, field for field as the API's current version renders runs, and prints
it. ``--destination NAME`` builds that sink exactly as the daemon builds it and sends it
the alert (the rule's, or a generic one), so a wrong webhook URL, routing key or proxy
shows up now rather than at the first real failure. Exit 0 when the destination accepted
it; 1 with one line saying why when it did not; 2 for a configuration problem.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio

from runflow_tail.alerts.sample import sample_alert
from runflow_tail.cli._common import configure_logging_for, load_settings_for
from runflow_tail.config.alerts import AlertRule, alert_stream
from runflow_tail.config.problems import suggest
from runflow_tail.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, SinkError
from runflow_tail.models import Entry


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    alerts = commands.add_parser(
        "alerts",
        help="alert rules and destinations: render a rule's alert, send a test alert",
        description="Work with [[alerts]] rules and their destinations (sinks).",
    )
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    test = actions.add_parser(
        "test",
        parents=[common],
        help="show a rule's alert for a sample failed run; send one to a destination",
        description="--rule NAME prints that rule's alert for a sample failed run; "
        "--destination NAME builds that sink from the configuration and sends it the alert "
        "(the rule's, or a generic one). Exit 0 when it was accepted, 1 when not.",
    )
    test.add_argument("--rule", "-r", metavar="NAME", help="the [[alerts]] rule to render")
    test.add_argument("--destination", "-d", metavar="NAME", help="the sink to send to")
    test.set_defaults(handler=_cmd_test)

    def usage(args: argparse.Namespace) -> int:
        alerts.print_help(sys.stderr)
        return EXIT_CONFIG

    alerts.set_defaults(handler=usage)


def _cmd_test(args: argparse.Namespace) -> int:
    if args.rule is None and args.destination is None:
        raise ConfigError("alerts test: give --rule NAME, --destination NAME, or both")
    settings = load_settings_for(args, require_api_key=False)
    configure_logging_for(args, settings)
    rule: AlertRule | None = None
    if args.rule is not None:
        rules = {rule.name: rule for rule in settings.alerts}
        if args.rule not in rules:
            raise ConfigError(
                f"--rule {args.rule!r}: no [[alerts]] rule of that name"
                f"{suggest(args.rule, set(rules))}"
            )
        rule = rules[args.rule]
    name: str | None = args.destination
    if name is not None and name not in settings.sinks:
        raise ConfigError(
            f"--destination {name!r}: no sink of that name{suggest(name, set(settings.sinks))}"
        )
    now = time.time_ns()
    identity, raw, doc = sample_alert(name or "-", now, rule)
    if rule is not None:
        print(describe(doc))
    if name is None:
        return EXIT_OK
    config = settings.sinks[name]
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


def describe(doc: Mapping[str, Any]) -> str:
    """A rendered alert for a person: what each destination will show, field by field."""
    run = doc["run"]
    model = (run.get("model") or {}).get("name")
    line = doc["lines"][0] if doc["lines"] else {}
    rows = [
        ("rule", f"{doc['rule']} ({doc['severity']}), a sample failed run"),
        ("title", doc["title"]),
        ("text", doc["text"]),
        ("link", doc["link"] or '- (set link = "https://...{run.id}" in the rule)'),
        ("outcome", run["outcome"]),
        ("model", f"{model} ({run['model_id']})"),
        ("flow", run["flow_id"]),
        (
            "failure",
            f"{run['failure_code']} at {run['failure_stage_code']}: {run['failure_message']}",
        ),
        ("started", run["started_at"]),
        ("ended", f"{run['completed_at']} after {run['duration_seconds']}s"),
        ("group", ", ".join(f"{k}={v}" for k, v in doc["group"].items())),
        ("line", f"{line.get('timestamp')} {line.get('level_code')} {line.get('message')}"),
    ]
    return "\n".join(f"{label + ':':<9} {value}" for label, value in rows)
