"""Dead letters and the alert engine's state in PostgreSQL: a mixin of ``PostgresStore``,
as ``dead_letters.py`` and ``alert_state.py`` are of the SQLite store.

A dead letter moves its sink's offset in the same transaction, fenced by the sink's
lease; the alert engine's output, offset and rule state commit together, fenced by its
own lease (``ownership.ALERTS_LEASE``), so a restart or a failover neither sends an
alert twice nor forgets a cooldown or an open incident.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from runflow_tail.journal.dead_letters import DeadLetter
from runflow_tail.models import Entry
from runflow_tail.ownership import ALERTS_LEASE, sink_lease
from runflow_tail.postgres import sql
from runflow_tail.postgres.sessions import Sessions, guarded, transaction


class AlertsAndLetters(Sessions):
    def _entry_arrays(self, streams: Sequence[str], rows: Sequence[Any]) -> dict[str, Any]:
        """``ADD_ENTRIES``'s parameters for rows that start with ``(id, timestamp, raw)``."""
        return {
            "streams": streams,
            "ids": [row[0] for row in rows],
            "stamps": [row[1] for row in rows],
            "raws": [row[2] for row in rows],
            "channel": self.database.channel,
        }

    # -- dead letters ----------------------------------------------------------------------

    @guarded
    def dead_letter(self, sink: str, batch: Sequence[Entry], reason: str, end: int) -> None:
        """Keep a batch the sink refused, and move the sink to ``end``, in one transaction."""
        lease = sink_lease(sink)
        epoch = self.fences.epoch(lease)
        payload = encode_letter(batch)
        now = time.time()
        db = self._db()
        with transaction(db):
            self._fence(db, lease, epoch)
            db.execute(
                sql.ADD_DEAD_LETTER,
                (sink, batch[0].seq, batch[-1].seq, reason, now, payload),
            )
            db.execute(sql.SET_OFFSET, (sink, end, now))

    @guarded
    def dead_letter_entries(self, sink: str, entries: Sequence[tuple[Entry, str]]) -> int:
        """Keep entries ``sink`` cannot handle, each alone with its reason, once each (keyed
        by journal position), fenced by the sink's lease; the sink's offset is moved later,
        with its batch. Returns how many were new."""
        if not entries:
            return 0
        lease = sink_lease(sink)
        epoch = self.fences.epoch(lease)
        db = self._db()
        added = db.cursor(binary=True)
        with transaction(db):
            self._fence(db, lease, epoch)
            added.execute(
                sql.ADD_ENTRY_LETTERS,
                {
                    "sink": sink,
                    "now": time.time(),
                    "seqs": [entry.seq for entry, _ in entries],
                    "reasons": [reason for _, reason in entries],
                    "payloads": [encode_letter([entry]) for entry, _ in entries],
                    "keys": [f"seq:{entry.seq}" for entry, _ in entries],
                },
            )
        return added.rowcount

    @guarded
    def dead_letters(self, sink: str) -> list[DeadLetter]:
        rows = self._db().execute(sql.DEAD_LETTERS, (sink,)).fetchall()
        return [
            DeadLetter(row[0], row[1], row[2], row[3], row[4], row[5], _decode(row[6], row[2]))
            for row in rows
        ]

    @guarded
    def delete_dead_letter(self, letter_id: int) -> None:
        self._db().execute(b"DELETE FROM dead_letters WHERE id = %s", (letter_id,))

    @guarded
    def count_dead_letters(self) -> dict[str, int]:
        rows = self._db().execute(b"SELECT sink, count(*) FROM dead_letters GROUP BY sink")
        return {row[0]: int(row[1]) for row in rows}

    # -- the alert engine ------------------------------------------------------------------

    @guarded
    def load_alert_state(self) -> dict[tuple[str, str], bytes]:
        rows = self._db().execute(b"SELECT rule, group_key, state FROM alert_state").fetchall()
        return {(row[0], row[1]): bytes(row[2]) for row in rows}

    @guarded
    def commit_alerts(
        self,
        consumer: str,
        offset: int | None,
        rows: Sequence[tuple[str, str, int, bytes]],
        upserts: Sequence[tuple[str, str, bytes]],
        deletes: Sequence[tuple[str, str]],
    ) -> int:
        """In one transaction, fenced by the alert engine's lease: new alert entries
        ``(stream, id, ts, raw)`` (dropped when already there), the engine's offset (unless
        None) and its changed rule state. Returns the journal's end."""
        epoch = self.fences.epoch(ALERTS_LEASE)
        now = time.time()
        db = self._db()
        with transaction(db):
            added = None
            if rows:
                added = db.cursor(binary=True)
                entries = [row[1:] for row in rows]
                added.execute(sql.ADD_ENTRIES, self._entry_arrays([r[0] for r in rows], entries))
            self._fence(db, ALERTS_LEASE, epoch)
            if offset is not None:
                db.execute(sql.SET_OFFSET, (consumer, offset, now))
            if upserts:
                db.cursor().executemany(
                    sql.UPSERT_ALERT_STATE,
                    [(rule, group, state, now) for rule, group, state in upserts],
                )
            if deletes:
                db.cursor().executemany(
                    b"DELETE FROM alert_state WHERE rule = %s AND group_key = %s", deletes
                )
        result = added.fetchone() if added is not None else None
        if result is not None and result[1]:
            return int(result[1][-1])
        return self.max_seq()

    def max_seq(self) -> int:
        raise NotImplementedError  # PostgresStore's

    @guarded
    def forget_alert_rules(self, keep: Iterable[str]) -> int:
        """Drop the state of rules no longer configured (the engine, holding its lease)."""
        epoch = self.fences.epoch(ALERTS_LEASE)
        db = self._db()
        with transaction(db):
            self._fence(db, ALERTS_LEASE, epoch)
            cursor = db.execute(
                b"DELETE FROM alert_state WHERE NOT (rule = ANY(%s::text[]))", (list(keep),)
            )
        return cursor.rowcount

    @guarded
    def prune_alert_entries(self, readers: Iterable[tuple[str, str]], older_than_ns: int) -> int:
        """Drop alert entries their destination (``(stream, sink)`` pairs) has passed."""
        removed = 0
        db = self._db()
        for stream, sink in readers:
            params = {"stream": stream, "sink": sink, "older": older_than_ns}
            row = db.execute(sql.PRUNE_ALERTS, params).fetchone()
            removed += int(row[0]) if row else 0
        return removed


def encode_letter(entries: Sequence[Entry]) -> bytes:
    """A dead letter's entries, as the SQLite journal keeps them."""
    return msgspec.msgpack.encode([(e.seq, e.stream, e.id, e.timestamp_ns, e.raw) for e in entries])


def _decode(payload: bytes, first_seq: int) -> list[Entry]:
    """A letter's entries; one kept with seq 0 (rejected at polling, before the database
    gave its position) takes the letter's ``first_seq``."""
    rows = msgspec.msgpack.decode(payload, type=list[tuple[int, str, str, int, bytes]])
    return [Entry(row[0] or first_seq, *row[1:]) for row in rows]
