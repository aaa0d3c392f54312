"""The journal's PostgreSQL store: the same synchronous methods as the SQLite
``JournalStore``, run by ``Journal`` in its worker and reader threads the same way.

The guarantees are SQLite's, transaction for transaction: a page's entries with its
stream's cursor, a sink's offset only after delivery, a dead letter with its offset move,
the alert engine's output with its offset and rule state. What sharing adds is the
fence: each of those transactions also checks, before it commits and under a share lock
on the lease row, that this daemon still holds the stream's, sink's or alert engine's
lease with the epoch it claimed (schema.py). A write transaction goes in one round trip
(pipeline mode): the server never waits for this process in the middle of one, so a
daemon that freezes holds no lock while it is frozen. (After a refused fence the server
waits one round trip for the rollback; idle_in_transaction_session_timeout bounds that.)

Errors: a session that breaks (restart, partition) becomes ``StateUnavailable`` and is
replaced on the next call, which ``PostgresJournal`` makes after a backoff; a refused
fence becomes ``LeaseLost``. Every write can be repeated after an unknown outcome (a
commit whose answer was lost): re-sent entries are dropped as re-reads, offsets and
state are set rather than added to, dead letters are unique by their range.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import psycopg

from runflow_tail.journal.recent import Appended
from runflow_tail.journal.store import CursorState
from runflow_tail.models import Entry, FetchedEntry, RejectedEntry
from runflow_tail.ownership import sink_lease, stream_lease
from runflow_tail.postgres import sql
from runflow_tail.postgres.connection import Database, is_transient, unavailable
from runflow_tail.postgres.fences import Fences
from runflow_tail.postgres.schema import check_current, migrate
from runflow_tail.postgres.sessions import guarded, transaction
from runflow_tail.postgres.store_alerts import AlertsAndLetters, encode_letter


class PostgresStore(AlertsAndLetters):
    path: Path | None = None
    """No file: the journal's SQLite errors (a full disk, a damaged file) never come from here."""

    def __init__(self, database: Database, fences: Fences, *, migrate_schema: bool = True) -> None:
        self.database = database
        self.fences = fences
        self._writer = None
        self._reader = None
        self._swap = threading.Lock()
        # Connect now: a bad DSN or a server that is down is said at start, not later.
        writer = self._db()
        try:
            if migrate_schema:
                migrate(writer, database)
            else:
                check_current(writer, database)
        except psycopg.Error as exc:
            writer.close()
            if is_transient(exc):
                raise unavailable(database, exc) from None
            raise
        except BaseException:
            writer.close()
            raise

    # -- streams -------------------------------------------------------------------------

    @guarded
    def load_cursor(self, stream: str) -> CursorState | None:
        row = self._db().execute(sql.LOAD_CURSOR, (stream,)).fetchone()
        return None if row is None else CursorState(*row)

    @guarded
    def list_cursors(self) -> dict[str, CursorState]:
        rows = self._db().execute(sql.LIST_CURSORS).fetchall()
        return {row[0]: CursorState(*row[1:]) for row in rows}

    @guarded
    def save_cursor(self, stream: str, state: CursorState, *, health_only: bool = False) -> None:
        """Record where a stream stands; ``health_only`` changes only its health columns of
        a stream already recorded (a failure noted while its pages commit must not write an
        older watermark over a newer one). Fenced by the stream's lease either way."""
        lease = stream_lease(stream)
        epoch = self.fences.epoch(lease)
        db = self._db()
        with transaction(db):
            self._fence(db, lease, epoch)
            statement = sql.SAVE_HEALTH if health_only else sql.SAVE_CURSOR
            db.execute(statement, state.row(stream))

    @guarded
    def delete_cursor(self, stream: str) -> None:
        """Forget a stream's checkpoint (``checkpoint reset``, holding the stream's lease)."""
        lease = stream_lease(stream)
        epoch = self.fences.epoch(lease)
        db = self._db()
        with transaction(db):
            self._fence(db, lease, epoch)
            db.execute(b"DELETE FROM cursors WHERE stream = %s", (stream,))

    @guarded
    def append(
        self,
        stream: str,
        rows: Iterable[FetchedEntry],
        state: CursorState,
        rejected: Sequence[RejectedEntry] = (),
        sinks: Sequence[str] = (),
    ) -> Appended:
        """Insert new entries and the new cursor in one transaction, fenced by the
        stream's lease; re-reads are dropped (``UNIQUE(stream, id)``). ``rejected`` items
        (nothing to order them by) become a dead letter of each of ``sinks``, once each,
        in the same transaction, at the journal's position before the page."""
        fetched = list(rows)
        lease = stream_lease(stream)
        epoch = self.fences.epoch(lease)
        db = self._db()
        with transaction(db):
            if rejected and sinks:
                db.cursor(binary=True).execute(
                    sql.ADD_REJECTED, _rejected_letters(stream, rejected, sinks)
                )
            if fetched:
                added = db.cursor(binary=True)
                added.execute(sql.ADD_ENTRIES, self._entry_arrays([stream] * len(fetched), fetched))
            else:
                added = db.execute(sql.HEAD)
            self._fence(db, lease, epoch)
            db.execute(sql.SAVE_CURSOR, state.row(stream))
        result = added.fetchone()
        assert result is not None
        previous = int(result[0])
        if not fetched or result[1] is None:
            return Appended(previous, stream, [], [], previous)
        seqs: list[int] = result[1]
        first_of: dict[str, FetchedEntry] = {}
        for row in fetched:
            first_of.setdefault(row[0], row)
        new_rows = [first_of[entry_id] for entry_id in result[2]]
        return Appended(previous, stream, seqs, new_rows, seqs[-1])

    # -- sinks -----------------------------------------------------------------------------

    @guarded
    def max_seq(self) -> int:
        row = self._db().execute(sql.MAX_SEQ).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def offsets(self) -> dict[str, int]:
        return {row[0]: int(row[1]) for row in self._db().execute(sql.OFFSETS)}

    @guarded
    def ensure_offsets(self, sinks: Iterable[str]) -> dict[str, int]:
        """Register sinks seen for the first time at the journal's end (no fence: only a
        missing row is written)."""
        self._db().execute(sql.ENSURE_OFFSETS, (time.time(), list(sinks)))
        return self.offsets()

    @guarded
    def set_offset(self, sink: str, seq: int) -> None:
        lease = sink_lease(sink)
        epoch = self.fences.epoch(lease)
        db = self._db()
        with transaction(db):
            self._fence(db, lease, epoch)
            db.execute(sql.SET_OFFSET, (sink, seq, time.time()))

    @guarded
    def set_pending(self, sink: str, last_seq: int) -> None:
        lease = sink_lease(sink)
        epoch = self.fences.epoch(lease)
        db = self._db()
        with transaction(db):
            self._fence(db, lease, epoch)
            db.execute(sql.SET_PENDING, (last_seq, sink))

    @guarded
    def pending(self, sink: str) -> int | None:
        row = self._db().execute(sql.PENDING, (sink,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    @guarded
    def forget_consumer(self, consumer: str) -> None:
        self._db().execute(sql.FORGET_CONSUMER, (consumer,))

    @guarded
    def read_after(
        self,
        seq: int,
        streams: Sequence[str],
        *,
        max_events: int,
        max_bytes: int,
        until: int | None = None,
    ) -> list[Entry]:
        """Entries of ``streams`` in (seq, until], in seq order, at most one batch's worth
        (within ``max_bytes`` except that the first always goes). The reader's session."""
        if not streams:
            return []
        upper = until if until is not None else 2**63 - 1
        cursor = self._read_db().cursor(binary=True)
        cursor.execute(sql.READ_AFTER, (seq, upper, list(streams), max_events, max_bytes))
        return [Entry(*row) for row in cursor.fetchall()]

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own (SQLite's WAL needs this)."""

    @guarded
    def backlog(self, seq: int, streams: Sequence[str]) -> int:
        if not streams:
            return 0
        row = self._db().execute(sql.BACKLOG, (seq, list(streams))).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def read_range(
        self,
        streams: Sequence[str],
        start_ns: int,
        end_ns: int | None,
        *,
        after_seq: int,
        limit: int,
    ) -> list[Entry]:
        """Entries of ``streams`` with a timestamp in [start, end), in seq order (replay)."""
        end = end_ns if end_ns is not None else 2**63 - 1
        cursor = self._db().cursor(binary=True)
        cursor.execute(sql.READ_RANGE, (after_seq, list(streams), start_ns, end, limit))
        return [Entry(*row) for row in cursor.fetchall()]

    # -- retention -------------------------------------------------------------------------

    @guarded
    def size_bytes(self) -> int:
        row = self._db().execute(sql.SIZE, (sql.ROW_OVERHEAD,)).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def entries_count(self) -> int:
        row = self._db().execute(sql.COUNT).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def prune(self, stream: str, *, delivered_seq: int, older_than_ns: int) -> int:
        """Drop entries every subscribed sink is past and that are outside the de-dup window
        (no fence: what every sink has delivered is gone for all members alike)."""
        params = {"delivered": delivered_seq, "stream": stream, "older": older_than_ns}
        row = self._db().execute(sql.PRUNE, params).fetchone()
        return int(row[0]) if row else 0

    @guarded
    def drop_delivered_bytes(self, stream: str, *, delivered_seq: int) -> None:
        self._db().execute(sql.DROP_BYTES, {"delivered": delivered_seq, "stream": stream})


def _rejected_letters(
    stream: str, rejected: Sequence[RejectedEntry], sinks: Sequence[str]
) -> dict[str, object]:
    """``ADD_REJECTED``'s parameters: each item's letter, for each sink. The position is the
    database's (its entry goes with seq 0 and reads back with the letter's ``first_seq``)."""
    return {
        "now": time.time(),
        "sinks": list(sinks),
        "reasons": [f"rejected: {item.reason}" for item in rejected],
        "payloads": [encode_letter([Entry(0, stream, item.id, 0, item.raw)]) for item in rejected],
        "keys": [f"stream:{stream}:{item.id}" for item in rejected],
    }
