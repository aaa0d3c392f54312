"""The journal: JournalStore on a real SQLite file, the async Journal facade, and the lock."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runflow_tail.errors import JournalUnreadable, StateError, StateLocked
from runflow_tail.journal import (
    JOURNAL_NAME,
    CursorState,
    Journal,
    JournalStore,
    StateDirLock,
    is_locked,
)
from runflow_tail.journal.store import _MIGRATIONS, SCHEMA_VERSION
from runflow_tail.models import Entry

from tests.support.journal import commit

S = 1_000_000_000
T0 = 1_700_000_000 * S
STATE = CursorState(fingerprint="fp", watermark=T0, strategy="range")


def rows(*ids: str, ts: int = T0) -> list[tuple[str, int, bytes]]:
    return [(entry_id, ts, f'{{"id":"{entry_id}"}}'.encode()) for entry_id in ids]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JournalStore]:
    opened = JournalStore(tmp_path / JOURNAL_NAME)
    yield opened
    opened.close()


def ids(entries: list[Entry]) -> list[str]:
    return [entry.id for entry in entries]


# -- append --------------------------------------------------------------------------------


def test_append_inserts_entries_and_cursor(store: JournalStore) -> None:
    """A committed page's entries are readable in order and its cursor is saved."""
    inserted, last_seq = commit(store, "s", rows("a", "b", "c"), STATE)
    assert (inserted, last_seq) == (3, 3)
    entries = store.read_after(0, ["s"], max_events=10, max_bytes=10_000)
    assert [(e.seq, e.stream, e.id, e.timestamp_ns) for e in entries] == [
        (1, "s", "a", T0),
        (2, "s", "b", T0),
        (3, "s", "c", T0),
    ]
    assert entries[0].raw == b'{"id":"a"}'
    assert store.load_cursor("s") == STATE


def test_failed_commit_changes_neither_entries_nor_cursor(store: JournalStore) -> None:
    """A row that cannot be stored mid-page rolls back the rows before it and the cursor."""
    commit(store, "s", rows("a"), STATE)
    bad = [*rows("b", "c"), ("d", T0, cast(bytes, object()))]
    with pytest.raises(sqlite3.Error):
        commit(store, "s", bad, CursorState(fingerprint="fp", watermark=T0 + S))
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10_000)) == ["a"]
    assert store.load_cursor("s") == STATE


