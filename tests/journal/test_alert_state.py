"""The alert engine's journal state and its run context rules, unit by unit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runflow_tail.alerts.context import as_of
from runflow_tail.config.alerts import ALERT_ENGINE_CONSUMER
from runflow_tail.journal import CursorState, JournalStore
from runflow_tail.journal.store import SCHEMA_VERSION
from runflow_tail.run_object import outcome
from runflow_tail.times import NS_PER_SECOND, parse_instant

from tests.support.journal import commit

ENDED = "2026-11-28T10:00:05.500000Z"
FAILED_RUN = {
    "id": "r1",
    "completed_at": ENDED,
    "duration_ms": 5500,
    "failure_code": "NODE_TIMEOUT",
    "failure_message": "Node llm timed out",
    "flow_id": "f1",
}
OLDER_FAILED_RUN = {"id": "r1", "status_code": "failed", "completed_at": ENDED, "flow_id": "f1"}


def test_alerts_offset_and_state_commit_together(tmp_path: Path) -> None:
    """commit_alerts writes the alert entries, the engine's offset and its rule state in one
    transaction, and deletes the state it is told to."""
    store = JournalStore(tmp_path / "j.sqlite3")
    commit(store, "all", [("e1", 1, b"{}"), ("e2", 2, b"{}")], CursorState("fp"))
    store.commit_alerts(ALERT_ENGINE_CONSUMER, 0, [], [("r", '["a"]', b"{}")], [])
    last = store.commit_alerts(
        ALERT_ENGINE_CONSUMER,
        2,
        [("alerts.slack", "alrt_1", 5, b'{"id":"alrt_1"}')],
        [("r", '["b"]', b'{"total":1}')],
        [("r", '["a"]')],
    )
    assert last == 3
    assert store.offsets()[ALERT_ENGINE_CONSUMER] == 2
    assert store.load_alert_state() == {("r", '["b"]'): b'{"total":1}'}
    entries = store.read_after(2, ["alerts.slack"], max_events=10, max_bytes=1000)
    assert [(e.stream, e.id) for e in entries] == [("alerts.slack", "alrt_1")]


def test_delivered_alert_entries_are_pruned_and_removed_rules_forgotten(tmp_path: Path) -> None:
    """An alert entry goes once its destination is past it and it is old enough; the state
    of rules no longer configured is dropped."""
    store = JournalStore(tmp_path / "j.sqlite3")
    rows = [("alerts.slack", f"a{i}", i * NS_PER_SECOND, b"{}") for i in range(1, 4)]
    store.commit_alerts(ALERT_ENGINE_CONSUMER, 0, rows, [("gone", "[1]", b"{}")], [])
    store.ensure_offsets(["slack"])
    store.set_offset("slack", 2)
    removed = store.prune_alert_entries([("alerts.slack", "slack")], 10 * NS_PER_SECOND)
    assert removed == 2
    assert [e.id for e in store.read_after(0, ["alerts.slack"], max_events=9, max_bytes=99)] == [
        "a3"
    ]
    assert store.forget_alert_rules(["kept"]) == 1 and store.load_alert_state() == {}


def test_a_journal_from_before_alerts_is_migrated_in_place(tmp_path: Path) -> None:
    """A schema-2 journal gains the alert_state table and keeps its entries and offsets."""
    path = tmp_path / "j.sqlite3"
    store = JournalStore(path)
    commit(store, "all", [("e1", 1, b"{}")], CursorState("fp"))
    store.ensure_offsets(["out"])
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE alert_state")
    db.execute("DROP INDEX dead_letters_by_entry")  # schema 4's, too
    db.execute("ALTER TABLE dead_letters DROP COLUMN entry_key")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    store = JournalStore(path)
    assert store.offsets() == {"out": 1} and store.load_alert_state() == {}
    assert int(store._db.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION


def test_a_line_logged_before_the_run_ended_sees_it_still_running() -> None:
    """A fetched failed run, seen from a line a second before its completed_at, in either
    schema version: running, no failure, no end."""
    line = "2026-11-28T10:00:04.400000Z"
    seen = as_of(FAILED_RUN, line, parse_instant(line))
    assert outcome(seen) == "running" and "status_code" not in seen
    assert seen["failure_code"] is None and seen["completed_at"] is None
    assert seen["flow_id"] == "f1"
    older = as_of(OLDER_FAILED_RUN, line, parse_instant(line))
    assert outcome(older) == "running" and older["status_code"] == "running"


def test_a_line_at_the_end_or_coarser_than_the_gap_sees_the_failure() -> None:
    """The failure line itself, and a line stamped to the whole second the run ended in
    (it may have been logged after the end), see the run as fetched."""
    for line in ("2026-11-28T10:00:05.500000Z", "2026-11-28T10:00:05Z"):
        assert as_of(FAILED_RUN, line, parse_instant(line)) is FAILED_RUN
        assert as_of(OLDER_FAILED_RUN, line, parse_instant(line)) is OLDER_FAILED_RUN
    running = {**OLDER_FAILED_RUN, "status_code": "running"}
    early = "2026-11-28T09:00:00Z"
    assert as_of(running, early, parse_instant(early)) is running
