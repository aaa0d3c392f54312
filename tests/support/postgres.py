"""A throwaway PostgreSQL server for tests: ``initdb`` in a temp directory, ``postgres`` on a
free loopback port, run as the ``postgres`` user when the tests run as root.

One server per test session (about a second to make), a fresh database per test (about
0.1 s); tests that restart, freeze or partition the server get one of their own. The
server is our child process (not ``pg_ctl``'s daemon), so a test can signal it directly.
In CI (``CI`` set) a missing server binary fails the tests instead of skipping them.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psycopg
import psycopg.sql
import pytest
from pydantic import SecretStr
from runflow_tail.config.model import StateSettings
from runflow_tail.postgres import Database, Fences
from runflow_tail.postgres.leases import Identity, LeaseBook

START_TIMEOUT = 30.0
_databases = itertools.count(1)


def server_bin() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    found = [path for path in found if Path(path, "initdb").exists()]
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def require_server() -> Path:
    path = server_bin()
    if path is None:
        message = "no PostgreSQL server installed (apt-get install postgresql; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """One server; ``dsn(database)`` for clients; ``restart``, ``stop``, ``freeze``."""

    directory: Path
    port: int
    user: str | None
    listen: tuple[str, ...] = ("127.0.0.1",)
    durable: bool = False
    """Production settings (fsync, synchronous commits) instead of the tests' fast ones."""
    process: subprocess.Popen[bytes] | None = None
    bin: Path = field(default_factory=require_server)

    def dsn(self, database: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{database}"

    def _as_server_user(self, *command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            user=self.user,
            check=True,
            capture_output=True,
        )

    def init(self, hba: str = "", *, host_auth: str = "trust") -> None:
        self._as_server_user(
            "initdb",
            "-D",
            str(self.directory / "data"),
            "-U",
            "postgres",
            "--auth-local=trust",
            f"--auth-host={host_auth}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        )
        if hba:
            with (self.directory / "data" / "pg_hba.conf").open("a") as handle:
                handle.write(hba + "\n")

    def start(self) -> None:
        log = (self.directory / "log").open("ab")
        self.process = subprocess.Popen(
            [
                *_die_with_this_process(),
                str(self.bin / "postgres"),
                "-D",
                str(self.directory / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                f"listen_addresses={','.join(self.listen)}",
                *self._speed(),
                "-c",
                "max_connections=200",
            ],
            user=self.user,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            where = ["-h", str(self.directory), "-p", str(self.port)]
            ready = subprocess.run([str(self.bin / "pg_isready"), "-q", *where], check=False)
            if ready.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{self.log_tail()}")
            time.sleep(0.02)

    def _speed(self) -> list[str]:
        if self.durable:
            return []
        off = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
        return [part for setting in off for part in ("-c", setting)]

    def stop(self, how: signal.Signals = signal.SIGINT) -> None:
        """SIGINT: fast shutdown (clients are disconnected); SIGQUIT: immediate (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(how)
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "log").read_text(errors="replace")[-3000:]
        return ""

    def create_database(self) -> str:
        name = f"t{os.getpid()}_{next(_databases)}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return name

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.directory),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def destroy(self) -> None:
        self.stop(signal.SIGQUIT)
        shutil.rmtree(self.directory, ignore_errors=True)


def _die_with_this_process() -> list[str]:
    """``setpriv --pdeathsig QUIT``: the server stops (immediately) when the test process
    dies without its teardown (SIGKILL, or a SIGTERM from ``timeout``), instead of living on
    as an orphan. The signal follows the *thread* that started the server, so only a server
    started on the main thread gets it (one started on a worker thread would stop with it)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "QUIT", "--"]


def make_server(
    *,
    listen: tuple[str, ...] = ("127.0.0.1",),
    hba: str = "",
    host_auth: str = "trust",
    durable: bool = False,
) -> PostgresServer:
    """A started server. Its directory comes from ``tempfile`` and is handed to the server's
    user: pytest's ``tmp_path`` lives under a 0700 directory that user cannot enter."""
    bin_dir = require_server()
    user = "postgres" if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="pgtest."))
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(directory, account.pw_uid, account.pw_gid)
    server = PostgresServer(
        directory, free_port(), user, listen=listen, durable=durable, bin=bin_dir
    )
    try:
        server.init(hba, host_auth=host_auth)
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


@contextlib.contextmanager
def postgres_server(**options: object) -> Iterator[PostgresServer]:
    server = make_server(**options)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[PostgresServer]:
    """One server for the whole session; tests take a database each (``postgres_dsn``)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_session: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_session.dsn(postgres_session.create_database())


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, to restart or freeze."""
    with postgres_server() as server:
        yield server


def signal_server(server: PostgresServer, how: signal.Signals) -> None:
    """Signal the postmaster and every backend (backends leave its session)."""
    assert server.process is not None
    children = subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in [server.process.pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, how)


def postgres_state(dsn: str, **options: Any) -> StateSettings:
    """``[state]`` for the PostgreSQL backend with short leases (tests)."""
    return StateSettings(backend="postgres", dsn=SecretStr(dsn), **{"lease_ttl": 2.0, **options})


def claim(database: Database, fences: Fences, *leases: str) -> dict[str, int]:
    """Claim ``leases`` as ``fences``' member (as the lease manager would) and hold them."""
    name = fences.member_id.partition("/")[0]
    book = LeaseBook(database, Identity(fences.member_id, name, "test-host", os.getpid()))

    async def take() -> dict[str, int]:
        try:
            await book.renew({})
            return await book.claim(list(leases))
        finally:
            await book.aclose()

    claimed = anyio.run(take)
    for lease, epoch in claimed.items():
        fences.hold(lease, epoch)
    return claimed


def expire(dsn: str, *leases: str, schema: str = "runflow_tail") -> None:
    """Make leases expire now (as if their owner stopped renewing a lease time ago)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            psycopg.sql.SQL("UPDATE {}.leases SET expires_at = now() WHERE name = ANY(%s)").format(
                psycopg.sql.Identifier(schema)
            ),
            (list(leases),),
        )