def test_failed_cursor_write_rolls_back_the_entries(
    store: JournalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When writing the cursor fails after the entries went in, the entries are undone too."""

    def fail(stream: str, state: CursorState) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_write_cursor", fail)
    with pytest.raises(sqlite3.OperationalError):
        commit(store, "s", rows("a", "b"), STATE)
    assert store.entries_count() == 0
    assert store.load_cursor("s") is None


def test_store_is_usable_after_a_failed_commit(store: JournalStore) -> None:
    """A rolled-back commit leaves no transaction open: the next commit succeeds."""
    with pytest.raises(sqlite3.Error):
        commit(store, "s", [("a", T0, cast(bytes, object()))], STATE)
    assert commit(store, "s", rows("a"), STATE) == (1, 1)


def test_re_read_entries_are_dropped(store: JournalStore) -> None:
    """UNIQUE(stream, id) drops re-read entries and the count says how many were new."""
    commit(store, "s", rows("a", "b"), STATE)
    inserted, _ = commit(store, "s", rows("a", "b", "c"), STATE)
    assert inserted == 1
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10_000)) == ["a", "b", "c"]
    assert store.entries_count() == 3


STATEMENT_EDGES = [1, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1024, 1025]


@settings(max_examples=25, deadline=None)
@given(
    pages=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(STATEMENT_EDGES), st.integers(0, 1100)),
            st.integers(0, 40),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_commits_of_any_size_journal_each_entry_once_in_order(
    tmp_path_factory: pytest.TempPathFactory, pages: list[tuple[int, int]]
) -> None:
    """Whatever a commit's size (inserts are cut into statements of a few sizes, padded),
    every new entry is journaled once, under the seq the commit reported, in order, and
    the re-reads a commit repeats from the one before are dropped."""
    store = JournalStore(tmp_path_factory.mktemp("sizes") / JOURNAL_NAME)
    expected: list[str] = []
    reported: list[int] = []
    try:
        for number, (new, repeated) in enumerate(pages):
            fresh = [f"p{number}-{index}" for index in range(new)]
            again = expected[-repeated:] if repeated else []
            appended = store.append("s", rows(*again, *fresh), STATE)
            assert [row[0] for row in appended.rows] == fresh
            expected += fresh
            reported += appended.seqs
        journaled = store.read_after(0, ["s"], max_events=10_000, max_bytes=10**9)
        assert [(entry.seq, entry.id) for entry in journaled] == list(
            zip(reported, expected, strict=True)
        )
    finally:
        store.close()


def test_a_poll_of_only_re_reads_writes_nothing_to_disk(store: JournalStore) -> None:
    """A quiet stream re-reads its lookback every poll: with the cursor unmoved, that
    commit changes nothing and writes nothing; a cursor that moves is still saved."""
    commit(store, "s", rows("a", "b"), STATE)
    wal = store.path.with_name(store.path.name + "-wal")
    before = wal.stat().st_size
    assert commit(store, "s", rows("a", "b"), STATE) == (0, 2)
    assert wal.stat().st_size == before
    moved = replace(STATE, api_cursor="next")
    assert commit(store, "s", rows("a", "b"), moved) == (0, 2)
    assert wal.stat().st_size > before
    assert store.load_cursor("s") == moved


def test_same_id_in_another_stream_is_a_new_entry(store: JournalStore) -> None:
    """Identity is per stream: the same id in two streams is journaled twice."""
    commit(store, "s", rows("a"), STATE)
    assert commit(store, "t", rows("a"), STATE)[0] == 1


def test_seq_never_goes_backwards_after_pruning_everything(tmp_path: Path) -> None:
    """After retention removes every row, even across a reopen, new entries get higher seqs."""
    store = JournalStore(tmp_path / JOURNAL_NAME)
    commit(store, "s", rows("a", "b", "c"), STATE)
    assert store.prune("s", delivered_seq=3, older_than_ns=T0 + S) == 3
    assert store.entries_count() == 0
    assert store.max_seq() == 3
    store.close()
    store = JournalStore(tmp_path / JOURNAL_NAME)
    assert store.max_seq() == 3
    assert commit(store, "s", rows("d"), STATE) == (1, 4)
    store.close()


def test_max_seq_of_an_empty_journal_is_zero(store: JournalStore) -> None:
    """A fresh journal's end is seq 0."""
    assert store.max_seq() == 0


# -- read_after ----------------------------------------------------------------------------


def test_read_after_starts_after_seq(store: JournalStore) -> None:
    """Only entries with a seq greater than the given one are read."""
    commit(store, "s", rows("a", "b", "c"), STATE)
    assert ids(store.read_after(1, ["s"], max_events=10, max_bytes=10_000)) == ["b", "c"]


def test_read_after_only_reads_the_given_streams(store: JournalStore) -> None:
    """Entries of other streams are skipped, and no streams reads nothing."""
    commit(store, "s", rows("a"), STATE)
    commit(store, "t", rows("b"), STATE)
    commit(store, "u", rows("c"), STATE)
    assert ids(store.read_after(0, ["s", "u"], max_events=10, max_bytes=10_000)) == ["a", "c"]
    assert store.read_after(0, [], max_events=10, max_bytes=10_000) == []


def test_read_after_respects_max_events(store: JournalStore) -> None:
    """A batch holds at most max_events entries."""
    commit(store, "s", rows("a", "b", "c"), STATE)
    assert ids(store.read_after(0, ["s"], max_events=2, max_bytes=10_000)) == ["a", "b"]


def test_read_after_respects_max_bytes(store: JournalStore) -> None:
    """A batch stops before the entry that would take it past max_bytes."""
    commit(store, "s", rows("a", "b", "c"), STATE)  # 10 bytes each
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=25)) == ["a", "b"]
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=20)) == ["a", "b"]


