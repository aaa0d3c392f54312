"""The journal's SQLite store: synchronous, called from one worker thread only.

Tables: ``entries`` (every fetched entry, bytes as received, ``UNIQUE(stream, ts, id)``),
``cursors`` (per stream: watermark, strategy, API cursor, query fingerprint, health),
``sink_offsets`` (per sink: the last ``seq`` delivered), ``dead_letters``
(dead_letters.py) and ``alert_state`` (alert_state.py).
``seq`` is AUTOINCREMENT so it never goes backwards, even after retention empties the table.

Why the de-duplication key is ``(stream, ts, id)`` and not ``(stream, id)``: an entry never
changes, so a re-read brings the same id with the same timestamp (parsed to the same
nanoseconds, whichever way it is written), and the two keys drop exactly the same
re-reads. But ids are random UUIDs: keyed by id alone, every insert lands on a random page
of the index; keyed by timestamp first, inserts go to the end of it, as entries arrive in
timestamp order. Measured on 200,000 projected entries in pages of 500: 7.4 µs of CPU and
90-110k rows/s by id, 2.6 µs and 210-315k rows/s by timestamp and id.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from runflow_tail.errors import JournalUnreadable, StateError
from runflow_tail.journal.alert_state import AlertStateStore
from runflow_tail.journal.batch_read import read_batch
from runflow_tail.journal.dead_letters import DeadLetterStore
from runflow_tail.journal.recent import Appended
from runflow_tail.journal.schema import (
    _MIGRATIONS,
    _PADDING_ROW,
    PAGE_SIZE,
    SCHEMA_VERSION,
    STATEMENT_ROWS,
    WAL_SIZE_LIMIT,
    WRITER_AUTOCHECKPOINT_BYTES,
    _insert_sql,
    _NewerSchema,
    _tune,
)
from runflow_tail.models import Entry, FetchedEntry, RejectedEntry

JOURNAL_NAME = "journal.sqlite3"
_CURSOR_COLUMNS = (
    "fingerprint",
    "watermark",
    "floor",
    "strategy",
    "api_cursor",
    "last_id",
    "health_error",
    "last_success_at",
    "updated_at",
)
_HEALTH_COLUMNS = ("health_error", "last_success_at", "updated_at")
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024
"""``PRAGMA quick_check`` at start for journals up to this size (it reads every page:
0.11 s for 210 MB in the page cache here; a cold disk's read time); a larger one is
checked as it is read (any later damage is the same ``unreadable``)."""
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


class JournalDiskFull(Exception):
    """The disk under the journal is full: the write was rolled back whole; retry later."""


def unreadable(path: Path, exc: BaseException) -> JournalUnreadable:
    """The one message for a journal that cannot be read, at start or at any later point."""
    return JournalUnreadable(
        f"the journal {path} is unreadable ({exc}). Nothing was changed. To start "
        f"over, run `runflow-tail checkpoint reset --all` (it moves the file aside), "
        "or restore it from a backup."
    )


def translated(path: Path, exc: sqlite3.Error) -> Exception:
    """What a SQLite error means for the journal's user: a full disk (wait, then retry the
    same call), a damaged file (stop with ``unreadable``), or neither (unchanged)."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code == _SQLITE_FULL:
        return JournalDiskFull(f"the disk holding {path} is full ({exc})")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return unreadable(path, exc)
    return exc


def create_private(path: Path) -> None:
    """Create an empty journal file, mode 0600 whatever the umask (SQLite gives its -wal
    and -shm files the database file's mode)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


@dataclass(frozen=True, slots=True)
class CursorState:
    """Where a stream stands. ``watermark`` is the newest timestamp journaled (epoch ns);
    ``floor`` drops entries older than the stream's start; ``api_cursor`` is the cursor that
    fetched the last page (cursor strategy)."""

    fingerprint: str
    watermark: int | None = None
    floor: int | None = None
    strategy: str | None = None
    api_cursor: str | None = None
    last_id: str | None = None
    health_error: str | None = None
    last_success_at: float | None = None
    updated_at: float = field(default=0.0, compare=False)

    def advanced(self, entries: Sequence[tuple[str, int, *tuple[object, ...]]]) -> CursorState:
        """The state after journaling entries that start with ``(id, timestamp, ...)``."""
        if not entries:
            return self
        newest = self.watermark
        last_id = self.last_id
        for entry in entries:
            if newest is None or entry[1] >= newest:
                newest, last_id = entry[1], entry[0]
        return replace(self, watermark=newest, last_id=last_id)

    def row(self, stream: str) -> tuple[object, ...]:
        """The ``cursors`` table's columns in order, ``updated_at`` now (both backends)."""
        return (
            stream,
            self.fingerprint,
            self.watermark,
            self.floor,
            self.strategy,
            self.api_cursor,
            self.last_id,
            self.health_error,
            self.last_success_at,
            time.time(),
        )


