"""The journal's PostgreSQL store against a real server: SQLite's guarantees, plus fencing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from pydantic import SecretStr
from runflow_tail.errors import LeaseLost, StateError, StateUnavailable
from runflow_tail.journal import CursorState
from runflow_tail.models import Entry, FetchedEntry
from runflow_tail.ownership import ALERTS_LEASE
from runflow_tail.postgres import Database, Fences, PostgresStore
from runflow_tail.postgres.schema import SCHEMA_VERSION
from runflow_tail.postgres.sql import ROW_OVERHEAD

from tests.support.postgres import PostgresServer, claim, expire, postgres_server

S = 1_000_000_000
T0 = 1_700_000_000 * S
STATE = CursorState(fingerprint="fp", watermark=T0, strategy="range")


def rows(*ids: str, ts: int = T0) -> list[FetchedEntry]:
    return [FetchedEntry(entry_id, ts, f'{{"id":"{entry_id}"}}'.encode()) for entry_id in ids]


def database(dsn: str, *, member: str = "a", ttl: float = 60.0) -> Database:
    return Database(SecretStr(dsn), "runflow_tail", member, ttl)


@pytest.fixture
def fences() -> Fences:
    return Fences("a/1")


@pytest.fixture
def store(postgres_dsn: str, fences: Fences) -> Iterator[PostgresStore]:
    opened = PostgresStore(database(postgres_dsn), fences)
    claim(database(postgres_dsn), fences, "stream:s", "stream:t", "sink:k", ALERTS_LEASE)
    yield opened
    opened.close()


def everything(store: PostgresStore, streams: tuple[str, ...] = ("s",)) -> list[Entry]:
    return store.read_after(0, streams, max_events=100_000, max_bytes=1 << 40)


# -- the journal's guarantees ----------------------------------------------------------------


def test_append_commits_the_entries_with_their_cursor(store: PostgresStore) -> None:
    """A page's entries are readable in order with their seqs, and its cursor is saved."""
    appended = store.append("s", rows("a", "b", "c"), STATE)
    assert (appended.previous_seq, list(appended.seqs), appended.last_seq) == (0, [1, 2, 3], 3)
    entries = everything(store)
    first = entries[0]
    assert (first.seq, first.stream, first.id, first.timestamp_ns, first.raw) == (
        1,
        "s",
        "a",
        T0,
        b'{"id":"a"}',
    )
    assert [e.id for e in entries] == ["a", "b", "c"]
    assert store.load_cursor("s") == STATE


def test_rereads_are_dropped_before_they_are_given_a_seq(store: PostgresStore) -> None:
    """Entries seen before (or twice in one page) are dropped; seqs stay dense, so the next
    commit follows the last one exactly (what the in-memory tail needs)."""
    store.append("s", rows("a", "b", "c"), STATE)
    appended = store.append("s", rows("b", "c", "d", "d"), STATE)
    assert (appended.previous_seq, list(appended.seqs)) == (3, [4])
    assert [row.id for row in appended.rows] == ["d"]
    assert [e.id for e in everything(store)] == ["a", "b", "c", "d"]


def test_the_same_id_in_two_streams_is_two_entries(store: PostgresStore) -> None:
    store.append("s", rows("a"), STATE)
    store.append("t", rows("a"), STATE)
    assert [(e.stream, e.id) for e in everything(store, ("s", "t"))] == [("s", "a"), ("t", "a")]


def test_read_after_stops_at_max_bytes_but_always_returns_one(store: PostgresStore) -> None:
    store.append("s", rows("a", "b", "c"), STATE)  # 10 bytes each
    assert [e.id for e in store.read_after(0, ["s"], max_events=10, max_bytes=25)] == ["a", "b"]
    assert [e.id for e in store.read_after(0, ["s"], max_events=10, max_bytes=1)] == ["a"]
    assert [e.id for e in store.read_after(1, ["s"], max_events=10, max_bytes=99, until=2)] == ["b"]