def test_read_after_returns_one_oversized_entry(store: JournalStore) -> None:
    """An entry bigger than max_bytes is still read, alone, so delivery never stalls."""
    commit(store, "s", [("big", T0, b"x" * 1000), *rows("a")], STATE)
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10)) == ["big"]


def test_read_after_stops_at_until(store: JournalStore) -> None:
    """No entry beyond ``until`` is read."""
    commit(store, "s", rows("a", "b", "c"), STATE)
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10_000, until=2)) == ["a", "b"]


# -- sink offsets --------------------------------------------------------------------------


def test_new_sinks_start_at_the_journal_end(store: JournalStore) -> None:
    """ensure_offsets registers a new sink at max_seq, not at the start of history."""
    commit(store, "s", rows("a", "b"), STATE)
    assert store.ensure_offsets(["file"]) == {"file": 2}


def test_ensure_offsets_keeps_existing_offsets(store: JournalStore) -> None:
    """A sink already registered keeps its offset when ensure_offsets runs again."""
    commit(store, "s", rows("a", "b"), STATE)
    store.set_offset("file", 1)
    commit(store, "s", rows("c"), STATE)
    assert store.ensure_offsets(["file", "webhook"]) == {"file": 1, "webhook": 3}


def test_pending_is_recorded_and_cleared_by_set_offset(store: JournalStore) -> None:
    """set_pending records the in-flight batch's end; committing an offset clears it."""
    store.ensure_offsets(["file"])
    assert store.pending("file") is None
    store.set_pending("file", 7)
    assert store.pending("file") == 7
    store.set_offset("file", 7)
    assert store.pending("file") is None
    assert store.offsets() == {"file": 7}


def test_pending_of_an_unknown_sink_is_none(store: JournalStore) -> None:
    """A sink that never registered has nothing pending."""
    assert store.pending("nobody") is None


# -- dead letters --------------------------------------------------------------------------


def test_dead_letter_keeps_batch_reason_and_moves_the_offset(store: JournalStore) -> None:
    """A dead-lettered batch is stored with its reason and the sink moves past it."""
    commit(store, "s", rows("a", "b"), STATE)
    store.ensure_offsets(["hook"])
    store.set_offset("hook", 0)
    batch = store.read_after(0, ["s"], max_events=10, max_bytes=10_000)
    store.dead_letter("hook", batch, "HTTP 400: rejected", 2)
    [letter] = store.dead_letters("hook")
    assert (letter.sink, letter.first_seq, letter.last_seq) == ("hook", 1, 2)
    assert letter.reason == "HTTP 400: rejected"
    assert letter.entries == batch
    assert store.offsets() == {"hook": 2}
    assert store.count_dead_letters() == {"hook": 1}


def test_dead_letters_round_trip_raw_bytes_exactly(store: JournalStore) -> None:
    """Raw bytes with newlines, tabs, escapes and non-UTF-8 bytes come back unchanged."""
    raws = [b'{"m":"a\nb\tc"}', b'{"m":"\\u00e9\\n"}\r\n', bytes(range(256))]
    batch = [Entry(seq, "s", f"e{seq}", T0 + seq, raw) for seq, raw in enumerate(raws, 1)]
    store.dead_letter("hook", batch, "reason\nwith a newline", 3)
    [letter] = store.dead_letters("hook")
    assert [entry.raw for entry in letter.entries] == raws
    assert letter.entries == batch
    assert letter.reason == "reason\nwith a newline"


