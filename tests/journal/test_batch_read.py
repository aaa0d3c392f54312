"""Batches read from SQLite a run at a time (journal/batch_read.py) are exactly what reading
row by row gives, bytes included."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runflow_tail.errors import JournalUnreadable
from runflow_tail.journal import CursorState, JournalStore, batch_read
from runflow_tail.models import Entry

STATE = CursorState(fingerprint="fp", watermark=0, strategy="range")


def row_by_row(
    store: JournalStore,
    seq: int,
    streams: list[str],
    max_events: int,
    max_bytes: int,
    until: int | None,
) -> list[Entry]:
    marks = ",".join("?" * len(streams))
    rows = store._reader.execute(
        f"SELECT seq, stream, id, ts, raw FROM entries WHERE seq > ? AND seq <= ? "
        f"AND stream IN ({marks}) ORDER BY seq LIMIT ?",
        (seq, until if until is not None else 2**63 - 1, *streams, max_events),
    )
    batch: list[Entry] = []
    size = 0
    for row in rows:
        size += len(row[4])
        if batch and size > max_bytes:
            break
        batch.append(Entry(*row))
    return batch


def fields(entries: list[Entry]) -> list[tuple[int, str, str, int, bytes]]:
    return [(e.seq, e.stream, e.id, e.timestamp_ns, e.raw) for e in entries]


pages = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.lists(
            st.tuples(
                st.text(min_size=1, max_size=12),
                # Any bytes at all, of any size: NUL, invalid UTF-8, empty.
                st.binary(min_size=0, max_size=3000),
            ),
            max_size=40,
        ),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pages=pages,
    reads=st.lists(
        st.tuples(
            st.integers(0, 250),
            st.sampled_from([["a"], ["b"], ["a", "b"]]),
            st.integers(1, 400),
            st.sampled_from([1, 100, 5000, 60_000, 1 << 30]),
            st.one_of(st.none(), st.integers(0, 250)),
        ),
        min_size=1,
        max_size=6,
    ),
    # Small first runs, so that batches span several queries.
    first_run=st.sampled_from([1, 3, batch_read.FIRST_RUN]),
)
def test_a_batch_equals_reading_row_by_row(
    tmp_path_factory: pytest.TempPathFactory,
    pages: list[tuple[str, list[tuple[str, bytes]]]],
    reads: list[tuple[int, list[str], int, int, int | None]],
    first_run: int,
) -> None:
    store = JournalStore(tmp_path_factory.mktemp("j") / "j.sqlite3")
    default_first_run = batch_read.FIRST_RUN
    batch_read.FIRST_RUN = first_run
    try:
        stamps = itertools.count()
        for stream, items in pages:
            store.append(stream, [(i, next(stamps), raw) for i, raw in items], STATE)
        for seq, streams, max_events, max_bytes, until in reads:
            expected = row_by_row(store, seq, streams, max_events, max_bytes, until)
            got = store.read_after(
                seq, streams, max_events=max_events, max_bytes=max_bytes, until=until
            )
            assert fields(got) == fields(expected)
    finally:
        batch_read.FIRST_RUN = default_first_run
        store.close()


def test_a_batch_loads_no_entry_past_its_byte_limit(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    try:
        store.append("a", [(str(n), n, b"x" * 200_000) for n in range(300)], STATE)
        # SQLite refuses to build a value over this: a read that loaded the first run
        # whole (256 entries, 51 MB) would fail instead of returning its 5 entries.
        store._reader.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 2_000_000)
        batch = store.read_after(0, ["a"], max_events=10_000, max_bytes=1 << 20)
    finally:
        store.close()
    assert [e.seq for e in batch] == [1, 2, 3, 4, 5]


def test_a_batch_of_large_entries_stops_at_its_byte_limit(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    try:
        raw = b'{"run":"' + b"x" * 4700 + b'"}'
        store.append("a", [(str(n), n, raw) for n in range(3000)], STATE)
        batch = store.read_after(0, ["a"], max_events=10_000, max_bytes=4 << 20)
    finally:
        store.close()
    assert len(batch) == (4 << 20) // len(raw)
    assert [e.seq for e in batch] == list(range(1, len(batch) + 1))
    assert all(e.raw == raw for e in batch)


class _CountingCursor:
    def __init__(self, cursor: sqlite3.Cursor, counts: list[int]) -> None:
        self._cursor, self._counts = cursor, counts

    def fetchone(self) -> Any:
        self._counts.append(1)
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        rows = self._cursor.fetchall()
        self._counts.extend([1] * len(rows))
        return rows

    def __iter__(self) -> Iterator[Any]:
        for row in self._cursor:
            self._counts.append(1)
            yield row


class _CountingConnection:
    """Counts the rows SQLite hands to Python: one step, and one GIL handoff, each."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.rows: list[int] = []

    def execute(self, *args: Any) -> _CountingCursor:
        return _CountingCursor(self._connection.execute(*args), self.rows)


def test_a_batch_takes_a_few_steps_not_one_per_row(tmp_path: Path) -> None:
    # Each step gives up the GIL, and getting it back beside a busy event loop can take
    # the 5 ms switch interval: a sink catching up during a backlog read a few hundred
    # rows a second. Counting steps keeps this a behaviour test, not a timing one.
    store = JournalStore(tmp_path / "j.sqlite3")
    counting = _CountingConnection(store._reader)
    try:
        store.append("a", [(str(n), n, b"{}") for n in range(5000)], STATE)
        store._reader = counting  # type: ignore[assignment]
        batch = store.read_after(0, ["a"], max_events=5000, max_bytes=1 << 30)
    finally:
        store._reader = counting._connection
        store.close()
    assert len(batch) == 5000
    assert len(counting.rows) <= 8


def test_an_sqlite_too_old_for_the_journal_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 7, 17))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.7.17")
    with pytest.raises(JournalUnreadable, match=r"SQLite 3\.7\.17; the journal needs 3\.25\.0"):
        JournalStore(tmp_path / "j.sqlite3")
