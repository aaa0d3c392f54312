"""The PostgreSQL schema and its migrations, numbered like the SQLite journal's.

The tables mirror SQLite's (``entries``, ``cursors``, ``sink_offsets``, ``dead_letters``,
``alert_state``) and add what sharing needs:

- ``journal_head``: one row holding the last seq given. Every insert of entries updates
  it first, so inserts from different daemons are serialized and **commit in seq order**:
  a consumer that has read seq N has seen every entry at or below N, as with SQLite's
  single writer. (A PostgreSQL sequence would hand out seqs in the order transactions
  start, and a later seq could commit first: a sink would skip the earlier one for good.)
- ``journal_stats``: entries and bytes per stream, kept with every insert and delete, so
  the journal's size is known without scanning it (PostgreSQL's files do not shrink when
  rows go, so their size says nothing about what is live).
- ``members`` (one row per running daemon, with a heartbeat) and ``leases`` (one row per
  stream, sink and the alert engine: ``owner``, ``epoch``, ``expires_at``).
- ``fence(lease, member, epoch)``: called inside every write transaction for a stream,
  sink or the alert engine; it share-locks the lease row and raises (SQLSTATE RF001)
  unless this member still holds that epoch. A claim is an UPDATE of the row, which
  conflicts with the share lock, so a claim waits for a fenced write in progress and a
  write after a claim is refused (``FOR KEY SHARE`` would not conflict: measured).

Migrations run in one transaction under a transaction-scoped advisory lock (daemons
starting together apply them once); a schema newer than this runflow-tail is refused.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from runflow_tail.errors import StateError
from runflow_tail.postgres.connection import Database

SCHEMA_VERSION = 2
FENCE_REFUSED = "RF001"

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE journal_head (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        last_seq bigint NOT NULL DEFAULT 0
    );
    INSERT INTO journal_head DEFAULT VALUES;
    CREATE TABLE entries (
        seq bigint PRIMARY KEY,
        stream text NOT NULL,
        id text NOT NULL,
        ts bigint NOT NULL,
        raw bytea NOT NULL,
        UNIQUE (stream, id)
    );
    CREATE TABLE journal_stats (
        stream text PRIMARY KEY,
        entries bigint NOT NULL,
        bytes bigint NOT NULL
    );
    CREATE TABLE cursors (
        stream text PRIMARY KEY,
        fingerprint text NOT NULL,
        watermark bigint,
        floor bigint,
        strategy text,
        api_cursor text,
        last_id text,
        health_error text,
        last_success_at double precision,
        updated_at double precision NOT NULL
    );
    CREATE TABLE sink_offsets (
        sink text PRIMARY KEY,
        "offset" bigint NOT NULL,
        pending bigint,
        updated_at double precision NOT NULL
    );
    CREATE TABLE dead_letters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sink text NOT NULL,
        first_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        reason text NOT NULL,
        created_at double precision NOT NULL,
        entries bytea NOT NULL,
        UNIQUE (sink, first_seq, last_seq)
    );
    CREATE TABLE alert_state (
        rule text NOT NULL,
        group_key text NOT NULL,
        state bytea NOT NULL,
        updated_at double precision NOT NULL,
        PRIMARY KEY (rule, group_key)
    );
    CREATE TABLE members (
        id text PRIMARY KEY,
        name text NOT NULL,
        host text NOT NULL,
        pid integer NOT NULL,
        version text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL
    );
    CREATE TABLE leases (
        name text PRIMARY KEY,
        kind text NOT NULL,
        owner text,
        epoch bigint NOT NULL DEFAULT 0,
        expires_at timestamptz NOT NULL DEFAULT '-infinity',
        acquired_at timestamptz
    );
    CREATE FUNCTION fence(lease text, member text, held bigint) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        PERFORM 1 FROM leases
         WHERE name = lease AND owner = member AND epoch = held
           AND expires_at > clock_timestamp()
           FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'lease % (epoch %) is no longer held by %', lease, held, member
                USING ERRCODE = 'RF001';
        END IF;
    END
    $$;
    """,
    # As the SQLite journal's migration 4: entries dead-lettered alone (one a sink cannot
    # decode, one the poller cannot order) are kept once per sink, by a key; batches stay
    # unique by their range (several rejected entries of one page share a position).
    2: """
    ALTER TABLE dead_letters ADD COLUMN entry_key text;
    ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_sink_first_seq_last_seq_key;
    CREATE UNIQUE INDEX dead_letters_by_range ON dead_letters (sink, first_seq, last_seq)
        WHERE entry_key IS NULL;
    CREATE UNIQUE INDEX dead_letters_by_entry ON dead_letters (sink, entry_key);
    """,
}


