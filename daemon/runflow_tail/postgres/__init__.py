"""The state in PostgreSQL (``[state] backend = "postgres"``): the journal's store, its
schema, and the leases through which several daemons share the work.

- ``store`` (with ``sessions``, ``store_alerts``, ``sql``, ``schema``): the journal's
  tables and every write of them, fenced by a lease epoch;
- ``journal``: ``Journal`` on that store, pausing through database outages;
- ``leases`` (SQL), ``balance`` (fair shares), ``cluster`` (the lease manager: claims,
  renewals, hand-overs, stepping down in time), ``fences`` (epochs held);
- ``connection``: the DSN (a secret), session settings, errors for a person.

psycopg is an optional extra (``runflow-tail[postgres]``): nothing outside this package
imports it, and the service layer imports this package only when the backend is chosen.
"""

from __future__ import annotations

import os
import secrets
import socket

from runflow_tail.config.model import StateSettings
from runflow_tail.metrics import Metrics
from runflow_tail.postgres.cluster import Cluster
from runflow_tail.postgres.connection import Database
from runflow_tail.postgres.fences import Fences
from runflow_tail.postgres.journal import PostgresJournal
from runflow_tail.postgres.leases import Identity
from runflow_tail.postgres.store import PostgresStore

__all__ = [
    "Cluster",
    "Database",
    "Fences",
    "PostgresJournal",
    "PostgresStore",
    "identity",
    "open_cluster",
]


def identity(state: StateSettings, *, role: str = "") -> Identity:
    """Who this process is among the members: ``state.member`` (default ``host:pid``),
    and a token that tells two processes given the same name apart."""
    host = socket.gethostname()
    pid = os.getpid()
    name = state.member or f"{host}:{pid}"
    return Identity(f"{name}/{role}{secrets.token_hex(4)}", name, host, pid)


async def open_cluster(state: StateSettings, metrics: Metrics) -> tuple[PostgresJournal, Cluster]:
    """The journal and the lease manager for a daemon; waits while the database cannot be
    reached, raises ``StateError`` for what a person must fix (DSN, password, schema)."""
    me = identity(state)
    database = Database.from_settings(state, me.name)
    fences = Fences(me.id)
    journal = await PostgresJournal.connect(
        database, fences, max_bytes=state.max_journal_bytes, dedup_window=state.dedup_window
    )
    return journal, Cluster(database, journal, me, fences, metrics)
