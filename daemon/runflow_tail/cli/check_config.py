"""``runflow-tail check-config``: every configuration problem at once, or the resolved
configuration (secrets masked); ``--online`` also asks the API: whether the key works,
whether each stream's query is accepted, and (from one run the API returns) which
``run.*`` fields the rules, streams and sinks name that the API's runs do not have."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec

from runflow_tail.alerts.field_watch import describe_missing
from runflow_tail.api.client import RunflowClient
from runflow_tail.cli._common import add_api_url, configure_logging_for, load_settings_for
from runflow_tail.config.load import no_key_message
from runflow_tail.config.model import Settings
from runflow_tail.errors import EXIT_OK, ApiError, ConfigError
from runflow_tail.filters import parse_filter
from runflow_tail.ingest.run_filter import sample_run
from runflow_tail.run_object import checked_path, has_path, missing_paths, run_paths
from runflow_tail.service.state import unpinned_local_sinks
from runflow_tail.sinks import registry


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration (offline)",
        description="Print every configuration problem and exit 2, or print the resolved "
        "configuration (secrets masked) and exit 0. Offline, a missing API key is a "
        "warning (the daemon will need one); with --online it is a problem.",
    )
    add_api_url(check)
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask the API whether the key works, each stream's query is accepted and "
        "the run fields the configuration names exist in the API's runs",
    )
    check.set_defaults(handler=_cmd_check_config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    # Offline, everything but the key can be checked without one: a file about to be
    # installed is often checked before its key exists.
    settings = load_settings_for(args, require_api_key=args.online)
    plugin_problems = registry.discover().problems
    if plugin_problems:
        raise ConfigError(list(plugin_problems))
    for warning in unpinned_local_sinks(settings):
        print(f"warning: {warning}", file=sys.stderr)
    if args.online:
        configure_logging_for(args, settings)
        problems, warnings = anyio.run(check_online, settings)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if problems:
            raise ConfigError(problems)
    if settings.api.api_key is None and settings.api.api_key_file is None:
        print(
            f"warning: {no_key_message()} (`run` and `check-config --online` need one)",
            file=sys.stderr,
        )
    resolved = settings.model_dump(mode="json")
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(resolved), indent=2).decode() + "\n")
    print("configuration OK", file=sys.stderr)
    return EXIT_OK


async def check_online(settings: Settings) -> tuple[list[str], list[str]]:
    """One cheap request per stream, and one for a run; returns the problems found and
    the warnings (both empty when all is well)."""
    problems: list[str] = []
    client = RunflowClient(settings.api)
    try:
        try:
            await client.get_json("/v1/auth/me", what="checking the API key")
        except ApiError as exc:
            return [str(exc)], []
        for stream in settings.streams:
            try:
                await client.fetch_logs(
                    stream.run_id, query=stream.query, fields=stream.fields, limit=1
                )
            except ApiError as exc:
                problems.append(f"stream {stream.name!r}: {exc}")
        try:
            run = await sample_run(client, "any", settings.api)
        except ApiError as exc:
            return problems, [f"could not fetch a run to check the run fields named: {exc}"]
    finally:
        await client.aclose()
    if run is None:
        return problems, ["no run yet in the organization: the run fields named are unchecked"]
    return problems, missing_run_fields(settings, run)


def missing_run_fields(settings: Settings, run: Mapping[str, Any]) -> list[str]:
    """What the configuration names under ``run.`` that ``run`` (one of the API's) lacks."""
    found: list[str] = []
    run_id = run.get("id")
    for index, rule in enumerate(settings.alerts):
        missing = missing_paths(run, rule.run_fields())
        if missing:
            found.append(
                f"alerts[{index}] ({rule.name}): {describe_missing(missing, runs=1)}; "
                f"checked against run {run_id}"
            )
    for index, stream in enumerate(settings.streams):
        names = {checked_path(path) for path in run_paths(parse_filter(stream.query).fields())}
        missing = sorted(path for path in names if not has_path(run, path))
        if missing:
            fields = ", ".join(f"run.{path}" for path in missing)
            found.append(
                f"streams[{index}] ({stream.name}): the API's runs have no {fields} to "
                "filter on: the stream will poll without its query and filter here"
            )
    for name, sink in settings.sinks.items():
        missing = missing_paths(run, run_paths(parse_filter(sink.match).fields()))
        if missing:
            fields = ", ".join(f"run.{path}" for path in missing)
            found.append(f"sinks.{name}.match: the API's runs have no {fields}")
    return found
