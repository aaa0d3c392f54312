"""The same store calls, on SQLite and on PostgreSQL, mean the same: what the SQLite store
gained since the PostgreSQL one was written (a health-only cursor write, entries rejected
at polling, entries dead-lettered alone), each checked on both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import psycopg
import pytest
from pydantic import SecretStr
from runflow_tail.journal import CursorState, Journal, JournalStore, Store
from runflow_tail.models import Entry, FetchedEntry, RejectedEntry
from runflow_tail.ownership import sink_lease, stream_lease
from runflow_tail.postgres import Database, Fences, PostgresStore
from runflow_tail.postgres.journal import PostgresJournal

from tests.support.harness import wait_for
from tests.support.postgres import claim

S = 1_000_000_000
T0 = 1_700_000_000 * S
STATE = CursorState(fingerprint="fp", watermark=T0, strategy="range")


def rows(*ids: str, ts: int = T0) -> list[FetchedEntry]:
    return [FetchedEntry(entry_id, ts, f'{{"id":"{entry_id}"}}'.encode()) for entry_id in ids]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = JournalStore(tmp_path / "journal.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        database = Database(SecretStr(dsn), "runflow_tail", "a", 60.0)
        fences = Fences("a/1")
        opened = PostgresStore(database, fences)
        claim(database, fences, stream_lease("s"), sink_lease("k"), sink_lease("m"))
    yield opened
    opened.close()


def everything(store: Store) -> list[Entry]:
    return store.read_after(0, ["s"], max_events=1000, max_bytes=1 << 30)


def test_a_health_only_write_never_moves_a_recorded_watermark(store: Store) -> None:
    """A stream's problem noted from an older state (while a newer page was committing)
    changes the health and leaves the newer watermark and cursor as they are."""
    newer = replace(STATE, watermark=T0 + 5 * S, api_cursor="c2", last_id="a")
    store.append("s", rows("a", ts=T0 + 5 * S), newer)
    older = replace(STATE, health_error="429 from the API", last_success_at=12.5)
    store.save_cursor("s", older, health_only=True)
    stored = store.load_cursor("s")
    assert stored is not None
    assert (stored.watermark, stored.api_cursor, stored.last_id) == (T0 + 5 * S, "c2", "a")
    assert (stored.health_error, stored.last_success_at) == ("429 from the API", 12.5)
    # The whole cursor, when asked for, is written as before.
    store.save_cursor("s", older)
    assert store.load_cursor("s") == older


def test_a_health_only_write_of_a_new_stream_records_it(store: Store) -> None:
    store.save_cursor("s", replace(STATE, health_error="401"), health_only=True)
    stored = store.load_cursor("s")
    assert stored is not None
    assert (stored.watermark, stored.health_error) == (T0, "401")


def test_the_journal_saves_health_only(store: Store) -> None:
    """``Journal.save_health`` (the poller's, on a failure) goes to the store as health only,
    on either backend."""

    async def scenario() -> CursorState | None:
        journal: Journal
        if isinstance(store, PostgresStore):
            journal = PostgresJournal(store, max_bytes=1 << 30, dedup_window_ns=0)
        else:
            journal = Journal(store, max_bytes=1 << 30, dedup_window_ns=0)
        await journal.append("s", rows("a"), replace(STATE, watermark=T0 + S))
        await journal.save_health("s", replace(STATE, health_error="timed out"))
        return await journal.load_cursor("s")

    stored = anyio.run(scenario)
    assert stored is not None
    assert (stored.watermark, stored.health_error) == (T0 + S, "timed out")


def test_rejected_entries_are_each_sinks_dead_letter_once(store: Store) -> None:
    """Items of a page that cannot be journaled become a letter of each sink of the stream,
    in the page's transaction, at the journal's position before the page; the same item
    again (a re-read) adds nothing."""
    store.append("s", rows("a"), STATE)
    bad = [RejectedEntry("x", b'{"id":"x"}', "no timestamp"), RejectedEntry("y", b"{", "not JSON")]
    appended = store.append("s", rows("b"), STATE, bad, ["k", "m"])
    assert [row.id for row in appended.rows] == ["b"]
    store.append("s", rows("c"), STATE, bad[:1], ["k", "m"])
    for sink in ("k", "m"):
        letters = store.dead_letters(sink)
        assert [(letter.reason, letter.first_seq, letter.last_seq) for letter in letters] == [
            ("rejected: no timestamp", 1, 1),
            ("rejected: not JSON", 1, 1),
        ]
        assert [(e.seq, e.stream, e.id, e.timestamp_ns, e.raw) for e in letters[0].entries] == [
            (1, "s", "x", 0, b'{"id":"x"}')
        ]
    assert [e.id for e in everything(store)] == ["a", "b", "c"]


def test_entries_dead_lettered_alone_are_kept_once_each(store: Store) -> None:
    """Entries a sink cannot handle: one letter each, keyed by position, once however often
    they come again (a batch re-sent after a restart); the offset does not move."""
    store.append("s", rows("a", "b", "c"), STATE)
    store.ensure_offsets(["k"])
    store.set_offset("k", 0)
    a, _, c = everything(store)
    assert store.dead_letter_entries("k", [(a, "undecodable"), (c, "needs fields")]) == 2
    assert store.dead_letter_entries("k", [(c, "needs fields")]) == 0
    letters = store.dead_letters("k")
    assert [(x.first_seq, x.last_seq, x.reason) for x in letters] == [
        (1, 1, "undecodable"),
        (3, 3, "needs fields"),
    ]
    assert [e.id for x in letters for e in x.entries] == ["a", "c"]
    assert store.offsets()["k"] == 0
    # A batch letter over the same range is another letter (as in SQLite).
    store.dead_letter("k", [a], "HTTP 400", 1)
    assert len(store.dead_letters("k")) == 3


@pytest.mark.anyio
async def test_an_outage_of_writes_lasts_until_a_write_succeeds(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server whose disk is full refuses writes while reads still work: the outage is
    said once and lasts until a write gets through, not until the next read (which made
    state.unavailable / state.available alternate every second, and /readyz flap)."""
    database = Database(SecretStr(postgres_dsn), "runflow_tail", "a", 60.0)
    fences = Fences("a/1")
    journal = await PostgresJournal.connect(database, fences, max_bytes=10**9, dedup_window=0)
    await anyio.to_thread.run_sync(claim, database, fences, stream_lease("s"))
    full_disk = (
        "CREATE FUNCTION runflow_tail.refuse_writes() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$;"
        "CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON runflow_tail.cursors "
        "FOR EACH ROW EXECUTE FUNCTION runflow_tail.refuse_writes()"
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(full_disk)
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.save_cursor, "s", CursorState("fp", watermark=1))
            await wait_for(lambda: journal.outage is not None)
            for _ in range(3):
                await journal._read(journal.store.max_seq)
                assert journal.outage is not None
            admin.execute("DROP TRIGGER disk_full ON runflow_tail.cursors")
        assert journal.outage is None
    await journal.aclose()
    said = capsys.readouterr().out
    assert said.count("state.unavailable") == 1 and said.count("state.available") == 1