def test_failed_dead_letter_changes_nothing(
    store: JournalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If moving the offset fails, the dead letter is not stored either."""
    commit(store, "s", rows("a"), STATE)
    store.set_offset("hook", 0)
    batch = store.read_after(0, ["s"], max_events=10, max_bytes=10_000)

    def fail(sink: str, seq: int) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "set_offset", fail)
    with pytest.raises(sqlite3.OperationalError):
        store.dead_letter("hook", batch, "rejected", 1)
    assert store.dead_letters("hook") == []
    assert store.offsets() == {"hook": 0}


def test_dead_letters_are_per_sink(store: JournalStore) -> None:
    """dead_letters(sink) lists only that sink's letters, oldest first."""
    batch = [Entry(1, "s", "a", T0, b"{}")]
    store.dead_letter("one", batch, "first", 1)
    store.dead_letter("two", batch, "other", 1)
    store.dead_letter("one", batch, "second", 1)
    assert [letter.reason for letter in store.dead_letters("one")] == ["first", "second"]


# -- retention -----------------------------------------------------------------------------


def test_prune_needs_both_delivery_and_age(store: JournalStore) -> None:
    """Only entries at or below delivered_seq AND older than the cut-off are removed."""
    commit(store, "s", rows("old1", "old2", ts=T0), STATE)
    commit(store, "s", rows("new1", "new2", ts=T0 + 100 * S), STATE)
    removed = store.prune("s", delivered_seq=3, older_than_ns=T0 + 50 * S)
    assert removed == 2
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10_000)) == ["new1", "new2"]


def test_prune_keeps_undelivered_old_entries(store: JournalStore) -> None:
    """An old entry that a sink has not delivered stays."""
    commit(store, "s", rows("a", "b", "c", ts=T0), STATE)
    assert store.prune("s", delivered_seq=1, older_than_ns=T0 + 50 * S) == 1
    assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10_000)) == ["b", "c"]


def test_prune_only_touches_its_stream(store: JournalStore) -> None:
    """Pruning one stream leaves other streams' entries alone."""
    commit(store, "s", rows("a"), STATE)
    commit(store, "t", rows("b"), STATE)
    store.prune("s", delivered_seq=2, older_than_ns=T0 + S)
    assert ids(store.read_after(0, ["s", "t"], max_events=10, max_bytes=10_000)) == ["b"]


async def open_journal(state_dir: Path, dedup_window: float = 60.0) -> Journal:
    return await Journal.open(state_dir, max_bytes=1 << 30, dedup_window=dedup_window)


@pytest.mark.anyio
async def test_journal_prunes_only_past_every_subscribed_sink(tmp_path: Path) -> None:
    """Retention waits for the slowest subscribed sink and the de-duplication window."""
    journal = await open_journal(tmp_path, dedup_window=60.0)
    try:
        await journal.append("s", rows("a", "b", "c", ts=T0), STATE)
        await journal.append("s", rows("d", ts=T0 + 100 * S), STATE.advanced([("d", T0 + 100 * S)]))
        journal.subscribe({"s": ["fast", "slow"]})
        await journal._run(journal._store.set_offset, "fast", 4)
        await journal._run(journal._store.set_offset, "slow", 2)
        await journal.prune()
        left = await journal._run(
            journal._store.read_after, 0, ["s"], max_events=10, max_bytes=10_000
        )
        assert ids(left) == ["c", "d"]
    finally:
        await journal.aclose()


@pytest.mark.anyio
async def test_journal_keeps_entries_inside_the_window(tmp_path: Path) -> None:
    """Delivered entries newer than watermark - dedup_window stay to catch re-reads."""
    journal = await open_journal(tmp_path, dedup_window=600.0)
    try:
        state = STATE.advanced([("b", T0 + 100 * S)])
        await journal.append("s", [*rows("a", ts=T0), *rows("b", ts=T0 + 100 * S)], state)
        journal.subscribe({"s": ["file"]})
        await journal._run(journal._store.set_offset, "file", 2)
        await journal.prune()
        assert await journal._run(journal._store.entries_count) == 2
    finally:
        await journal.aclose()


@pytest.mark.anyio
async def test_journal_keeps_entries_for_an_unregistered_sink(tmp_path: Path) -> None:
    """A subscribed sink without any offset yet holds retention back entirely."""
    journal = await open_journal(tmp_path, dedup_window=1.0)
    try:
        await journal.append("s", rows("a", ts=T0), STATE.advanced([("z", T0 + 100 * S)]))
        journal.subscribe({"s": ["file", "new"]})
        await journal._run(journal._store.set_offset, "file", 1)
        await journal.prune()
        assert await journal._run(journal._store.entries_count) == 1
    finally:
        await journal.aclose()


