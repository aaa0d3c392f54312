"""The journal: durable entries, stream cursors and sink offsets, used from the event loop.

``Journal`` is the whole interface the pipeline sees: each method says what it does for
its caller (``append`` a page with its cursor, ``read_after`` an offset, ``set_offset``,
``dead_letter`` a batch, ...). Behind it, ``store.JournalStore`` is the SQLite database,
called from one worker thread at a time (a capacity limiter of 1), so the event loop
never blocks on disk and the connection is never used concurrently; readers use their
own connection and thread. A commit that has started always finishes, even when its
caller is cancelled: the cursor and its entries land together or not at all.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import anyio
import anyio.lowlevel

from runflow_tail.journal.backend import OperatorStore, Store
from runflow_tail.journal.dead_letters import DeadLetter
from runflow_tail.journal.lock import StateDirLock, is_locked
from runflow_tail.journal.recent import RecentEntries
from runflow_tail.journal.store import (
    JOURNAL_NAME,
    CursorState,
    JournalDiskFull,
    JournalStore,
    translated,
)
from runflow_tail.models import Entry, FetchedEntry, RejectedEntry
from runflow_tail.observability import get_logger
from runflow_tail.times import NS_PER_SECOND

__all__ = [
    "JOURNAL_NAME",
    "CursorState",
    "DeadLetter",
    "Journal",
    "JournalStore",
    "OperatorStore",
    "StateDirLock",
    "Store",
    "is_locked",
]

PRUNE_INTERVAL = 10.0
CHECKPOINT_INTERVAL = 1.0
DISK_FULL_RETRY_INITIAL = 0.5
DISK_FULL_RETRY_MAX = 10.0
INTERNAL_CONSUMER_MARK = ":"
"""Consumers whose name holds this (the alert engine's ``alerts:engine``) are not sinks:
they take no dead letters."""

P = ParamSpec("P")
T = TypeVar("T")
log = get_logger(__name__)


class Journal:
    def __init__(self, store: Store, *, max_bytes: int, dedup_window_ns: int) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self._dedup_window_ns = dedup_window_ns
        self._worker = anyio.CapacityLimiter(1)
        self._reader = anyio.CapacityLimiter(1)
        self._appended = anyio.Event()
        self._delivered = anyio.Event()
        self.last_seq = 0
        self.recent = RecentEntries(0)
        self._subscribers: dict[str, tuple[str, ...]] = {}
        self._lookbacks_ns: dict[str, int] = {}
        self._rereads_from: dict[str, int] = {}
        self._last_prune = float("-inf")
        self._full = False
        self.disk_full: str | None = None
        """Why writing is paused (the disk under the journal is full), or None."""
        self.size_bytes = 0

    @property
    def full(self) -> bool:
        """Whether polling is paused because the journal reached its size cap."""
        return self._full

    @classmethod
    async def open(cls, state_dir: Path, *, max_bytes: int, dedup_window: float) -> Journal:
        store = await anyio.to_thread.run_sync(JournalStore, state_dir / JOURNAL_NAME)
        journal = cls(store, max_bytes=max_bytes, dedup_window_ns=int(dedup_window * 1e9))
        journal.last_seq = await journal._run(store.max_seq)
        journal.recent.reset(journal.last_seq)
        journal.size_bytes = await journal._run(store.size_bytes)
        return journal

    async def aclose(self) -> None:
        await self._run(self._store.close)

    async def _run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``function`` in the journal's worker thread (see ``_call``)."""
        return await self._call(self._worker, lambda: function(*args, **kwargs))

    async def _read(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a reader-connection ``function`` (``read_after``) in the reader's thread."""
        return await self._call(self._reader, lambda: function(*args, **kwargs))

    async def _call(self, limiter: anyio.CapacityLimiter, call: Callable[[], T]) -> T:
        """One store call. A damaged file, found at any point, is ``JournalUnreadable`` (the
        daemon stops with exit 3). A full disk pauses the caller (polling, an offset
        commit) and retries the same call until space returns: every store write is one
        transaction, rolled back whole, so nothing is lost or done twice."""
        delay = DISK_FULL_RETRY_INITIAL
        while True:
            try:
                result = await anyio.to_thread.run_sync(call, limiter=limiter)
            except sqlite3.Error as exc:
                path = self._store.path
                meaning = exc if path is None else translated(path, exc)
                if not isinstance(meaning, JournalDiskFull):
                    if meaning is exc:
                        raise
                    raise meaning from exc
                self._note_disk_full(str(meaning))
                await anyio.sleep(delay)
                delay = min(delay * 2, DISK_FULL_RETRY_MAX)
                continue
            if self.disk_full is not None and limiter is self._worker:
                log.info("journal.disk_space_available", path=str(self._store.path))
                self.disk_full = None
            return result

    def _note_disk_full(self, problem: str) -> None:
        if self.disk_full is None:
            log.error(
                "journal.disk_full",
                path=str(self._store.path),
                error=problem,
                action="polling and offset commits paused until space returns; nothing is "
                "lost (the API keeps the entries, fetched pages wait in memory)",
            )
        self.disk_full = problem

    # -- polling side ------------------------------------------------------------------

    async def load_cursor(self, stream: str) -> CursorState | None:
        return await self._run(self._store.load_cursor, stream)

    async def save_cursor(self, stream: str, state: CursorState) -> None:
        """Record where a stream stands, without entries (health, a forgotten API cursor)."""
        await self._run(self._store.save_cursor, stream, state)

    async def save_health(self, stream: str, state: CursorState) -> None:
        """Record only a stream's health (its problem, its last good poll): safe while its
        pages are being committed."""
        await self._run(self._store.save_cursor, stream, state, health_only=True)

    async def append(
        self,
        stream: str,
        rows: Sequence[FetchedEntry],
        state: CursorState,
        rejected: Sequence[RejectedEntry] = (),
    ) -> int:
        """Journal a page's entries with the stream's new cursor in one transaction;
        returns how many were new (re-reads are dropped). ``rejected`` items become a
        dead letter of each sink of the stream, once each, in the same transaction."""
        sinks = [
            name for name in self._subscribers.get(stream, ()) if INTERNAL_CONSUMER_MARK not in name
        ]
        appended = await self._run(self._store.append, stream, rows, state, rejected, sinks)
        # An upper estimate (re-reads may not have been inserted), exact again at each prune.
        self.size_bytes += sum(len(row[2]) for row in rows)
        self.recent.add(appended)
        self.announce(appended.last_seq)
        return len(appended.rows)

    def announce(self, last_seq: int) -> None:
        """Wake every consumer waiting for entries: ``last_seq`` has been committed."""
        if last_seq > self.last_seq:
            self.last_seq = last_seq
            self._appended.set()
            self._appended = anyio.Event()

    async def wait_for_space(self) -> None:
        """Pause polling while the journal is at its size cap (the API keeps the data).

        Called before every page; costs nothing until the running estimate nears the cap.
        """
        if self.size_bytes < self.max_bytes:
            return
        while True:
            self.size_bytes = await self._run(self._store.size_bytes)
            if self.size_bytes < self.max_bytes:
                if self._full:
                    log.info("journal.space_available", size_bytes=self.size_bytes)
                    self._full = False
                return
            if not self._full:
                log.warning(
                    "journal.full",
                    size_bytes=self.size_bytes,
                    max_journal_bytes=self.max_bytes,
                    action="polling paused until sinks catch up; nothing is lost, the API "
                    "keeps the entries",
                )
                self._full = True
            await self.prune(force=True)
            if self.size_bytes < self.max_bytes:
                continue
            if await self._run(self._everything_delivered):
                # What is left is what de-duplication needs; blocking would never end.
                log.warning(
                    "journal.over_cap",
                    size_bytes=self.size_bytes,
                    reason="every sink is caught up; the rest is needed to recognise re-reads",
                )
                self._full = False
                return
            await self._delivered.wait()

    async def maintain(self, interval: float = CHECKPOINT_INTERVAL) -> None:
        """Run for the daemon's lifetime: checkpoint the WAL off the commit path, and prune."""
        while True:
            await anyio.sleep(interval)
            await self._read(self._store.checkpoint)
            await self.prune()

    # -- delivery side -----------------------------------------------------------------

    def subscribe(
        self,
        subscriptions: Mapping[str, Sequence[str]],
        lookbacks: Mapping[str, float] | None = None,
    ) -> None:
        """Which sinks read which streams (retention waits for exactly these sinks), and how
        far back each stream re-reads (the least it must remember when space runs out)."""
        self._subscribers = {stream: tuple(sinks) for stream, sinks in subscriptions.items()}
        self._lookbacks_ns = {
            stream: int(seconds * NS_PER_SECOND) for stream, seconds in (lookbacks or {}).items()
        }

    def note_reread_from(self, stream: str, lower_ns: int | None) -> None:
        """The stream's next poll reads from ``lower_ns``: retention keeps what it may read
        again, so a re-read entry is recognised and never delivered twice."""
        if lower_ns is None:
            self._rereads_from.pop(stream, None)
        else:
            self._rereads_from[stream] = lower_ns

    async def read_after(
        self,
        seq: int,
        streams: Sequence[str],
        *,
        max_events: int,
        max_bytes: int,
        until: int | None = None,
    ) -> list[Entry]:
        """Entries of ``streams`` in (seq, until], in seq order, at most one batch's worth:
        from memory when this reader is caught up, else from the reader connection."""
        if self.recent.covered == self.last_seq:
            batch = self.recent.read_after(
                seq, streams, max_events=max_events, max_bytes=max_bytes, until=until
            )
            if batch is not None:
                # A read is a cancellation point and lets other tasks run, wherever it
                # was answered from.
                await anyio.lowlevel.checkpoint()
                return batch
        return await self._read(
            self._store.read_after,
            seq,
            streams,
            max_events=max_events,
            max_bytes=max_bytes,
            until=until,
        )

    async def wait_for_entries_after(self, seq: int) -> None:
        while self.last_seq <= seq:
            await self._appended.wait()

    async def set_offset(self, sink: str, seq: int) -> None:
        await self._run(self._store.set_offset, sink, seq)
        self._delivered.set()
        self._delivered = anyio.Event()
        await self.prune()

    async def ensure_offsets(self, consumers: Iterable[str]) -> dict[str, int]:
        """Every consumer's offset; one seen for the first time starts at the journal's end
        (a sink added to a running setup receives new entries, not the whole history)."""
        return await self._run(self._store.ensure_offsets, list(consumers))

    async def forget_consumer(self, consumer: str) -> None:
        """Drop a consumer's offset, so that it starts at the journal's end when it returns."""
        await self._run(self._store.forget_consumer, consumer)

    async def pending(self, sink: str) -> int | None:
        """The last seq of the batch ``sink`` was sending when it stopped, if any."""
        return await self._run(self._store.pending, sink)

    async def set_pending(self, sink: str, last_seq: int) -> None:
        await self._run(self._store.set_pending, sink, last_seq)

    async def dead_letter_entries(self, sink: str, entries: Sequence[tuple[Entry, str]]) -> int:
        """Keep entries ``sink`` cannot handle, each alone with its reason (once each)."""
        return await self._run(self._store.dead_letter_entries, sink, entries)

    async def dead_letter(self, sink: str, batch: Sequence[Entry], reason: str, end: int) -> None:
        """Keep a batch ``sink`` refused, with the reason, and move it past ``end``: one
        transaction."""
        await self._run(self._store.dead_letter, sink, batch, reason, end)

    async def backlog(self, offset: int, streams: Sequence[str]) -> int:
        """Entries of ``streams`` after ``offset``."""
        return await self._run(self._store.backlog, offset, streams)

    async def measure_size(self) -> int:
        """The journal's size on disk now (live pages)."""
        self.size_bytes = await self._run(self._store.size_bytes)
        return self.size_bytes

    # -- the alert engine's state ------------------------------------------------------

    async def load_alert_state(self) -> dict[tuple[str, str], bytes]:
        return await self._run(self._store.load_alert_state)

    async def forget_alert_rules(self, keep: Iterable[str]) -> int:
        """Drop the state of rules no longer configured; returns how many groups went."""
        return await self._run(self._store.forget_alert_rules, list(keep))

    async def commit_alerts(
        self,
        consumer: str,
        offset: int | None,
        rows: Sequence[tuple[str, str, int, bytes]],
        upserts: Sequence[tuple[str, str, bytes]],
        deletes: Sequence[tuple[str, str]],
    ) -> None:
        """New alert entries, the engine's offset and its changed rule state, together;
        destinations waiting for alerts are woken."""
        last_seq = await self._run(
            self._store.commit_alerts, consumer, offset, rows, upserts, deletes
        )
        if rows:
            self.announce(last_seq)

    async def prune_alert_entries(
        self, readers: Iterable[tuple[str, str]], older_than_ns: int
    ) -> int:
        return await self._run(self._store.prune_alert_entries, list(readers), older_than_ns)

    # -- retention -----------------------------------------------------------------------

    async def prune(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        removed = await self._run(self._prune_sync, under_pressure=force)
        self.size_bytes = await self._run(self._store.size_bytes)
        if removed:
            log.debug("journal.pruned", entries=removed)

    def _everything_delivered(self) -> bool:
        """Whether no subscriber has anything left in its own streams."""
        offsets = self._store.offsets()
        streams_of: dict[str, list[str]] = {}
        for stream, sinks in self._subscribers.items():
            for sink in sinks:
                streams_of.setdefault(sink, []).append(stream)
        return all(
            self._store.backlog(offsets.get(sink, 0), streams) == 0
            for sink, streams in streams_of.items()
        )

    def _prune_sync(self, *, under_pressure: bool = False) -> int:
        offsets = self._store.offsets()
        cursors = self._store.list_cursors()
        removed = 0
        for stream, sinks in self._subscribers.items():
            cursor = cursors.get(stream)
            if cursor is None or cursor.watermark is None:
                continue
            delivered = min((offsets.get(sink, 0) for sink in sinks), default=self.last_seq)
            # At the size cap, keep only what the next poll can re-read (its lookback, and
            # at least a second): otherwise recent entries would hold polling paused forever.
            window = self._dedup_window_ns
            if under_pressure:
                window = max(self._lookbacks_ns.get(stream, 0), NS_PER_SECOND)
            older_than = cursor.watermark - window
            if stream in self._rereads_from:
                older_than = min(older_than, self._rereads_from[stream])
            removed += self._store.prune(stream, delivered_seq=delivered, older_than_ns=older_than)
            if under_pressure:
                # Delivered entries the next poll may re-read: keep their ids, drop their bytes.
                self._store.drop_delivered_bytes(stream, delivered_seq=delivered)
        return removed
