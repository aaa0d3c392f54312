"""``runflow-tail check-config``: every configuration problem at once, or the resolved
configuration (secrets masked); ``--online`` also asks the API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import msgspec

from runflow_tail.api.client import RunflowClient
from runflow_tail.cli._common import configure_logging_for, load_settings_for
from runflow_tail.config.model import Settings
from runflow_tail.errors import EXIT_OK, ApiError, ConfigError
from runflow_tail.sinks import registry


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration (offline)",
        description="Print every configuration problem and exit 2, or print the resolved "
        "configuration (secrets masked) and exit 0.",
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask the API whether the key works and each stream's query is accepted",
    )
    check.set_defaults(handler=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings_for(args)
    plugin_problems = registry.discover().problems
    if plugin_problems:
        raise ConfigError(list(plugin_problems))
    if args.online:
        configure_logging_for(args, settings)
        problems = anyio.run(check_online, settings)
        if problems:
            raise ConfigError(problems)
    resolved = settings.model_dump(mode="json")
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(resolved), indent=2).decode() + "\n")
    print("configuration OK", file=sys.stderr)
    return EXIT_OK


async def check_online(settings: Settings) -> list[str]:
    """One cheap request per stream; returns the problems found (empty when all is well)."""
    problems: list[str] = []
    client = RunflowClient(settings.api)
    try:
        try:
            await client.get_json("/v1/auth/me", what="checking the API key")
        except ApiError as exc:
            return [str(exc)]
        for stream in settings.streams:
            try:
                await client.fetch_logs(
                    stream.run_id, query=stream.query, fields=stream.fields, limit=1
                )
            except ApiError as exc:
                problems.append(f"stream {stream.name!r}: {exc}")
    finally:
        await client.aclose()
    return problems
