"""Replay sends what the live sink would have been sent, and never stops on an entry the
sink cannot handle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from runflow_tail.delivery.replay import replay_range
from runflow_tail.journal import CursorState, JournalStore
from runflow_tail.models import Entry, FetchedEntry
from runflow_tail.sinks.stdout import StdoutSinkConfig

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000 * 10**9


class Recording:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, batch: Sequence[Entry]) -> None:
        self.sent += [entry.id for entry in batch]

    async def aclose(self) -> None:
        pass


def entry(entry_id: str, n: int, raw: bytes) -> FetchedEntry:
    return FetchedEntry(entry_id, T0 + n, raw)


async def test_a_range_replay_matches_as_live_delivery_and_skips_undecodable_entries(
    tmp_path: Path,
) -> None:
    """match = run.outcome:failed sees the outcome derived from the run an entry carries
    (the current schema has no status_code), and an entry of invalid UTF-8 is skipped,
    not a crash."""
    failed = b'{"id":"a","run":{"failure_code":"X","completed_at":"2026-01-01T00:00:00Z"}}'
    fine = b'{"id":"b","run":{"completed_at":"2026-01-01T00:00:00Z","node_runs":[]}}'
    broken = b'{"id":"c","message":"\xff\xfe"}'
    store = JournalStore(tmp_path / "journal.sqlite3")
    rows = [entry("a", 1, failed), entry("b", 2, fine), entry("c", 3, broken)]
    store.append("all", rows, CursorState("fp").advanced(rows))
    sink = Recording()
    config = StdoutSinkConfig(match="run.outcome:failed")
    try:
        sent = await replay_range(store, sink, "out", config, ["all"], T0, None)
    finally:
        store.close()
    assert sink.sent == ["a"] and sent == 1