def test_new_sinks_start_at_the_journal_end(store: PostgresStore) -> None:
    store.append("s", rows("a", "b"), STATE)
    assert store.ensure_offsets(["k"]) == {"k": 2}
    store.set_offset("k", 1)
    store.append("s", rows("c"), STATE)
    assert store.ensure_offsets(["k", "new"]) == {"k": 1, "new": 3}


def test_a_dead_letter_moves_the_offset_in_the_same_transaction(store: PostgresStore) -> None:
    """Kept with its reason and entries; repeating it (a commit whose answer was lost) keeps
    one letter."""
    store.append("s", rows("a", "b"), STATE)
    batch = everything(store)
    store.dead_letter("k", batch, "rejected: 422", 2)
    store.dead_letter("k", batch, "rejected: 422", 2)
    (letter,) = store.dead_letters("k")
    assert (letter.first_seq, letter.last_seq, letter.reason) == (1, 2, "rejected: 422")
    assert [e.id for e in letter.entries] == ["a", "b"]
    assert store.offsets()["k"] == 2


def test_alerts_commit_with_their_offset_and_rule_state(store: PostgresStore) -> None:
    store.append("s", rows("a"), STATE)
    alert = ("alerts.hook", "alert-1", T0, b'{"alert":1}')
    last = store.commit_alerts("alerts:engine", 1, [alert], [("rule", "g", b"state")], [])
    assert last == 2
    assert store.offsets()["alerts:engine"] == 1
    assert store.load_alert_state() == {("rule", "g"): b"state"}
    store.commit_alerts("alerts:engine", 1, [alert], [], [("rule", "g")])  # again: no new entry
    assert [e.id for e in everything(store, ("alerts.hook",))] == ["alert-1"]
    assert store.load_alert_state() == {}


def test_the_size_is_counted_as_entries_come_and_go(store: PostgresStore) -> None:
    """PostgreSQL's files do not shrink: the size is what the journal holds, counted."""
    assert store.size_bytes() == 0
    store.append("s", rows("a", "b", "c"), STATE)
    full = store.size_bytes()
    assert full >= 30
    assert store.prune("s", delivered_seq=2, older_than_ns=T0 + 1) == 2
    assert store.entries_count() == 1
    assert 0 < store.size_bytes() < full
    store.drop_delivered_bytes("s", delivered_seq=3)
    assert store.size_bytes() == store.entries_count() * ROW_OVERHEAD


# -- fencing -----------------------------------------------------------------------------------


def test_a_write_for_a_lease_not_held_is_refused_before_it_is_sent(
    store: PostgresStore, fences: Fences
) -> None:
    fences.drop("stream:s")
    with pytest.raises(LeaseLost) as raised:
        store.append("s", rows("a"), STATE)
    assert not raised.value.by_database
    assert fences.refused[("stream:s", "local")] == 1
    assert everything(store) == []


def test_a_write_after_another_member_claimed_is_refused_by_the_epoch_check(
    postgres_dsn: str, store: PostgresStore, fences: Fences
) -> None:
    """The old owner still believes it holds epoch 1; the database knows epoch 2: neither
    its entries nor its cursor land, and the new owner's progress stays."""
    store.append("s", rows("a"), STATE)
    expire(postgres_dsn, "stream:s", "sink:k")
    successor = Fences("b/2")
    assert claim(database(postgres_dsn, member="b"), successor, "stream:s", "sink:k") == {
        "stream:s": 2,
        "sink:k": 2,
    }
    new_owner = PostgresStore(database(postgres_dsn, member="b"), successor)
    moved = CursorState(fingerprint="fp", watermark=T0 + 5 * S)
    new_owner.append("s", rows("b"), moved)
    new_owner.set_offset("k", 2)
    with pytest.raises(LeaseLost) as raised:
        store.append("s", rows("late"), STATE)
    assert raised.value.by_database and raised.value.lease == "stream:s"
    with pytest.raises(LeaseLost):
        store.set_offset("k", 1)
    assert fences.refused[("stream:s", "database")] == 1
    assert [e.id for e in everything(store)] == ["a", "b"]
    assert store.load_cursor("s") == moved
    assert store.offsets()["k"] == 2
    new_owner.close()


