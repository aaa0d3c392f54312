"""``Journal`` on PostgreSQL: the same interface and the same worker threads; what differs
is what happens when the database cannot be reached.

A store call that finds PostgreSQL down, restarting or cut off raises
``StateUnavailable``; here the call waits (exponential backoff with jitter, up to
``OUTAGE_BACKOFF_MAX``) and is made again, on a new session. So a poller or a delivery
simply pauses through an outage and goes on where it was; the waiting is cancellable, so
the lease manager can still stop it (its lease may expire meanwhile). Every write may be
repeated after a lost answer (store.py says why that is safe). ``LeaseLost`` is not
retried: it goes to the worker, which stops.

Entries other members commit are announced by the lease manager's listener
(``announce``), so a delivery here wakes for them as for its own poller's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio

from runflow_tail.errors import StateUnavailable
from runflow_tail.journal import Journal
from runflow_tail.observability import get_logger
from runflow_tail.pacing import Backoff
from runflow_tail.postgres.connection import Database
from runflow_tail.postgres.fences import Fences
from runflow_tail.postgres.store import PostgresStore

P = ParamSpec("P")
T = TypeVar("T")
OUTAGE_BACKOFF_INITIAL = 0.1
OUTAGE_BACKOFF_MAX = 5.0

log = get_logger(__name__)


class PostgresJournal(Journal):
    def __init__(self, store: PostgresStore, *, max_bytes: int, dedup_window_ns: int) -> None:
        super().__init__(store, max_bytes=max_bytes, dedup_window_ns=dedup_window_ns)
        self.store = store
        self.outage: str | None = None
        """What is wrong, while the database cannot be reached."""
        self.outage_since: float | None = None
        self._failing: dict[str, str] = {}
        """What fails now, by kind ("write", "read"): a read that succeeds says nothing of
        writes that fail (a full disk on the server), so it does not end their outage."""

    @classmethod
    async def connect(
        cls, database: Database, fences: Fences, *, max_bytes: int, dedup_window: float
    ) -> PostgresJournal:
        """Open the store (migrating the schema); while the database cannot be reached,
        say so and keep trying. A wrong DSN or password raises ``StateError``."""
        backoff = Backoff(OUTAGE_BACKOFF_INITIAL * 5, OUTAGE_BACKOFF_MAX * 2)
        while True:
            try:
                store = await anyio.to_thread.run_sync(PostgresStore, database, fences)
                break
            except StateUnavailable as exc:
                delay = backoff.next_delay()
                log.warning("state.unavailable", error=str(exc), retry_in=round(delay, 2))
                await anyio.sleep(delay)
        journal = cls(store, max_bytes=max_bytes, dedup_window_ns=int(dedup_window * 1e9))
        journal.last_seq = await journal._run(store.max_seq)
        journal.recent.reset(journal.last_seq)
        journal.size_bytes = await journal._run(store.size_bytes)
        return journal

    async def _run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        backoff = Backoff(OUTAGE_BACKOFF_INITIAL, OUTAGE_BACKOFF_MAX)
        while True:
            try:
                result = await super()._run(function, *args, **kwargs)
            except StateUnavailable as exc:
                await self._wait_out(exc, backoff, "write")
                continue
            self._recovered("write")
            return result

    async def _read(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        backoff = Backoff(OUTAGE_BACKOFF_INITIAL, OUTAGE_BACKOFF_MAX)
        while True:
            try:
                result = await super()._read(function, *args, **kwargs)
            except StateUnavailable as exc:
                await self._wait_out(exc, backoff, "read")
                continue
            self._recovered("read")
            return result

    async def _wait_out(self, exc: StateUnavailable, backoff: Backoff, kind: str) -> None:
        delay = backoff.next_delay()
        self._failing[kind] = str(exc)
        if self.outage is None:
            self.outage_since = anyio.current_time()
            log.warning(
                "state.unavailable",
                error=str(exc),
                action="polling and delivery pause; retrying with backoff",
            )
        self.outage = str(exc)
        await anyio.sleep(delay)

    def _recovered(self, kind: str) -> None:
        if self._failing.pop(kind, None) is not None and self._failing:
            self.outage = next(iter(self._failing.values()))
            return
        if self.outage is not None and not self._failing:
            since = self.outage_since or anyio.current_time()
            log.info("state.available", after_seconds=round(anyio.current_time() - since, 2))
            self.outage = None
            self.outage_since = None
