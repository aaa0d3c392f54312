"""Connecting to PostgreSQL: the DSN (a secret), the session every connection runs with,
and errors a person can act on.

Every session is set up for leases (README, "Running more than one"):

- ``idle_in_transaction_session_timeout``: a daemon frozen inside a transaction (a pause,
  SIGSTOP, a partition) loses its row locks long before its lease could be claimed, so it
  never blocks the member that takes over;
- ``client_connection_check_interval`` (PostgreSQL 14+): the server stops a statement
  whose client vanished instead of running it to the end with its locks held;
- TCP keepalives and ``tcp_user_timeout``: a silent partition is noticed in about a
  lease's time, not in the kernel's two hours; ``connect_timeout``: a frozen server does
  not hang a connect.

The DSN may hold a password: it is a ``SecretStr`` everywhere, never logged, and any text
shown to a person is scrubbed of it (libpq's own messages never include it, but a DSN
that fails to parse may be quoted back).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from runflow_tail.config.model import StateSettings
from runflow_tail.errors import StateError, StateUnavailable
from runflow_tail.observability import MASK, register_secrets

CHECK_INTERVAL_MS = 1000
MIN_SERVER_VERSION = 130000
STATEMENT_TIMEOUT_MS = 60_000
"""A bound on any one statement (a lock wait counts): a hung call ends as an error that is
retried, never as a worker stuck for good."""


@dataclass(frozen=True)
class Database:
    """Where the state lives and how this daemon's sessions behave."""

    dsn: SecretStr
    """A libpq connection string or URI; empty: libpq's PG* variables and ~/.pgpass."""
    schema: str
    member: str
    lease_ttl: float

    def __post_init__(self) -> None:
        # Masked wherever text leaves the process (logs, tracebacks, /readyz), as every
        # configured secret is: the DSN, and its password alone.
        register_secrets(self.secret_values())

    def secret_values(self) -> list[str]:
        """The DSN and the password in it (URI or ``key=value`` form), if any."""
        dsn = self.dsn.get_secret_value()
        values = [dsn, *re.findall(r"://[^:/@]*:([^@]+)@", dsn)]
        with contextlib.suppress(psycopg.Error):
            values.append(str(self._parsed().get("password") or ""))
        return [value for value in values if value]

    @classmethod
    def from_settings(cls, state: StateSettings, member: str) -> Database:
        dsn = state.dsn.get_secret_value() if state.dsn is not None else ""
        if state.dsn_file is not None:
            dsn = read_dsn_file(state.dsn_file)
        return cls(SecretStr(dsn.strip()), state.pg_schema, member, state.lease_ttl)

    @property
    def channel(self) -> str:
        """The NOTIFY channel on which members announce commits and released leases."""
        return f"{self.schema}_events"

    def conninfo(self, purpose: str) -> str:
        """The DSN with this daemon's connection options added where it sets none."""
        given = self._parsed()
        ttl = self.lease_ttl
        defaults: dict[str, Any] = {
            "application_name": f"runflow-tail {self.member} {purpose}"[:63],
            "connect_timeout": max(2, round(ttl / 3)),
            "keepalives": 1,
            "keepalives_idle": max(1, round(ttl / 3)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": max(1000, round(ttl * 1000 * 2 / 3)),
        }
        extra = {key: value for key, value in defaults.items() if key not in given}
        return make_conninfo(self.dsn.get_secret_value(), **extra)

    def describe(self) -> str:
        """Where, for a person: ``user@host:port/dbname``, never the password."""
        with contextlib.suppress(psycopg.Error):
            parts = self._parsed()
            user = parts.get("user", "")
            host = parts.get("host", "") or parts.get("hostaddr", "")
            port = parts.get("port", "")
            dbname = parts.get("dbname", "")
            where = f"{user}@" if user else ""
            where += f"{host}" if host else "(PGHOST or the local socket)"
            where += f":{port}" if port else ""
            where += f"/{dbname}" if dbname else ""
            return f"{where}, schema {self.schema}"
        return f"(an unreadable DSN), schema {self.schema}"

    def scrub(self, text: str) -> str:
        """``text`` without the DSN's password (or the DSN itself, if it is quoted back)."""
        secrets = self.secret_values()
        for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def _parsed(self) -> dict[str, Any]:
        return conninfo_to_dict(self.dsn.get_secret_value())

    def session_settings(self, server_version: int) -> sql.Composed:
        """What every session sets right after connecting."""
        idle_ms = max(500, round(self.lease_ttl * 1000 / 3))
        statements = [
            sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)),
            sql.SQL("SET idle_in_transaction_session_timeout = {}").format(idle_ms),
            sql.SQL("SET statement_timeout = {}").format(STATEMENT_TIMEOUT_MS),
        ]
        if server_version >= 140000:
            statements.append(
                sql.SQL("SET client_connection_check_interval = {}").format(CHECK_INTERVAL_MS)
            )
        return sql.SQL("; ").join(statements)