@pytest.mark.anyio
async def test_commit_wakes_waiting_deliveries(tmp_path: Path) -> None:
    """A delivery waiting for entries after its offset wakes when a page is committed."""
    journal = await open_journal(tmp_path)
    try:
        woke = anyio.Event()

        async def delivery() -> None:
            await journal.wait_for_entries_after(0)
            woke.set()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(delivery)
                await anyio.wait_all_tasks_blocked()
                assert not woke.is_set()
                assert await journal.append("s", rows("a"), STATE) == 1
        assert woke.is_set()
        assert journal.last_seq == 1
    finally:
        await journal.aclose()


@pytest.mark.anyio
async def test_journal_reopens_at_its_last_seq(tmp_path: Path) -> None:
    """A reopened journal knows its end, so new sinks and waits start from there."""
    journal = await open_journal(tmp_path)
    await journal.append("s", rows("a", "b"), STATE)
    await journal.aclose()
    journal = await open_journal(tmp_path)
    try:
        assert journal.last_seq == 2
    finally:
        await journal.aclose()


# -- migrations and damaged files ------------------------------------------------------------


def make_v1_journal(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[1])
    db.execute("INSERT INTO entries (stream, id, ts, raw) VALUES ('s', 'a', ?, ?)", (T0, b"{}"))
    db.execute(
        "INSERT INTO cursors (stream, watermark, fingerprint, updated_at) VALUES ('s', ?, 'fp', 0)",
        (T0,),
    )
    db.execute("INSERT INTO sink_offsets (sink, offset, updated_at) VALUES ('file', 1, 0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_the_v5_upgrade_keeps_entries_and_never_gives_a_seq_twice(tmp_path: Path) -> None:
    """A v4 journal whose retention removed its newest entries is rebuilt with the
    (stream, ts, id) key: its entries stay, new ones continue after every seq ever given,
    and a re-read of a kept entry is still dropped."""
    path = tmp_path / JOURNAL_NAME
    db = sqlite3.connect(path)
    for version in (1, 2, 3, 4):
        db.executescript(_MIGRATIONS[version])
    db.executemany(
        "INSERT INTO entries (stream, id, ts, raw) VALUES ('s', ?, ?, ?)",
        [(name, T0 + n, b"{}") for n, name in enumerate("abcde")],
    )
    db.execute("DELETE FROM entries WHERE id IN ('d', 'e')")  # seq 5 was given, then pruned
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    store = JournalStore(path)
    try:
        assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10_000)) == ["a", "b", "c"]
        inserted, last_seq = commit(store, "s", [("a", T0, b"{}"), ("f", T0 + 9, b"{}")], STATE)
        assert inserted == 1 and last_seq > 5
        indexes = store._db.execute("PRAGMA index_list(entries)").fetchall()
        (unique,) = [row[1] for row in indexes if row[2]]
        columns = [row[2] for row in store._db.execute(f"PRAGMA index_info({unique})")]
        assert columns == ["stream", "ts", "id"]
    finally:
        store.close()


