"""The operator's view of a PostgreSQL state (``status``, ``cluster``, ``checkpoint``,
``replay``): the store, every member and lease with its lag, and holding a stream's
lease for the moment an operator moves its checkpoint.

These commands run beside the daemons. Reading needs nothing; a checkpoint change claims
the stream's lease first (as a member would), so no daemon can poll the stream while it
is being moved, and the write is fenced like any other. A stream some live member polls
is refused with its name: stop that daemon (or all of them) first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from runflow_tail.config.model import StateSettings
from runflow_tail.errors import StateError, StateLocked
from runflow_tail.ownership import lease_kind
from runflow_tail.postgres.connection import Database, is_transient, unavailable
from runflow_tail.postgres.fences import Fences
from runflow_tail.postgres.leases import CLAIM, LEASES, LEASES_CHANGED, MEMBERS, RELEASE, Identity
from runflow_tail.postgres.store import PostgresStore
from runflow_tail.times import NS_PER_SECOND, format_instant


def open_operator_store(state: StateSettings, me: Identity) -> PostgresStore:
    database = Database.from_settings(state, me.name)
    # The operator's commands change no schema: a missing one is most likely a typo.
    return PostgresStore(database, Fences(me.id), migrate_schema=False)


def overview(store: PostgresStore) -> dict[str, Any]:
    """Members (live first), every lease with its owner, each stream's lag and each sink's
    backlog: what ``runflow-tail cluster`` prints."""
    try:
        db = store._db()
        members = db.execute(MEMBERS).fetchall()
        leases = db.execute(LEASES).fetchall()
    except psycopg.Error as exc:
        if is_transient(exc):
            raise unavailable(store.database, exc) from None
        raise
    cursors = store.list_cursors()
    offsets = store.offsets()
    now_ns = time.time_ns()
    rows = []
    for name, kind, _owner, owner_name, host, epoch, expires_in, acquired_at in leases:
        target = name.partition(":")[2]
        row: dict[str, Any] = {
            "lease": name,
            "kind": kind,
            "owner": owner_name if expires_in > 0 else None,
            "host": host if expires_in > 0 else None,
            "epoch": epoch,
            "expires_in": round(expires_in, 3) if expires_in > 0 else None,
            "since": acquired_at.isoformat() if acquired_at and expires_in > 0 else None,
        }
        cursor = cursors.get(target) if lease_kind(name) == "stream" else None
        if cursor is not None and cursor.watermark is not None:
            row["watermark"] = format_instant(cursor.watermark)
            row["lag_seconds"] = round((now_ns - cursor.watermark) / NS_PER_SECOND, 3)
        if lease_kind(name) == "sink" and target in offsets:
            row["offset"] = offsets[target]
        rows.append(row)
    return {
        "database": store.database.describe(),
        "members": [
            {
                "member": member_name,
                "host": host,
                "pid": pid,
                "version": version,
                "started_at": started_at.isoformat(),
                "live": expires_in > 0,
                "heartbeat_expires_in": round(expires_in, 3),
            }
            for _id, member_name, host, pid, version, started_at, expires_in in members
        ],
        "leases": rows,
        "last_seq": store.max_seq(),
    }


@contextlib.contextmanager
def holding(store: PostgresStore, lease: str, ttl: float = 60.0) -> Iterator[None]:
    """Hold ``lease`` for an operator's write (a checkpoint move); refused while a live
    member holds it. Released afterwards, and the members told."""
    db = store._db()
    member = store.fences.member_id
    try:
        claimed = db.execute(
            CLAIM, {"id": member, "ttl": ttl, "names": [lease], "kinds": [lease_kind(lease)]}
        ).fetchall()
        if not claimed:
            row = db.execute(
                b"SELECT m.name FROM leases AS l LEFT JOIN members AS m ON m.id = l.owner"
                b" WHERE l.name = %s",
                (lease,),
            ).fetchone()
            holder = row[0] if row and row[0] else "another runflow-tail"
            raise StateLocked(
                f"{lease} is held by member {holder}; checkpoint changes need it stopped "
                "(runflow-tail cluster shows who holds what)"
            )
        epoch = int(claimed[0][1])
    except psycopg.Error as exc:
        if is_transient(exc):
            raise unavailable(store.database, exc) from None
        raise
    store.fences.hold(lease, epoch)
    try:
        yield
    finally:
        store.fences.drop(lease)
        with contextlib.suppress(psycopg.Error):
            db.execute(
                RELEASE,
                {
                    "id": member,
                    "names": [lease],
                    "epochs": [epoch],
                    "channel": store.database.channel,
                    "payload": LEASES_CHANGED,
                },
            )


def refuse_reset_all() -> StateError:
    return StateError(
        "checkpoint reset --all moves a SQLite journal aside; with state.backend = "
        "'postgres' the state is shared by every daemon: stop them all, then drop the "
        "schema (DROP SCHEMA <state.pg_schema> CASCADE) to start over"
    )