def test_an_expired_lease_refuses_writes_even_before_anyone_claims_it(
    postgres_dsn: str, store: PostgresStore
) -> None:
    """Expiry alone ends a lease: a member that could not renew cannot write late."""
    expire(postgres_dsn, "sink:k")
    with pytest.raises(LeaseLost):
        store.set_offset("k", 5)
    assert "k" not in store.offsets()


def test_commits_of_several_members_reach_a_reader_in_seq_order(
    postgres_dsn: str, store: PostgresStore
) -> None:
    """Two members append to their own streams at once while a third reads by offset, as a
    sink does: it sees every entry exactly once (a later seq never commits first)."""
    other_fences = Fences("b/2")
    claim(database(postgres_dsn, member="b"), other_fences, "stream:u")
    other = PostgresStore(database(postgres_dsn, member="b"), other_fences)
    reader = PostgresStore(database(postgres_dsn, member="c"), Fences("c/3"))
    pages = 60
    stop = threading.Event()

    def write(target: PostgresStore, stream: str) -> None:
        for page in range(pages):
            target.append(stream, rows(*(f"{stream}{page}-{n}" for n in range(20))), STATE)

    seen: list[Entry] = []

    def read() -> None:
        offset = 0
        while not stop.is_set() or offset < reader.max_seq():
            batch = reader.read_after(offset, ["s", "u"], max_events=37, max_bytes=1 << 30)
            seen.extend(batch)
            if batch:
                offset = batch[-1].seq

    writers = [
        threading.Thread(target=write, args=(store, "s")),
        threading.Thread(target=write, args=(other, "u")),
    ]
    consumer = threading.Thread(target=read)
    consumer.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    consumer.join(timeout=60)
    assert len(seen) == 2 * pages * 20
    assert len({(e.stream, e.id) for e in seen}) == len(seen)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    other.close()
    reader.close()


# -- opening -----------------------------------------------------------------------------------


def test_a_newer_schema_is_refused_with_upgrade_advice(postgres_dsn: str) -> None:
    PostgresStore(database(postgres_dsn), Fences("a/1")).close()
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO runflow_tail.schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,)
        )
    with pytest.raises(StateError, match=r"newer than this runflow-tail understands.*upgrade"):
        PostgresStore(database(postgres_dsn), Fences("a/1"))


def test_a_server_that_is_down_is_unavailable_with_what_to_check() -> None:
    with postgres_server() as server:
        dsn = server.dsn()
    with pytest.raises(StateUnavailable) as raised:
        PostgresStore(database(dsn), Fences("a/1"))
    assert "cannot reach PostgreSQL at postgres@127.0.0.1" in str(raised.value)
    assert "is it running" in str(raised.value)


def test_a_malformed_dsn_names_the_setting_and_the_expected_form() -> None:
    with pytest.raises(StateError, match=r"state\.dsn is not a valid PostgreSQL connection string"):
        PostgresStore(database("host=x passwrd=hunter2secret"), Fences("a/1"))


def test_a_dsn_that_does_not_parse_shows_no_part_of_its_password() -> None:
    """Double quotes are not libpq's quoting: the parse fails inside the password, and
    libpq's message quotes the text after it, which the scrub cannot know is secret."""
    with pytest.raises(StateError) as raised:
        PostgresStore(database('host=x password="sec ret-tail" foo'), Fences("a/1"))
    assert "not a valid PostgreSQL connection string" in str(raised.value)
    assert "ret-tail" not in str(raised.value)


@pytest.fixture(scope="module")
def password_server() -> Iterator[PostgresServer]:
    with postgres_server(host_auth="scram-sha-256") as server:
        server.psql("CREATE ROLE tail LOGIN PASSWORD 'right-password'")
        yield server


