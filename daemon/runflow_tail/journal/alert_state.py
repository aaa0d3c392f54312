"""The alert engine's durable state: its output, offset and rule state, in one transaction.

A mixin of ``JournalStore``: the same connection, the same single worker thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence


class AlertStateStore:
    _db: sqlite3.Connection

    def set_offset(self, sink: str, seq: int) -> None:
        raise NotImplementedError  # JournalStore's

    def max_seq(self) -> int:
        raise NotImplementedError  # JournalStore's

    def load_alert_state(self) -> dict[tuple[str, str], bytes]:
        rows = self._db.execute("SELECT rule, group_key, state FROM alert_state").fetchall()
        return {(row[0], row[1]): bytes(row[2]) for row in rows}

    def commit_alerts(
        self,
        consumer: str,
        offset: int | None,
        rows: Sequence[tuple[str, str, int, bytes]],
        upserts: Sequence[tuple[str, str, bytes]],
        deletes: Sequence[tuple[str, str]],
    ) -> int:
        """In one transaction: new alert entries ``(stream, id, ts, raw)``, the engine's
        offset (unless None) and its changed rule state. Returns the highest seq.

        Because output, offset and state commit together, a restart neither sends an alert
        twice nor forgets a cooldown or an open incident.
        """
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO entries (stream, id, ts, raw) VALUES (?, ?, ?, ?)", rows
            )
            if offset is not None:
                self.set_offset(consumer, offset)
            self._db.executemany(
                "INSERT INTO alert_state (rule, group_key, state, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rule, group_key) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                [(rule, group, state, now) for rule, group, state in upserts],
            )
            self._db.executemany(
                "DELETE FROM alert_state WHERE rule = ? AND group_key = ?", deletes
            )
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return self.max_seq()

    def forget_alert_rules(self, keep: Iterable[str]) -> int:
        """Drop the state of rules no longer configured."""
        kept = list(keep)
        marks = ",".join("?" * len(kept))
        where = f"WHERE rule NOT IN ({marks})" if kept else ""
        cursor = self._db.execute(f"DELETE FROM alert_state {where}", kept)  # noqa: S608
        return cursor.rowcount

    def forget_consumer(self, consumer: str) -> None:
        """Forget a consumer's offset, so that it starts at the journal's end when it returns."""
        self._db.execute("DELETE FROM sink_offsets WHERE sink = ?", (consumer,))

    def prune_alert_entries(self, readers: Iterable[tuple[str, str]], older_than_ns: int) -> int:
        """Drop alert entries their destination (``(stream, sink)`` pairs) has passed.

        Alert streams have no cursor, so the journal's retention never looks at them.
        """
        removed = 0
        for stream, sink in readers:
            cursor = self._db.execute(
                "DELETE FROM entries WHERE stream = ? AND ts < ? AND seq <= "
                "(SELECT offset FROM sink_offsets WHERE sink = ?)",
                (stream, older_than_ns, sink),
            )
            removed += cursor.rowcount
        return removed