MINIMUM_SQLITE = (3, 25, 0)
"""Upserts (3.24) and window functions (3.25, batch_read.py)."""


class JournalStore(DeadLetterStore, AlertStateStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        if sqlite3.sqlite_version_info < MINIMUM_SQLITE:
            raise JournalUnreadable(
                f"this Python links SQLite {sqlite3.sqlite_version}; the journal needs "
                f"{'.'.join(map(str, MINIMUM_SQLITE))} or newer: use a newer Python build "
                "or the Docker image"
            )
        try:
            create_private(path)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except (sqlite3.Error, OSError) as exc:
            raise JournalUnreadable(
                f"cannot open the journal {path} ({exc}); check state.dir and its permissions"
            ) from exc
        try:
            # Only takes effect on a journal that has no page yet (a new one).
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives any process crash; after a power loss the newest
            # transactions may roll back together with their cursor, never apart from it.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints (copying the WAL into the database, with fsyncs) run from the
            # reader's thread (``checkpoint``); this is only the writer's safety net.
            page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._db.execute(
                f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_BYTES // page_size}"
            )
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            _tune(self._db)
            limit = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 5
            self._statement_rows = sorted({min(rows, limit) for rows in STATEMENT_ROWS})
            self._migrate()
            self._db.execute("SELECT count(*) FROM cursors").fetchone()
            self._quick_check()
            # Deliveries read through their own connection (and worker thread): WAL lets
            # them read committed pages while the poller's next page is being written.
            self._reader = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            _tune(self._reader)
        except _NewerSchema as exc:
            self._db.close()
            raise JournalUnreadable(f"the journal {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            if isinstance(translated(path, exc), JournalDiskFull):
                raise StateError(
                    f"the disk holding the journal {path} is full ({exc}); free some space "
                    "and start again (nothing was changed)"
                ) from exc
            raise unreadable(path, exc) from exc

    def _quick_check(self) -> None:
        """Damage anywhere in the file, found at start rather than mid-run (when cheap)."""
        if self.path.stat().st_size > QUICK_CHECK_MAX_BYTES:
            return
        found = [row[0] for row in self._db.execute("PRAGMA quick_check(3)").fetchall()]
        if found != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(str(problem) for problem in found))

    def close(self) -> None:
        self._reader.close()
        self._db.close()

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise _NewerSchema(
                f"schema version {version} is newer than this runflow-tail understands "
                f"({SCHEMA_VERSION}); upgrade runflow-tail"
            )
        if version == SCHEMA_VERSION:
            return
        # Every step in one transaction: an upgrade happens whole or not at all, and a new
        # journal writes each page of its schema once, not once per step.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # -- streams -----------------------------------------------------------------------

    def load_cursor(self, stream: str) -> CursorState | None:
        row = self._db.execute(
            "SELECT fingerprint, watermark, floor, strategy, api_cursor, last_id, "
            "health_error, last_success_at, updated_at FROM cursors WHERE stream = ?",
            (stream,),
        ).fetchone()
        return None if row is None else CursorState(*row)

    def save_cursor(self, stream: str, state: CursorState, *, health_only: bool = False) -> None:
        """Record where a stream stands; ``health_only`` changes only its health columns of
        a stream already recorded (a failure noted while its pages commit must not write an
        older watermark over a newer one)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._write_cursor(stream, state, health_only=health_only)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _write_cursor(self, stream: str, state: CursorState, *, health_only: bool = False) -> None:
        updated = _HEALTH_COLUMNS if health_only else _CURSOR_COLUMNS
        self._db.execute(
            "INSERT INTO cursors (stream, fingerprint, watermark, floor, strategy, api_cursor, "
            "last_id, health_error, last_success_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
            + ", ".join(f"{column} = excluded.{column}" for column in updated),
            state.row(stream),
        )

    def list_cursors(self) -> dict[str, CursorState]:
        rows = self._db.execute(
            "SELECT stream, fingerprint, watermark, floor, strategy, api_cursor, last_id, "
            "health_error, last_success_at, updated_at FROM cursors ORDER BY stream"
        ).fetchall()
        return {row[0]: CursorState(*row[1:]) for row in rows}

    def delete_cursor(self, stream: str) -> None:
        """Forget a stream's checkpoint; its entries stay, so re-reads are still recognised."""
        self._db.execute("DELETE FROM cursors WHERE stream = ?", (stream,))

    def append(
        self,
        stream: str,
        rows: Iterable[FetchedEntry],
        state: CursorState,
        rejected: Sequence[RejectedEntry] = (),
        sinks: Sequence[str] = (),
    ) -> Appended:
        """Insert new entries and the new cursor in one transaction.

        Re-read entries are dropped by ``UNIQUE(stream, ts, id)``; the cursor can never run
        ahead of the data. Seqs are given here, in order, so the caller learns each new
        entry's seq without reading it back (an ignored re-read leaves a harmless gap).
        ``rejected`` items (nothing to order them by) become a dead letter of each of
        ``sinks``, once each, in the same transaction, with timestamp 0.
        """
        new_rows: Sequence[FetchedEntry] = list(rows)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            previous = self._sequence()
            for item in rejected:
                entry = Entry(previous, stream, item.id, 0, item.raw)
                for sink in sinks:
                    key = f"stream:{stream}:{item.id}"
                    self.add_dead_letter(sink, [entry], f"rejected: {item.reason}", key=key)
            before = self._db.total_changes
            self._insert_entries(stream, previous + 1, new_rows)
            inserted = self._db.total_changes - before
            if not inserted and not rejected and self.load_cursor(stream) == state:
                # Only re-reads, and a cursor that would not move: a quiet stream's polls
                # (lookback re-reads every poll_interval) then write nothing, rather than two
                # 32 KiB pages each time (5.5 GB a day at one poll a second).
                self._db.execute("ROLLBACK")
                return Appended(previous, stream, (), (), self.max_seq())
            self._write_cursor(stream, state)
            seqs: Sequence[int] = range(previous + 1, previous + 1 + len(new_rows))
            if inserted < len(new_rows):
                present = {
                    row[0]
                    for row in self._db.execute(
                        "SELECT seq FROM entries WHERE seq > ? AND seq <= ?",
                        (previous, previous + len(new_rows)),
                    )
                }
                pairs = zip(seqs, new_rows, strict=True)
                kept = [(seq, row) for seq, row in pairs if seq in present]
                seqs = [seq for seq, _ in kept]
                new_rows = [row for _, row in kept]
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some errors (a full disk): do not
            # turn the real error into "no transaction is active".
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        last_seq = seqs[-1] if seqs else self.max_seq()
        return Appended(previous, stream, seqs, new_rows, last_seq)

    def _sequence(self) -> int:
        """The highest seq ever given: AUTOINCREMENT's record (it never goes backwards, even
        when retention empties the table), and never below a seq the table holds, so a
        damaged record can make a new entry's seq collide, and be dropped, never."""
        row = self._db.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0),"
            " coalesce((SELECT max(seq) FROM entries), 0))"
        ).fetchone()
        return int(row[0])

    def _insert_entries(self, stream: str, first_seq: int, rows: Sequence[FetchedEntry]) -> None:
        """``INSERT OR IGNORE`` many rows per statement, seqs from ``first_seq`` on.

        executemany steps once per row, and the sqlite3 module gives up the GIL around each
        step: with the event loop busy, this thread then waits for the GIL on every row
        (measured: 100k rows/s alone, a few hundred per second beside a busy thread). One
        statement per chunk keeps the B-tree work in C with the GIL released.

        A prepared statement costs about 1 KB per row and the connection caches every
        distinct one, so there are only a few sizes (``STATEMENT_ROWS``): full statements
        of the largest, then the smallest that holds the rest, padded with rows that NOT
        NULL makes SQLite skip (an explicit seq 0, so no sequence number is used).
        """
        sizes = self._statement_rows
        start = 0
        while start < len(rows):
            left = len(rows) - start
            size = next((fits for fits in sizes if fits >= left), sizes[-1])
            chunk = rows[start : start + size]
            params: list[object] = []
            for seq, (entry_id, timestamp_ns, raw) in enumerate(chunk, first_seq + start):
                params += (seq, stream, entry_id, timestamp_ns, raw)
            params += _PADDING_ROW * (size - len(chunk))
            self._db.execute(_insert_sql(size), params)
            start += size

    # -- sinks -------------------------------------------------------------------------

    def max_seq(self) -> int:
        """The journal's end: the highest seq of an entry it holds. sqlite_sequence only
        once retention emptied the table, because ignored re-reads advance that counter
        without adding anything to deliver."""
        row = self._db.execute("SELECT max(seq) FROM entries").fetchone()
        if row and row[0] is not None:
            return int(row[0])
        return self._sequence()

    def offsets(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT sink, offset FROM sink_offsets").fetchall())

    def ensure_offsets(self, sinks: Iterable[str]) -> dict[str, int]:
        """Register sinks seen for the first time at the journal's end: a sink added to a
        running setup receives new entries, not the whole retained history."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            end = self.max_seq()
            now = time.time()
            self._db.executemany(
                "INSERT OR IGNORE INTO sink_offsets (sink, offset, updated_at) VALUES (?, ?, ?)",
                ((sink, end, now) for sink in sinks),
            )
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return self.offsets()

    def set_offset(self, sink: str, seq: int) -> None:
        self._db.execute(
            "INSERT INTO sink_offsets (sink, offset, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (sink) DO UPDATE SET offset = excluded.offset, pending = NULL, "
            "updated_at = excluded.updated_at",
            (sink, seq, time.time()),
        )

    def set_pending(self, sink: str, last_seq: int) -> None:
        self._db.execute("UPDATE sink_offsets SET pending = ? WHERE sink = ?", (last_seq, sink))

    def pending(self, sink: str) -> int | None:
        row = self._db.execute(
            "SELECT pending FROM sink_offsets WHERE sink = ?", (sink,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def read_after(
        self,
        seq: int,
        streams: Sequence[str],
        *,
        max_events: int,
        max_bytes: int,
        until: int | None = None,
    ) -> list[Entry]:
        """Entries of ``streams`` in (seq, until], in seq order, at most one batch's worth.

        Uses the reader connection: call it from one thread at a time (``Journal.read``).
        """
        return read_batch(
            self._reader,
            seq,
            streams,
            max_events=max_events,
            max_bytes=max_bytes,
            until=until,
        )

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database without blocking the writer.

        Runs on the reader connection (call it through ``Journal.read``), so the poller's
        commits never wait for the disk work a checkpoint does.
        """
        self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def backlog(self, seq: int, streams: Sequence[str]) -> int:
        if not streams:
            return 0
        marks = ",".join("?" * len(streams))
        row = self._db.execute(
            f"SELECT count(*) FROM entries WHERE seq > ? AND +stream IN ({marks})",  # noqa: S608
            (seq, *streams),
        ).fetchone()
        return int(row[0])

    def read_range(
        self,
        streams: Sequence[str],
        start_ns: int,
        end_ns: int | None,
        *,
        after_seq: int,
        limit: int,
    ) -> list[Entry]:
        """Entries of ``streams`` with a timestamp in [start, end), in seq order (for replay)."""
        marks = ",".join("?" * len(streams))
        rows = self._db.execute(
            f"SELECT seq, stream, id, ts, raw FROM entries WHERE seq > ? AND +stream IN ({marks}) "  # noqa: S608
            "AND ts >= ? AND ts < ? AND length(raw) > 0 ORDER BY seq LIMIT ?",
            (after_seq, *streams, start_ns, end_ns if end_ns is not None else 2**63 - 1, limit),
        ).fetchall()
        return [Entry(*row) for row in rows]

    # -- retention ---------------------------------------------------------------------

    def size_bytes(self) -> int:
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page_size) * (int(pages) - int(free))

    def prune(self, stream: str, *, delivered_seq: int, older_than_ns: int) -> int:
        """Drop entries every subscribed sink is past and that are outside the de-dup window."""
        cursor = self._db.execute(
            "DELETE FROM entries WHERE seq <= ? AND +stream = ? AND ts < ?",
            (delivered_seq, stream, older_than_ns),
        )
        return cursor.rowcount

    def drop_delivered_bytes(self, stream: str, *, delivered_seq: int) -> None:
        self._db.execute(
            "UPDATE entries SET raw = X'' WHERE seq <= ? AND +stream = ? AND length(raw) > 0",
            (delivered_seq, stream),
        )

    def entries_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])
