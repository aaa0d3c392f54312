"""Recent entries handed to caught-up consumers from memory (journal/recent.py).

What a consumer reads must not depend on where it came from: every read answered from
memory is compared with the same read from SQLite.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runflow_tail.delivery.loop import Delivery
from runflow_tail.journal import CursorState, Journal, JournalStore
from runflow_tail.journal.recent import Appended, RecentEntries
from runflow_tail.models import Entry
from runflow_tail.sinks.base import BatchSettings
from runflow_tail.sinks.stdout import StdoutSinkConfig

from tests.support.journal import entries_of

S = 1_000_000_000
T0 = 1_700_000_000 * S
STATE = CursorState(fingerprint="fp", watermark=T0, strategy="range")
STREAMS = ("a", "b")


def page(*ids: str) -> list[tuple[str, int, bytes]]:
    # An entry's timestamp is its own, whatever page brings it again.
    return [
        (
            entry_id,
            T0 + int.from_bytes(entry_id.encode()[:6], "big"),
            f'{{"id":"{entry_id}"}}'.encode(),
        )
        for entry_id in ids
    ]


def test_append_gives_each_new_entry_its_seq_and_skips_re_reads(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    try:
        first = store.append("a", page("x", "y"), STATE)
        again = store.append("a", page("y", "z", "z"), STATE)
        stored = store.read_after(0, ["a"], max_events=100, max_bytes=1 << 20)
    finally:
        store.close()
    assert [(e.seq, e.id) for e in entries_of(first)] == [(1, "x"), (2, "y")]
    assert (first.previous_seq, first.last_seq) == (0, 2)
    # "y" was there already and the second "z" repeats the first: both are left out, and
    # the seqs handed back are exactly the ones the journal holds.
    assert [(e.seq, e.id) for e in entries_of(again)] == [(4, "z")]
    assert again.previous_seq == 2
    assert [(e.seq, e.id, e.raw) for e in stored] == [
        (e.seq, e.id, e.raw) for e in entries_of(first) + entries_of(again)
    ]


def test_append_never_reuses_a_seq_the_journal_holds(tmp_path: Path) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    try:
        store.append("a", page("x", "y"), STATE)
        # AUTOINCREMENT's record damaged (or restored from an older copy of the file).
        store._db.execute("UPDATE sqlite_sequence SET seq = 0 WHERE name = 'entries'")
        appended = store.append("a", page("z"), STATE)
        stored = store.read_after(0, ["a"], max_events=10, max_bytes=1 << 20)
    finally:
        store.close()
    assert [(e.seq, e.id) for e in entries_of(appended)] == [(3, "z")]
    assert [e.id for e in stored] == ["x", "y", "z"]


@pytest.mark.parametrize("count", [1, 64, 65, 1024, 1500, 2100])
def test_append_of_any_size_stores_every_entry_once_with_consecutive_seqs(
    tmp_path: Path, count: int
) -> None:
    store = JournalStore(tmp_path / "j.sqlite3")
    try:
        store.append("a", page("first"), STATE)
        ids = [f"e{n}" for n in range(count)]
        appended = store.append("a", page(*ids), STATE)
        after = store.append("a", page("last"), STATE)
        stored = store.read_after(1, ["a"], max_events=10_000, max_bytes=1 << 30)
    finally:
        store.close()
    assert [e.seq for e in entries_of(appended)] == list(range(2, count + 2))
    assert [(e.id, e.raw) for e in stored[:-1]] == [(e.id, e.raw) for e in entries_of(appended)]
    # Statements are padded to a fixed size; the padding must not use up seqs.
    assert [e.seq for e in entries_of(after)] == [count + 2]


@pytest.mark.anyio
async def test_a_write_the_tail_did_not_see_sends_readers_to_sqlite(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path, max_bytes=1 << 30, dedup_window=60)
    try:
        await journal.append("a", page("1", "2"), STATE)
        await journal.append("a", page("3"), STATE)
        # Alert entries are written by another path, and only announced.
        await journal.commit_alerts("engine", None, [("a", "alert", T0, b"{}")], [], [])
        last = journal.last_seq
        batch = await journal.read_after(2, ["a"], max_events=10, max_bytes=1 << 20)
        assert [e.id for e in batch] == ["3", "alert"]
        # The next commit starts the tail afresh after the alert.
        await journal.append("a", page("4"), STATE)
        batch = await journal.read_after(last, ["a"], max_events=10, max_bytes=1 << 20)
        assert [e.id for e in batch] == ["4"]
    finally:
        await journal.aclose()


def test_the_tail_forgets_old_chunks_past_its_budget() -> None:
    tail = RecentEntries(0, max_bytes=1000)
    for start in range(0, 40, 10):
        seqs = range(start + 1, start + 11)
        rows = [(str(seq), T0, b"x" * 100) for seq in seqs]
        tail.add(Appended(start, "a", seqs, rows, start + 10))
    assert tail.covered == 40
    # 1000 bytes hold less than one commit (with overhead): the newest two stay anyway.
    assert tail.floor == 20
    assert tail.read_after(19, STREAMS, max_events=100, max_bytes=1 << 20) is None
    got = tail.read_after(20, STREAMS, max_events=100, max_bytes=1 << 20)
    assert got is not None
    assert [e.seq for e in got] == list(range(21, 41))


commits = st.lists(
    st.tuples(
        st.sampled_from(STREAMS),
        st.lists(st.sampled_from([f"id{n}" for n in range(30)]), min_size=0, max_size=8),
    ),
    min_size=1,
    max_size=12,
)
reads = st.lists(
    st.tuples(
        st.integers(0, 60),
        st.sampled_from([("a",), ("b",), ("a", "b")]),
        st.integers(1, 6),
        st.integers(1, 200),
        st.one_of(st.none(), st.integers(0, 60)),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(commits=commits, reads=reads, budget=st.sampled_from([300, 2000, 1 << 20]))
def test_reads_from_memory_equal_reads_from_sqlite(
    tmp_path_factory: pytest.TempPathFactory,
    commits: list[tuple[str, list[str]]],
    reads: list[tuple[int, tuple[str, ...], int, int, int | None]],
    budget: int,
) -> None:
    async def scenario() -> None:
        journal = await Journal.open(
            tmp_path_factory.mktemp("j"), max_bytes=1 << 30, dedup_window=60
        )
        journal.recent.max_bytes = budget
        try:
            for stream, ids in commits:
                await journal.append(stream, page(*ids), STATE)
            for offset, streams, max_events, max_bytes, until in reads:
                expected = journal._store.read_after(
                    offset, streams, max_events=max_events, max_bytes=max_bytes, until=until
                )
                from_memory = journal.recent.read_after(
                    offset, streams, max_events=max_events, max_bytes=max_bytes, until=until
                )
                if from_memory is not None:
                    assert [
                        (e.seq, e.stream, e.id, e.timestamp_ns, e.raw) for e in from_memory
                    ] == [(e.seq, e.stream, e.id, e.timestamp_ns, e.raw) for e in expected]
                via_journal = await journal.read_after(
                    offset, streams, max_events=max_events, max_bytes=max_bytes, until=until
                )
                assert [e.seq for e in via_journal] == [e.seq for e in expected]
        finally:
            await journal.aclose()

    anyio.run(scenario)


def test_a_caught_up_reader_is_answered_from_memory(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = await Journal.open(tmp_path, max_bytes=1 << 30, dedup_window=60)
        try:
            await journal.append("a", page("1"), STATE)
            start = journal.last_seq
            await journal.append("a", page("2", "3"), STATE)
            # Reading through SQLite would fail now: the answer must come from memory.
            journal._store.read_after = None  # type: ignore[assignment,method-assign]
            batch = await journal.read_after(start, ["a"], max_events=10, max_bytes=1 << 20)
            assert [e.id for e in batch] == ["2", "3"]
        finally:
            del journal._store.read_after
            await journal.aclose()

    anyio.run(scenario)


def test_what_a_consumer_decodes_is_not_kept_in_the_tail(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = await Journal.open(tmp_path, max_bytes=1 << 30, dedup_window=60)
        try:
            await journal.append("a", page("1"), STATE)
            [first] = await journal.read_after(0, ["a"], max_events=10, max_bytes=1 << 20)
            first.data()["id"] = "changed by one consumer"
            [again] = await journal.read_after(0, ["a"], max_events=10, max_bytes=1 << 20)
            assert again.data()["id"] == "1"
        finally:
            await journal.aclose()

    anyio.run(scenario)


class _RecordingSink:
    def __init__(self, expected_batches: int) -> None:
        self.batches: list[list[str]] = []
        self.expected = expected_batches
        self.done = anyio.Event()

    async def send(self, batch: list[Entry]) -> None:
        self.batches.append([entry.id for entry in batch])
        if len(self.batches) >= self.expected:
            self.done.set()

    async def aclose(self) -> None:
        return None


def _run_in_thread(scenario: Callable[[], Awaitable[None]], *, timeout: float) -> None:
    """Run ``scenario`` on its own event loop; fail (instead of hanging the suite) if that
    loop never finishes, e.g. because a task spins without ever yielding."""
    failures: list[BaseException] = []

    def target() -> None:
        try:
            anyio.run(scenario)
        except BaseException as exc:  # reported to the test below
            failures.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the event loop is stuck"
    if failures:
        raise failures[0]


@pytest.mark.parametrize(
    ("commits", "batch", "expected"),
    [
        # Entries of a stream this sink does not read arrive while it waits to fill a batch.
        ([("a", "a1"), ("b", "b1")], BatchSettings(max_events=100, max_wait=0.2), [["a1"]]),
        # The batch is cut by max_bytes: what comes next is there but does not fit.
        (
            [("a", "a1"), ("a", "a2")],
            BatchSettings(max_events=100, max_bytes=20, max_wait=0.2),
            [["a1"], ["a2"]],
        ),
    ],
)
def test_a_sink_filling_its_batch_from_memory_still_sends_after_max_wait(
    tmp_path: Path,
    commits: list[tuple[str, str]],
    batch: BatchSettings,
    expected: list[list[str]],
) -> None:
    async def scenario() -> None:
        journal = await Journal.open(tmp_path, max_bytes=1 << 30, dedup_window=60)
        sink = _RecordingSink(len(expected))
        delivery = Delivery("out", StdoutSinkConfig(batch=batch), sink, journal, ["a"], offset=0)
        try:
            for stream, entry_id in commits:
                await journal.append(stream, page(entry_id), STATE)
            async with anyio.create_task_group() as tg:
                tg.start_soon(delivery.run)
                with anyio.fail_after(5):
                    await sink.done.wait()
                delivery.request_stop()
        finally:
            await journal.aclose()
        assert sink.batches == expected

    _run_in_thread(scenario, timeout=10)
