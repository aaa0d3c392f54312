"""Dead letters: batches a sink refused (or gave up on), kept with the reason for replay.

A mixin of ``JournalStore``: the same connection, the same single worker thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from runflow_tail.models import Entry


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sink: str
    first_seq: int
    last_seq: int
    reason: str
    created_at: float
    entries: list[Entry]


class DeadLetterStore:
    _db: sqlite3.Connection

    def set_offset(self, sink: str, seq: int) -> None:
        raise NotImplementedError  # JournalStore's

    def dead_letter(self, sink: str, batch: Sequence[Entry], reason: str, end: int) -> None:
        """Keep a batch the sink refused, and move the sink to ``end``, in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self.add_dead_letter(sink, batch, reason)
            self.set_offset(sink, end)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def add_dead_letter(
        self, sink: str, batch: Sequence[Entry], reason: str, *, key: str | None = None
    ) -> bool:
        """Keep ``batch``; with a ``key``, only once per sink (an entry dead-lettered alone
        is recognised when it comes again: a re-read, a batch re-sent after a restart).
        Returns whether it was added."""
        payload = msgspec.msgpack.encode(
            [(e.seq, e.stream, e.id, e.timestamp_ns, e.raw) for e in batch]
        )
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO dead_letters "
            "(sink, first_seq, last_seq, reason, created_at, entries, entry_key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sink, batch[0].seq, batch[-1].seq, reason, time.time(), payload, key),
        )
        return cursor.rowcount > 0

    def dead_letter_entries(self, sink: str, entries: Sequence[tuple[Entry, str]]) -> int:
        """Keep entries ``sink`` cannot handle, each alone with its reason, once each (keyed
        by journal position); the sink's offset is moved later, with its batch."""
        added = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for entry, reason in entries:
                added += self.add_dead_letter(sink, [entry], reason, key=f"seq:{entry.seq}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return added

    def dead_letters(self, sink: str) -> list[DeadLetter]:
        rows = self._db.execute(
            "SELECT id, sink, first_seq, last_seq, reason, created_at, entries "
            "FROM dead_letters WHERE sink = ? ORDER BY id",
            (sink,),
        ).fetchall()
        return [
            DeadLetter(row[0], row[1], row[2], row[3], row[4], row[5], _decode_dead_entries(row[6]))
            for row in rows
        ]

    def delete_dead_letter(self, letter_id: int) -> None:
        self._db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))

    def count_dead_letters(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT sink, count(*) FROM dead_letters GROUP BY sink"))


def _decode_dead_entries(payload: bytes) -> list[Entry]:
    rows = msgspec.msgpack.decode(payload, type=list[tuple[int, str, str, int, bytes]])
    return [Entry(*row) for row in rows]
