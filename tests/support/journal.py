"""Journal helpers for tests that drive the SQLite store directly."""

from __future__ import annotations

from collections.abc import Iterable

from runflow_tail.journal import CursorState, JournalStore
from runflow_tail.journal.recent import Appended
from runflow_tail.models import Entry


def commit(
    store: JournalStore, stream: str, rows: Iterable[tuple[str, int, bytes]], state: CursorState
) -> tuple[int, int]:
    """Append ``rows`` with ``state``; returns (entries inserted, the journal's last seq)."""
    appended = store.append(stream, list(rows), state)  # type: ignore[arg-type]
    return len(appended.rows), appended.last_seq


def entries_of(appended: Appended) -> list[Entry]:
    """What a commit inserted, as the Entries a consumer reads."""
    return [
        Entry(seq, appended.stream, entry_id, timestamp_ns, raw)
        for seq, (entry_id, timestamp_ns, raw) in zip(appended.seqs, appended.rows, strict=True)
    ]