def migrate(connection: psycopg.Connection[tuple[Any, ...]], database: Database) -> None:
    """Bring the schema to ``SCHEMA_VERSION`` (creating it on first use)."""
    schema = sql.Identifier(database.schema)
    with connection.transaction():
        connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runflow-tail:{database.schema}",)
        )
        exists = connection.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (database.schema,)
        ).fetchone()
        try:
            version = _current_version(connection, database, schema, exists=exists is not None)
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName) as exc:
            raise _not_allowed(database, exc, exists=exists is not None) from None
        if version > SCHEMA_VERSION:
            raise StateError(
                f"PostgreSQL at {database.describe()}: schema version {version} is newer than "
                f"this runflow-tail understands ({SCHEMA_VERSION}); upgrade runflow-tail"
            )
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                connection.execute(_MIGRATIONS[target].encode())
                connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (target,))
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName) as exc:
            raise _not_allowed(database, exc, exists=True) from None


def _current_version(
    connection: psycopg.Connection[tuple[Any, ...]],
    database: Database,
    schema: sql.Identifier,
    *,
    exists: bool,
) -> int:
    """The schema's version, creating the schema and its version table when missing. A
    current schema needs no DDL, so a user granted only its tables' rights can run."""
    if not exists:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    found = connection.execute(
        "SELECT to_regclass(format('%%I.schema_version', %s::text))", (database.schema,)
    ).fetchone()
    if found is None or found[0] is None:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    row = connection.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _not_allowed(database: Database, exc: psycopg.Error, *, exists: bool) -> StateError:
    """What a user without the rights it needs should do, in one line."""
    reason = exc.diag.message_primary or type(exc).__name__
    if not exists:
        return StateError(
            f"PostgreSQL at {database.describe()}: this user may not create the schema "
            f"({reason}); create it for this user first: "
            f"CREATE SCHEMA {database.schema} AUTHORIZATION <user>"
        )
    return StateError(
        f"PostgreSQL at {database.describe()}: this user may not use schema "
        f"{database.schema} ({reason}); grant it: GRANT USAGE, CREATE ON SCHEMA "
        f"{database.schema} TO <user> (or, once the schema is current, USAGE and SELECT, "
        "INSERT, UPDATE, DELETE on its tables and sequences)"
    )


def check_current(connection: psycopg.Connection[tuple[Any, ...]], database: Database) -> None:
    """For the operator's commands, which change no schema: a missing schema is most likely
    a typo in ``state.pg_schema`` (creating it would show an empty state as if it were the
    real one), and an older one belongs to the daemons that run it."""
    try:
        found = connection.execute(
            "SELECT to_regclass(format('%%I.schema_version', %s::text))", (database.schema,)
        ).fetchone()
        if found is None or found[0] is None:
            raise StateError(
                f"PostgreSQL at {database.describe()}: no runflow-tail state there; check "
                "state.pg_schema (a daemon creates the schema when it first starts)"
            )
        row = connection.execute(
            sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_version").format(
                sql.Identifier(database.schema)
            )
        ).fetchone()
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName) as exc:
        raise _not_allowed(database, exc, exists=True) from None
    version = int(row[0]) if row else 0
    if version < SCHEMA_VERSION:
        raise StateError(
            f"PostgreSQL at {database.describe()}: schema version {version} is older than "
            f"this runflow-tail's ({SCHEMA_VERSION}); use the runflow-tail the daemons run, "
            "or start a daemon of this version once to migrate it"
        )
    if version > SCHEMA_VERSION:
        raise StateError(
            f"PostgreSQL at {database.describe()}: schema version {version} is newer than "
            f"this runflow-tail understands ({SCHEMA_VERSION}); upgrade runflow-tail"
        )