def read_dsn_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise StateError(
            f"state.dsn_file = {str(path)!r}: cannot read it ({reason}); expected a readable "
            "file holding the PostgreSQL connection string"
        ) from None
    if not text:
        raise StateError(f"state.dsn_file = {str(path)!r} is empty; expected a connection string")
    return text


def connect(database: Database, purpose: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A ready session (autocommit; transactions are explicit), or ``StateUnavailable``
    (try again later) / ``StateError`` (a person must fix something) saying why."""
    try:
        connection = psycopg.connect(database.conninfo(purpose), autocommit=True)
    except psycopg.Error as exc:
        raise connect_error(database, exc) from None
    try:
        check_server(database, connection.info.server_version)
        connection.execute(database.session_settings(connection.info.server_version))
    except BaseException:
        connection.close()
        raise
    return connection


async def connect_async(
    database: Database, purpose: str
) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    """``connect`` for the event loop (the lease manager and the commit listener)."""
    try:
        connection = await psycopg.AsyncConnection.connect(
            database.conninfo(purpose), autocommit=True
        )
    except psycopg.Error as exc:
        raise connect_error(database, exc) from None
    try:
        check_server(database, connection.info.server_version)
        await connection.execute(database.session_settings(connection.info.server_version))
    except BaseException:
        await connection.close()
        raise
    return connection


def check_server(database: Database, version: int) -> None:
    if version < MIN_SERVER_VERSION:
        raise StateError(
            f"PostgreSQL at {database.describe()} is version {version // 10000}; runflow-tail "
            f"needs {MIN_SERVER_VERSION // 10000} or newer"
        )


_UNREACHABLE = (
    "connection refused",
    "timeout expired",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "server closed the connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "connection reset",
    "no such file or directory",  # a Unix socket that is not there (yet)
    "too many clients",
)


def connect_error(database: Database, exc: psycopg.Error) -> StateError:
    """What a failed connect means, for a person, with what to do."""
    detail = _first_line(database.scrub(str(exc))).removeprefix("connection failed: ")
    where = database.describe()
    lowered = detail.lower()
    if isinstance(exc, psycopg.ProgrammingError) or "connection info string" in lowered:
        # libpq quotes the text it could not parse, which may be part of a password the
        # scrub could not find (the DSN did not parse): only a bad option's name is shown.
        named = f" ({detail})" if lowered.startswith("invalid connection option") else ""
        return StateError(
            f"state.dsn is not a valid PostgreSQL connection string{named}; expected "
            "e.g. postgresql://user@host:5432/dbname or 'host=... dbname=... user=...'"
        )
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return StateError(
            f"PostgreSQL at {where} refused the login ({_server_says(detail)}); check the "
            "user and password (state.dsn or state.dsn_file, else PGPASSWORD or ~/.pgpass)"
        )
    if "does not exist" in lowered:
        return StateError(
            f"PostgreSQL at {where}: {_server_says(detail)}; create it, or fix state.dsn"
        )
    if any(sign in lowered for sign in _UNREACHABLE):
        return StateUnavailable(
            f"cannot reach PostgreSQL at {where} ({_server_says(detail)}); is it running, and "
            "are the host and port in state.dsn (or PGHOST/PGPORT) right?"
        )
    return StateError(f"cannot connect to PostgreSQL at {where}: {detail}; check state.dsn")


def unavailable(database: Database, exc: psycopg.Error) -> StateUnavailable:
    """A session that broke while in use (restart, partition, a killed backend)."""
    detail = _first_line(database.scrub(str(exc))) or type(exc).__name__
    return StateUnavailable(f"PostgreSQL at {database.describe()} is unavailable: {detail}")


def is_transient(exc: psycopg.Error) -> bool:
    """Errors that a later attempt on a new session can get past."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    # serialization failure, deadlock, statement timeout, admin shutdown / crash, idle timeout
    return (exc.sqlstate or "")[:2] in ("40", "57", "08", "25") or exc.sqlstate == "55P03"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _server_says(detail: str) -> str:
    """libpq's 'connection to server at "h", port p failed: FATAL:  why' as just 'why'."""
    reason = detail.rpartition("failed: ")[2] if "failed: " in detail else detail
    return re.sub(r"^(FATAL|ERROR):\s+", "", reason)