def test_a_wrong_password_says_what_to_check_and_never_shows_it(
    password_server: PostgresServer,
) -> None:
    dsn = f"postgresql://tail:wrong-password@127.0.0.1:{password_server.port}/postgres"
    with pytest.raises(StateError) as raised:
        PostgresStore(database(dsn), Fences("a/1"))
    message = str(raised.value)
    assert "refused the login" in message and "check the user and password" in message
    assert "wrong-password" not in message and "wrong-password" not in repr(raised.value)


def test_the_right_password_works(password_server: PostgresServer) -> None:
    dsn = f"postgresql://tail:right-password@127.0.0.1:{password_server.port}/postgres"
    password_server.psql("GRANT CREATE ON DATABASE postgres TO tail")
    store = PostgresStore(database(dsn), Fences("a/1"))
    assert store.max_seq() == 0
    store.close()


def test_a_restart_breaks_the_session_and_the_next_call_reconnects(
    own_postgres: PostgresServer,
) -> None:
    fences = Fences("a/1")
    store = PostgresStore(database(own_postgres.dsn()), fences)
    claim(database(own_postgres.dsn()), fences, "stream:s")
    store.append("s", rows("a"), STATE)
    own_postgres.restart()
    with pytest.raises(StateUnavailable, match="is unavailable"):
        store.append("s", rows("b"), STATE)
    started = time.monotonic()
    store.append("s", rows("b"), STATE)
    assert time.monotonic() - started < 5
    assert [e.id for e in everything(store)] == ["a", "b"]
    store.close()


def schema_owner(server: PostgresServer) -> str:
    """A role that may create schemas (the password server trusts no one without one)."""
    server.psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'owner') THEN "
        "CREATE ROLE owner LOGIN PASSWORD 'owner-pw'; END IF; END $$;"
        "GRANT CREATE ON DATABASE postgres TO owner"
    )
    return f"postgresql://owner:owner-pw@127.0.0.1:{server.port}/postgres"


def test_a_user_with_only_its_tables_rights_runs_on_a_current_schema(
    password_server: PostgresServer,
) -> None:
    """The common way to run a service: an owner migrates once, the service's user gets
    USAGE and its tables' rights, no CREATE. A current schema needs no DDL."""
    owner = schema_owner(password_server)
    PostgresStore(Database(SecretStr(owner), "granted", "a", 60.0), Fences("a/1")).close()
    password_server.psql(
        "CREATE ROLE service LOGIN PASSWORD 'service-pw';"
        "GRANT USAGE ON SCHEMA granted TO service;"
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA granted TO service;"
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA granted TO service"
    )
    dsn = f"postgresql://service:service-pw@127.0.0.1:{password_server.port}/postgres"
    store = PostgresStore(Database(SecretStr(dsn), "granted", "a", 60.0), Fences("a/1"))
    assert store.max_seq() == 0
    store.close()


def test_a_user_without_rights_on_an_existing_schema_is_told_what_to_grant(
    password_server: PostgresServer,
) -> None:
    """No USAGE on a schema someone else made: one clear error naming the grant, not a
    psycopg traceback ("no schema has been selected to create in")."""
    owner = schema_owner(password_server)
    PostgresStore(Database(SecretStr(owner), "theirs", "a", 60.0), Fences("a/1")).close()
    password_server.psql("CREATE ROLE stranger LOGIN PASSWORD 'stranger-pw'")
    dsn = f"postgresql://stranger:stranger-pw@127.0.0.1:{password_server.port}/postgres"
    with pytest.raises(StateError) as raised:
        PostgresStore(Database(SecretStr(dsn), "theirs", "a", 60.0), Fences("a/1"))
    message = str(raised.value)
    assert "may not use schema theirs" in message and "GRANT USAGE" in message
    assert "stranger-pw" not in message
    # The operator's commands (which only check the schema) say the same.
    with pytest.raises(StateError, match="may not use schema theirs"):
        PostgresStore(
            Database(SecretStr(dsn), "theirs", "a", 60.0), Fences("a/1"), migrate_schema=False
        )
