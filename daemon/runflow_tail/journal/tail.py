"""The newest committed entries, kept in memory for consumers that are caught up.

A caught-up sink would otherwise read back from SQLite every entry the poller has just
written: one step per row on the reader connection, each one a GIL handoff that competes
with the event loop. The tail hands those entries over directly. It only answers when it
holds *every* entry after the reader's offset, so what a consumer sees is exactly what
``JournalStore.read_after`` would return; anything else (a consumer far behind, entries
written by another path) falls through to SQLite.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..models import Entry

TAIL_BYTES = 4 * 1024 * 1024
"""Memory for recent entries: a few group commits of projected entries; the newest commit
is kept whatever its size (a 500-entry page of full run objects is about 2.4 MB)."""
MIN_CHUNKS = 2
"""Commits kept whatever their size, so a consumer reading the one before the newest is
still served from memory when pages are large."""
ENTRY_OVERHEAD = 300
"""Approximate bytes of a journaled entry beyond its raw bytes (objects, id, list slots;
measured about 270)."""


@dataclass(frozen=True, slots=True)
class Appended:
    """One commit's result: every entry it inserted, in seq order, and where it sits.

    ``previous_seq`` is the journal's end before the commit, ``last_seq`` after it; an
    entry the journal already had is not in ``entries``.
    """

    previous_seq: int
    entries: list[Entry]
    last_seq: int


@dataclass(slots=True)
class _Chunk:
    seqs: list[int]
    entries: list[Entry]
    size: int


class RecentEntries:
    """Entries with seq in ``(floor, covered]``, all of them, bounded by ``max_bytes``."""

    def __init__(self, end: int, *, max_bytes: int = TAIL_BYTES) -> None:
        self.floor = end
        self.covered = end
        self.max_bytes = max_bytes
        self._chunks: deque[_Chunk] = deque()
        self._size = 0

    def add(self, appended: Appended) -> None:
        if appended.previous_seq != self.covered:
            # Something else wrote in between (or this is the first commit since the
            # journal opened): start over from here.
            self.reset(appended.last_seq)
            return
        self.covered = appended.last_seq
        if not appended.entries:
            return
        entries = appended.entries
        size = sum(len(entry.raw) for entry in entries) + ENTRY_OVERHEAD * len(entries)
        self._chunks.append(_Chunk([entry.seq for entry in entries], entries, size))
        self._size += size
        while self._size > self.max_bytes and len(self._chunks) > MIN_CHUNKS:
            dropped = self._chunks.popleft()
            self._size -= dropped.size
            self.floor = dropped.seqs[-1]

    def reset(self, end: int) -> None:
        self.floor = self.covered = end
        self._chunks.clear()
        self._size = 0

    def read_after(
        self,
        seq: int,
        streams: Sequence[str],
        *,
        max_events: int,
        max_bytes: int,
        until: int | None = None,
    ) -> list[Entry] | None:
        """What ``JournalStore.read_after`` returns for the same arguments, or None when
        this tail does not hold everything after ``seq``."""
        if seq < self.floor:
            return None
        wanted = set(streams)
        limit = self.covered if until is None else min(until, self.covered)
        batch: list[Entry] = []
        size = 0
        for chunk in self._chunks:
            if chunk.seqs[-1] <= seq:
                continue
            for entry in chunk.entries[bisect_right(chunk.seqs, seq) :]:
                if entry.seq > limit or len(batch) >= max_events:
                    return batch
                if entry.stream not in wanted:
                    continue
                size += len(entry.raw)
                if batch and size > max_bytes:
                    return batch
                # A consumer's own Entry (sharing the bytes): what a consumer decodes and
                # caches on it (``Entry.data``) is freed with its batch, not kept here.
                batch.append(
                    Entry(entry.seq, entry.stream, entry.id, entry.timestamp_ns, entry.raw)
                )
        return batch
