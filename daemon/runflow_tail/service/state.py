"""Opening the state: SQLite in the state directory (one daemon; its lock says so), or
PostgreSQL shared with other daemons (leases say which one works on what); for the
daemon, and for the operator commands that run beside it.

The PostgreSQL package is imported only here, and only when ``state.backend`` names it:
psycopg is an optional extra, and a daemon on SQLite never loads it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio

from runflow_tail.config.model import Settings
from runflow_tail.errors import LeaseLost, RunflowTailError
from runflow_tail.journal import Journal, OperatorStore, StateDirLock
from runflow_tail.metrics import Metrics
from runflow_tail.ownership import ALERTS_LEASE, Ownership, sink_lease, stream_lease


@contextlib.asynccontextmanager
async def open_state(
    settings: Settings, state_dir: Path, metrics: Metrics
) -> AsyncIterator[tuple[Journal, Ownership | None]]:
    """The journal, and the lease manager when daemons share a PostgreSQL state."""
    state = settings.state
    if state.backend == "sqlite":
        with StateDirLock(state_dir):
            journal = await Journal.open(
                state_dir, max_bytes=state.max_journal_bytes, dedup_window=state.dedup_window
            )
            try:
                yield journal, None
            finally:
                await journal.aclose()
        return
    postgres = _postgres()
    journal, cluster = await postgres.open_cluster(state, metrics)
    try:
        yield journal, cluster
    finally:
        with anyio.CancelScope(shield=True):
            await cluster.aclose()
            await journal.aclose()


def _postgres() -> Any:
    # The one lazy import of this layer: psycopg is an optional extra (tests/base/test_layers.py).
    import runflow_tail.postgres
    import runflow_tail.postgres.operator

    return runflow_tail.postgres


def open_shared_store(settings: Settings) -> OperatorStore:
    """The PostgreSQL store for an operator command; ``StateError`` (exit 3) with what to
    fix when the database cannot be reached or refuses the login."""
    postgres = _postgres()
    state = settings.state
    store: OperatorStore = postgres.operator.open_operator_store(
        state, postgres.identity(state, role="cli-")
    )
    return store


def cluster_overview(store: OperatorStore) -> dict[str, Any]:
    """Members, leases, lag and backlog of a PostgreSQL state (``runflow-tail cluster``)."""
    overview: dict[str, Any] = _postgres().operator.overview(store)
    return overview


@contextlib.contextmanager
def holding_stream(store: OperatorStore, stream: str) -> Iterator[None]:
    """The stream's lease, held while an operator moves its checkpoint (PostgreSQL)."""
    with _postgres().operator.holding(store, stream_lease(stream)):
        yield


def refuse_reset_all() -> RunflowTailError:
    error: RunflowTailError = _postgres().operator.refuse_reset_all()
    return error


def wanted_leases(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The leases ``settings`` has (every stream, every sink some stream reaches, the alert
    engine when there are rules), and the sinks pinned to a member or host."""
    leases = [stream_lease(stream.name) for stream in settings.streams]
    leases += [sink_lease(name) for name in settings.sinks if settings.streams_for_sink(name)]
    if settings.alerts:
        leases.append(ALERTS_LEASE)
    pins = {sink_lease(name): sink.pin for name, sink in settings.sinks.items() if sink.pin}
    return leases, pins


LOCAL_SINK_TYPES = ("file", "stdout")
"""Sinks that write on the host that delivers them: with a shared state that is whichever
daemon holds the sink's lease, unless the sink is pinned."""


def unpinned_local_sinks(settings: Settings) -> list[str]:
    """Why each file or stdout sink without a ``pin`` is worth a look (PostgreSQL state)."""
    if settings.state.backend != "postgres":
        return []
    return [
        f"sinks.{name}: a {sink.type} sink writes on whichever daemon holds its lease (the "
        f'output moves when the lease does); set pin = "<member or host>" to keep it on one'
        for name, sink in settings.sinks.items()
        if sink.type in LOCAL_SINK_TYPES and sink.pin is None and settings.streams_for_sink(name)
    ]


def lease_lost_in(exc: BaseException) -> LeaseLost | None:
    """The ``LeaseLost`` that ended a worker, also from inside a task group's exception
    group (one holding nothing else but cancellations)."""
    if isinstance(exc, LeaseLost):
        return exc
    if not isinstance(exc, BaseExceptionGroup):
        return None
    found: list[LeaseLost] = []
    for inner in exc.exceptions:
        lost = lease_lost_in(inner)
        if lost is not None:
            found.append(lost)
        elif not isinstance(inner, anyio.get_cancelled_exc_class()):
            return None
    return found[0] if found else None


def describe(ownership: Ownership | None) -> dict[str, Any]:
    return {} if ownership is None else ownership.describe()
