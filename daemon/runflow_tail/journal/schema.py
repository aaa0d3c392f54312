"""The journal's schema and statement shapes: migrations, tuning, the bulk insert.

Each migration runs once; every step a journal needs runs in one transaction (an upgrade
happens whole or not at all), and ``PRAGMA user_version`` records the schema a journal
has; a journal written by a newer runflow-tail is refused, not changed.
"""

from __future__ import annotations

import functools
import sqlite3

PAGE_SIZE = 32768
"""Bytes per database page, for journals created from now on (an existing journal keeps
its own: changing it rewrites the whole file). SQLite writes every page to the WAL, and
later to the database, as a frame of its own (two writes each), and a full run object
(about 6 KB) spills into overflow pages: with 4 KiB pages, inserting and checkpointing
6 KB entries took 17-18 µs of CPU each, with 32 KiB pages 9-10 µs; 200-byte entries cost
the same either way (2.7 µs). The price is in small commits: a live poll's few entries
write about 140 KiB of WAL instead of 23 KiB (100 µs of CPU instead of 52)."""
WRITER_AUTOCHECKPOINT_BYTES = 64 * 1024 * 1024
WAL_SIZE_LIMIT = 64 * 1024 * 1024
SCHEMA_VERSION = 5

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE entries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        raw BLOB NOT NULL,
        UNIQUE (stream, id)
    );
    CREATE TABLE cursors (
        stream TEXT PRIMARY KEY,
        watermark INTEGER,
        floor INTEGER,
        strategy TEXT,
        api_cursor TEXT,
        fingerprint TEXT NOT NULL,
        last_id TEXT,
        updated_at REAL NOT NULL,
        health_error TEXT,
        last_success_at REAL
    );
    CREATE TABLE sink_offsets (
        sink TEXT PRIMARY KEY,
        offset INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_at REAL NOT NULL,
        entries BLOB NOT NULL
    );
    CREATE INDEX dead_letters_by_sink ON dead_letters (sink, id);
    """,
    # The batch a sink was sending when it stopped, so it is re-sent with the same
    # boundaries (and idempotency keys) after a restart.
    2: "ALTER TABLE sink_offsets ADD COLUMN pending INTEGER",
    # The alert engine's rule state (window matches, cooldowns, open incidents, pending
    # digests), one row per rule and group, written with its offset and its alerts.
    3: """
    CREATE TABLE alert_state (
        rule TEXT NOT NULL,
        group_key TEXT NOT NULL,
        state BLOB NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (rule, group_key)
    )
    """,
    # Entries dead-lettered alone (one a sink cannot decode, one no sink can order) are
    # kept once per sink however often they come again. NULL for batches: never equal.
    4: """
    ALTER TABLE dead_letters ADD COLUMN entry_key TEXT;
    CREATE UNIQUE INDEX dead_letters_by_entry ON dead_letters (sink, entry_key)
    """,
    # De-duplicate by (stream, ts, id): the same re-reads, inserts at the index's end (see
    # store.py's docstring). SQLite cannot change a constraint, so the table is rebuilt;
    # AUTOINCREMENT's record moves with it, so no seq is ever given twice.
    5: """
    CREATE TABLE entries_by_time (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        raw BLOB NOT NULL,
        UNIQUE (stream, ts, id)
    );
    INSERT INTO entries_by_time (seq, stream, id, ts, raw)
        SELECT seq, stream, id, ts, raw FROM entries ORDER BY seq;
    DELETE FROM sqlite_sequence WHERE name = 'entries_by_time';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'entries_by_time', max(
        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0),
        coalesce((SELECT max(seq) FROM entries), 0)
    );
    DROP TABLE entries;
    ALTER TABLE entries_by_time RENAME TO entries
    """,
}


STATEMENT_ROWS = (64, 128, 256, 512)
"""The sizes of an INSERT statement, in rows of 5 parameters (unless SQLite was built with
a lower limit). Each statement is one GIL handoff, so a commit takes the fewest that hold
it; but SQLite still evaluates the rows a statement is padded with: a 500-entry page in a
1,024-row statement cost 2.5 µs per entry to append, in a 512-row one 1.4 µs. With
these sizes, padding stays under half of the last statement unless that is the smallest
(a live poll's few entries: 64 rows cost little)."""
_PADDING_ROW = (0, None, None, None, None)


@functools.lru_cache(maxsize=len(STATEMENT_ROWS))
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?)"] * rows)
    # Only placeholders are interpolated, never data.
    return f"INSERT OR IGNORE INTO entries (seq, stream, id, ts, raw) VALUES {values}"  # noqa: S608


def _tune(db: sqlite3.Connection) -> None:
    # The de-duplication index's hot pages stay in memory.
    db.execute("PRAGMA cache_size=-8192")
    db.execute("PRAGMA temp_store=MEMORY")


class _NewerSchema(sqlite3.DatabaseError):
    """Written by a newer runflow-tail: upgrading is the way out, not a reset."""
