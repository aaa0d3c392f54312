"""Reading a batch of entries from SQLite a few steps at a time, not one step per row.

The sqlite3 module gives up the GIL around every ``sqlite3_step``, and a thread that wants
it back beside a busy event loop waits for the interpreter's switch interval (5 ms): read
row by row, a sink catching up while the poller drains a backlog got as few as 600 rows a
second (measured: 20,000 rows of 4.7 KB in 1.6 to 32 s beside a busy thread, 0.7 to 0.8 s
this way). Here each query returns one aggregate row holding a run of entries.

Which entries fit the byte limit is decided from their lengths alone (SQLite reads a
blob's length from its row header), so no entry past the limit is ever loaded. Values are
concatenated beside their byte lengths, which needs neither a separator that cannot occur
in them nor SQLite's JSON functions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import accumulate

import msgspec

from runflow_tail.models import Entry

FIRST_RUN = 256
"""Entries in a batch's first query, before their sizes are known."""

_decode_ints = msgspec.json.Decoder(list[int]).decode


def _joined(column: str) -> str:
    return f"group_concat(length(CAST({column} AS BLOB))), CAST(group_concat({column}, '') AS BLOB)"


# Only column names and placeholders are interpolated, never data.
_SQL = f"""
SELECT group_concat(e.seq), group_concat(e.ts),
       {_joined("e.id")}, {_joined("e.stream")}, {_joined("e.raw")}
FROM (
    SELECT seq, sum(size) OVER (ORDER BY seq) AS running_size,
           row_number() OVER (ORDER BY seq) AS position
    FROM (
        SELECT seq, length(raw) AS size
        FROM entries
        WHERE seq > ? AND seq <= ? AND +stream IN ({{marks}})
        ORDER BY seq LIMIT ?
    )
) AS chosen
JOIN entries AS e ON e.seq = chosen.seq
WHERE chosen.running_size <= ? OR (chosen.position = 1 AND ?)
"""  # noqa: S608


def read_batch(
    connection: sqlite3.Connection,
    seq: int,
    streams: Sequence[str],
    *,
    max_events: int,
    max_bytes: int,
    until: int | None,
) -> list[Entry]:
    """Entries of ``streams`` in (seq, until], in seq order, at most one batch's worth: up
    to ``max_events``, and within ``max_bytes`` except that the first always goes."""
    if not streams:
        return []
    sql = _SQL.format(marks=",".join("?" * len(streams)))
    upper = until if until is not None else 2**63 - 1
    batch: list[Entry] = []
    size = 0
    want = min(max_events, FIRST_RUN)
    while want > 0:
        parameters = (seq, upper, *streams, want, max_bytes - size, not batch)
        run = _read_run(connection, sql, parameters)
        for entry in run:
            # SQLite measured text in characters; this is the exact rule, in bytes.
            size += len(entry.raw)
            if batch and size > max_bytes:
                return batch
            batch.append(entry)
        if len(run) < want:
            return batch  # the journal has no more, or the next entry would not fit
        seq = run[-1].seq
        average = max(1, size // len(batch))
        # One more than the bytes left should hold, so the limit usually falls in this run.
        want = min(max_events - len(batch), (max_bytes - size) // average + 1)
    return batch


def _read_run(
    connection: sqlite3.Connection, sql: str, parameters: tuple[object, ...]
) -> list[Entry]:
    row = connection.execute(sql, parameters).fetchone()
    if row[0] is None:
        return []
    seqs = _decode_ints(f"[{row[0]}]")
    stamps = _decode_ints(f"[{row[1]}]")
    ids = [value.decode() for value in _split(row[2], row[3])]
    names = [value.decode() for value in _split(row[4], row[5])]
    raws = _split(row[6], row[7])
    run = [Entry(*fields) for fields in zip(seqs, names, ids, stamps, raws, strict=True)]
    if seqs != sorted(seqs):
        # SQLite aggregates rows in the order its subquery yields them, which it does not
        # promise; every column above came from the same rows in the same order, so
        # sorting the entries is enough.
        run.sort(key=lambda entry: entry.seq)
    return run


def _split(lengths: str, joined: bytes) -> list[bytes]:
    ends = list(accumulate(_decode_ints(f"[{lengths}]")))
    return [joined[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
