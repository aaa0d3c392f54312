"""The operator's view of a state directory: what ``runflow-tail status`` and
``checkpoint show`` print, from the journal alone."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from runflow_tail.alerts.state import FIELDS_KEY, decode_problem
from runflow_tail.config.model import Settings
from runflow_tail.errors import JournalUnreadable
from runflow_tail.journal import CursorState, OperatorStore, is_locked
from runflow_tail.observability import redact
from runflow_tail.times import NS_PER_SECOND, format_instant


def snapshot(
    store: OperatorStore,
    settings: Settings,
    state_dir: Path,
    cluster: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Each stream's health, strategy, watermark and lag; each sink's offset, backlog and
    dead letters; alert rules naming run fields the API's runs lack; the journal's size.
    Read from the journal, so it works with or without a daemon running (SQLite WAL lets
    a second reader in). ``cluster``: a PostgreSQL state's members and leases, which say
    whether daemons run and which member polls or delivers what."""
    try:
        cursors = store.list_cursors()
        offsets = store.offsets()
        dead = store.count_dead_letters()
        streams = []
        now_ns = time.time_ns()
        for name, cursor in cursors.items():
            streams.append(describe_stream(name, cursor, now_ns))
        sinks = []
        for name in settings.sinks:
            subscribed = settings.streams_for_sink(name)
            offset = offsets.get(name)
            sinks.append(
                {
                    "sink": name,
                    "streams": list(subscribed),
                    "offset": offset,
                    "backlog": store.backlog(offset or 0, subscribed)
                    if offset is not None
                    else None,
                    "dead_letters": dead.get(name, 0),
                }
            )
        alerts = [
            {"rule": rule, "problem": decode_problem(raw).get("problem")}
            for (rule, key), raw in sorted(store.load_alert_state().items())
            if key == FIELDS_KEY
        ]
        owners: dict[str, str | None] = {}
        if cluster is not None:
            owners = {row["lease"]: row["owner"] for row in cluster["leases"]}
            for row in streams:
                row["member"] = owners.get(f"stream:{row['stream']}")
            for row in sinks:
                row["member"] = owners.get(f"sink:{row['sink']}")
        running = (
            is_locked(state_dir)
            if cluster is None
            else any(member["live"] for member in cluster["members"])
        )
        return {
            "state_dir": str(state_dir) if cluster is None else cluster["database"],
            "daemon_running": running,
            "journal_entries": store.entries_count(),
            "journal_bytes": store.size_bytes(),
            "last_seq": store.max_seq(),
            "streams": streams,
            "sinks": sinks,
            "alert_problems": alerts,
            **({"cluster": cluster} if cluster is not None else {}),
        }
    except sqlite3.DatabaseError as exc:
        raise JournalUnreadable(f"the journal in {state_dir} is unreadable ({exc})") from exc


def describe_stream(name: str, cursor: CursorState, now_ns: int) -> dict[str, Any]:
    return {
        "stream": name,
        "healthy": cursor.health_error is None,
        "problem": redact(cursor.health_error) if cursor.health_error else None,
        "strategy": cursor.strategy,
        "watermark": format_instant(cursor.watermark) if cursor.watermark is not None else None,
        "lag_seconds": round((now_ns - cursor.watermark) / NS_PER_SECOND, 3)
        if cursor.watermark is not None
        else None,
        "api_cursor": cursor.api_cursor,
        "last_success_at": cursor.last_success_at,
    }
