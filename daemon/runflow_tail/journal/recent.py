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
from itertools import accumulate

from runflow_tail.models import Entry, FetchedEntry

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
    entry the journal already had is not in ``rows``. Rows stay the poller's
    ``(id, timestamp_ns, raw)`` tuples beside their seqs: an ``Entry`` per row would cost
    the writer thread more than the insert's own Python work, and each consumer gets its
    own ``Entry`` anyway.
    """

    previous_seq: int
    stream: str
    seqs: Sequence[int]
    rows: Sequence[FetchedEntry]
    last_seq: int


@dataclass(slots=True)
class _Chunk:
    stream: str
    seqs: Sequence[int]
    rows: Sequence[FetchedEntry]
    ends: list[int]
    """Bytes of ``rows[0..i]``: where a read's ``max_bytes`` falls is one bisect."""
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
        rows = appended.rows
        if not rows:
            return
        ends = list(accumulate(len(row[2]) for row in rows))
        size = ends[-1] + ENTRY_OVERHEAD * len(rows)
        self._chunks.append(_Chunk(appended.stream, appended.seqs, rows, ends, size))
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
            seqs = chunk.seqs
            if seqs[-1] <= seq:
                continue
            if seqs[0] > limit:
                break
            if chunk.stream not in wanted:
                continue
            start = bisect_right(seqs, seq)
            stop = min(bisect_right(seqs, limit), start + max_events - len(batch))
            ends = chunk.ends
            before = ends[start - 1] if start else 0
            # What fits in max_bytes; a batch's first entry goes whatever its size.
            fit = bisect_right(ends, before + max_bytes - size, start, stop)
            if not batch and fit == start < stop:
                fit += 1
            stream = chunk.stream
            # Each consumer gets its own Entry objects (sharing the bytes): what one decodes
            # and caches on them (``Entry.data``) is freed with its batch, not kept here.
            batch += [
                Entry(entry_seq, stream, entry_id, timestamp_ns, raw)
                for entry_seq, (entry_id, timestamp_ns, raw) in zip(
                    seqs[start:fit], chunk.rows[start:fit], strict=True
                )
            ]
            if fit > start:
                size += ends[fit - 1] - before
            if fit < stop or len(batch) >= max_events:
                return batch
        return batch
