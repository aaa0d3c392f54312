"""The store's sessions (one per thread that uses the store) and how PostgreSQL's errors
become the daemon's: a session that broke is dropped and ``StateUnavailable`` raised (the
next call connects again); a refused fence is ``LeaseLost``."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg

from runflow_tail.postgres import sql
from runflow_tail.postgres.connection import Database, connect, is_transient, unavailable
from runflow_tail.postgres.fences import Fences
from runflow_tail.postgres.schema import FENCE_REFUSED

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="Sessions")
Connection = psycopg.Connection[tuple[Any, ...]]


def guarded(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """Translate what PostgreSQL raises into ``LeaseLost`` / ``StateUnavailable``."""

    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            if exc.sqlstate == FENCE_REFUSED:
                raise self.fences.refuse(_lease_of(exc), by_database=True) from None
            if not is_transient(exc):
                raise
            self._discard_broken()
            raise unavailable(self.database, exc) from None

    functools.update_wrapper(wrapper, method)
    return wrapper


def _lease_of(exc: psycopg.Error) -> str:
    # 'lease stream:all (epoch 3) is no longer held by ...'
    message = exc.diag.message_primary or ""
    return message.split(" ", 2)[1] if message.startswith("lease ") else "?"


@contextlib.contextmanager
def transaction(db: Connection) -> Iterator[None]:
    """A write transaction sent in one round trip (pipeline mode), BEGIN to COMMIT: the
    server never waits for this process inside it, so a frozen daemon holds no lock. An
    error (a refused fence) is rolled back (one more round trip) and raised once the
    pipeline is done."""
    failure: psycopg.Error | None = None
    with db.pipeline():
        try:
            with db.transaction():
                yield
        except psycopg.Error as exc:
            failure = exc
    if failure is not None:
        raise failure


class Sessions:
    database: Database
    fences: Fences
    _writer: Connection | None
    _reader: Connection | None
    _swap: threading.Lock

    def _db(self) -> Connection:
        """The writer's session (the worker thread's), connected again after a break."""
        writer = self._writer
        if writer is None or writer.closed:
            writer = connect(self.database, "journal")
            with self._swap:
                self._writer = writer
        return writer

    def _read_db(self) -> Connection:
        """The reader's session (``read_after``, from the reader's thread)."""
        reader = self._reader
        if reader is None or reader.closed:
            reader = connect(self.database, "reader")
            with self._swap:
                self._reader = reader
        return reader

    def _discard_broken(self) -> None:
        """Drop the sessions that broke; called from either thread, so a session the other
        thread has just replaced is left alone."""
        gone: list[Connection] = []
        with self._swap:
            for name in ("_writer", "_reader"):
                connection: Connection | None = getattr(self, name)
                if connection is not None and (connection.broken or connection.closed):
                    setattr(self, name, None)
                    gone.append(connection)
        for connection in gone:
            connection.close()

    def close(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None

    def _fence(self, db: Connection, lease: str, epoch: int) -> None:
        db.execute(sql.FENCE, (lease, self.fences.member_id, epoch))
