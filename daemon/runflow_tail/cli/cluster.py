"""``runflow-tail cluster``: the daemons sharing a PostgreSQL state, which of them polls
each stream and delivers to each sink (lease owner, epoch, time left), and how far behind
each one is."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from runflow_tail.cli._common import load_settings_for, open_journal_store
from runflow_tail.errors import EXIT_OK, ConfigError
from runflow_tail.service.state import cluster_overview


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    cluster = commands.add_parser(
        "cluster",
        parents=[common],
        help="daemons sharing a PostgreSQL state: members, leases, lag",
        description="With state.backend = 'postgres': every member (daemon) with its "
        "heartbeat, every stream's and sink's lease (owner, epoch, time left), each "
        "stream's lag and each sink's offset. Works while the daemons run.",
    )
    cluster.add_argument("--json", action="store_true", help="machine-readable output")
    cluster.set_defaults(handler=_cmd_cluster)


def _cmd_cluster(args: argparse.Namespace) -> int:
    settings = load_settings_for(args, require_api_key=False)
    if settings.state.backend != "postgres":
        raise ConfigError(
            "runflow-tail cluster describes daemons sharing a PostgreSQL state; this "
            "configuration keeps its state in SQLite (state.backend = 'sqlite'): see "
            "runflow-tail status"
        )
    store = open_journal_store(settings)
    try:
        overview = cluster_overview(store)
    finally:
        store.close()
    if args.json:
        sys.stdout.write(msgspec.json.encode(overview).decode() + "\n")
    else:
        _print(overview)
    return EXIT_OK


def _print(overview: dict[str, Any]) -> None:
    members = overview["members"]
    live = [member for member in members if member["live"]]
    print(
        f"state {overview['database']}: {len(live)} live member(s), last seq {overview['last_seq']}"
    )
    print("members:")
    for member in members:
        state = (
            f"heartbeat {member['heartbeat_expires_in']:.1f}s left" if member["live"] else "gone"
        )
        print(
            f"  {member['member']:<24} {member['host']} pid {member['pid']} "
            f"v{member['version']} since {member['started_at']} ({state})"
        )
    print("leases:")
    for lease in overview["leases"]:
        owner = lease["owner"] or "-"
        left = f"{lease['expires_in']:.1f}s left" if lease["expires_in"] else "free"
        detail = ""
        if "lag_seconds" in lease:
            detail = f" lag={lease['lag_seconds']}s"
        if "offset" in lease:
            detail = f" offset={lease['offset']}"
        print(f"  {lease['lease']:<28} {owner:<24} epoch={lease['epoch']} {left}{detail}")