def test_new_journals_get_large_pages_and_old_ones_keep_theirs(tmp_path: Path) -> None:
    """32 KiB pages for a new journal (full run objects spill into fewer overflow pages);
    a journal written with 4 KiB pages keeps them (changing would rewrite the file), and
    either way the writer's safety-net checkpoint comes at 64 MiB of WAL."""
    fresh = JournalStore(tmp_path / JOURNAL_NAME)
    old_path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(old_path)) as db:
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE placeholder (x)")
    old = JournalStore(old_path)
    try:
        for store, page_size in ((fresh, 32768), (old, 4096)):
            pragmas = [
                store._db.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("page_size", "wal_autocheckpoint")
            ]
            assert pragmas == [page_size, 64 * 1024 * 1024 // page_size]
        commit(old, "s", rows("a"), STATE)
        assert ids(old.read_after(0, ["s"], max_events=10, max_bytes=10_000)) == ["a"]
    finally:
        fresh.close()
        old.close()


def test_v1_journal_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    """A version 1 journal opens at the current schema with entries, cursor and offsets."""
    path = tmp_path / JOURNAL_NAME
    make_v1_journal(path)
    store = JournalStore(path)
    try:
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert ids(store.read_after(0, ["s"], max_events=10, max_bytes=10_000)) == ["a"]
        cursor = store.load_cursor("s")
        assert cursor is not None
        assert cursor.watermark == T0
        assert store.offsets() == {"file": 1}
        store.set_pending("file", 5)
        assert store.pending("file") == 5
    finally:
        store.close()


def test_newer_journal_is_refused(tmp_path: Path) -> None:
    """A journal from a newer runflow-tail is refused with a message saying to upgrade."""
    path = tmp_path / JOURNAL_NAME
    JournalStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalUnreadable) as caught:
        JournalStore(path)
    message = str(caught.value)
    assert str(path) in message
    assert "newer" in message
    assert "upgrade runflow-tail" in message
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


def test_corrupt_journal_is_reported_and_left_untouched(tmp_path: Path) -> None:
    """Random bytes raise JournalUnreadable naming the file and the reset command."""
    path = tmp_path / JOURNAL_NAME
    garbage = random.Random(7).randbytes(8192)
    path.write_bytes(garbage)
    with pytest.raises(JournalUnreadable) as caught:
        JournalStore(path)
    assert str(path) in str(caught.value)
    assert "checkpoint reset --all" in str(caught.value)
    assert isinstance(caught.value, StateError)
    assert path.read_bytes() == garbage
    assert sorted(os.listdir(tmp_path)) == [JOURNAL_NAME]


# -- the state directory lock ----------------------------------------------------------------

HOLDER = """
import sys
from dataclasses import replace
from pathlib import Path
from runflow_tail.journal.lock import StateDirLock
StateDirLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the state directory's lock."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "locked\n"
        yield process
    finally:
        process.kill()
        process.communicate()


def test_second_daemon_is_refused(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """Acquiring a lock another process holds fails naming the directory and its pid."""
    with pytest.raises(StateLocked) as caught:
        StateDirLock(tmp_path).acquire()
    assert str(tmp_path) in str(caught.value)
    assert f"pid {holder.pid}" in str(caught.value)


def test_is_locked_sees_another_process(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    """is_locked reports a state directory another process holds."""
    assert is_locked(tmp_path)


def test_lock_is_released_when_its_holder_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """After SIGKILL of the holder the lock is free again, with no stale lock left."""
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not is_locked(tmp_path)
    with StateDirLock(tmp_path) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_is_locked_is_false_without_a_lock_file(tmp_path: Path) -> None:
    """A state directory nobody ever locked is not locked."""
    assert not is_locked(tmp_path)


def test_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    """Releasing the lock frees the directory for the next daemon."""
    with StateDirLock(tmp_path):
        assert is_locked(tmp_path)
    assert not is_locked(tmp_path)
    with StateDirLock(tmp_path):
        pass


def test_unusable_state_directory_is_a_state_error(tmp_path: Path) -> None:
    """A state directory that cannot be created is a StateError naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match=r"state\.dir"):
        StateDirLock(blocker / "state").acquire()


def test_saving_health_never_moves_a_recorded_watermark(store: JournalStore) -> None:
    """A stream's problem recorded from an older state (noted while a newer page was
    committing) leaves the newer watermark and cursor as they are."""
    older = CursorState(fingerprint="fp", watermark=T0)
    commit(
        store, "s", rows("a", ts=T0 + 5 * S), CursorState(fingerprint="fp", watermark=T0 + 5 * S)
    )
    store.save_cursor("s", replace(older, health_error="429 from the API"), health_only=True)
    stored = store.load_cursor("s")
    assert stored is not None
    assert stored.watermark == T0 + 5 * S and stored.health_error == "429 from the API"
