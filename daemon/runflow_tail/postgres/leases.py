"""Leases and members in SQL, for one member, on the lease manager's own session.

A lease row (``leases``) is ``owner``, ``epoch`` and ``expires_at``; a member row
(``members``) is a heartbeat. Every comparison with time happens in the database, against
its own clock, so no two hosts' clocks are ever compared. Each operation is one statement
(autocommit), so ``now()`` is the moment it runs:

- **claim**: take a lease that is free, expired or never seen, with a new epoch (+1; it
  never goes back). A lease held by a live member is never taken: a member that holds
  more than its share hands one over itself (``cluster.py``), so stealing (and the
  duplicate deliveries it would cause) never happens.
- **renew**: push ``expires_at`` forward for the leases held with the epoch claimed, and
  the member's heartbeat with them, in one statement; a lease missing from the answer
  is lost.
- **release**: give a lease back after its worker stopped, and say so (NOTIFY), so that
  another member claims it at once instead of after it expires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from runflow_tail.ownership import lease_kind
from runflow_tail.postgres.connection import Database, connect_async
from runflow_tail.version import __version__

AsyncConnection = psycopg.AsyncConnection[tuple[Any, ...]]
LEASES_CHANGED = "leases"
"""The NOTIFY payload that tells members to look at the leases again."""
FORGET_MEMBERS_AFTER = "1 hour"

_RENEW = b"""
WITH me AS (
    INSERT INTO members (id, name, host, pid, version, expires_at)
    VALUES (%(id)s, %(name)s, %(host)s, %(pid)s, %(version)s,
            now() + make_interval(secs => %(ttl)s))
    ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
), forgotten AS (
    DELETE FROM members WHERE expires_at < now() - %(forget)s::interval
), renewed AS (
    UPDATE leases SET expires_at = now() + make_interval(secs => %(ttl)s)
     WHERE owner = %(id)s AND expires_at > now()
       AND (name, epoch) IN (SELECT * FROM unnest(%(names)s::text[], %(epochs)s::int8[]))
    RETURNING name
)
SELECT coalesce(array_agg(name), '{}') FROM renewed
"""

CLAIM = b"""
INSERT INTO leases AS l (name, kind, owner, epoch, expires_at, acquired_at)
SELECT u.name, u.kind, %(id)s, 1, now() + make_interval(secs => %(ttl)s), now()
  FROM unnest(%(names)s::text[], %(kinds)s::text[]) AS u(name, kind)
ON CONFLICT (name) DO UPDATE
   SET owner = EXCLUDED.owner, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at,
       acquired_at = EXCLUDED.acquired_at
 WHERE l.owner IS NULL OR l.expires_at <= now()
RETURNING name, epoch
"""

RELEASE = b"""
WITH released AS (
    UPDATE leases SET owner = NULL, expires_at = '-infinity'
     WHERE owner = %(id)s
       AND (name, epoch) IN (SELECT * FROM unnest(%(names)s::text[], %(epochs)s::int8[]))
    RETURNING name
), told AS (
    SELECT pg_notify(%(channel)s, %(payload)s) FROM released HAVING count(*) > 0
)
SELECT (SELECT count(*) FROM released), (SELECT count(*) FROM told)
"""

_LEAVE = b"""
WITH gone AS (DELETE FROM members WHERE id = %(id)s)
SELECT pg_notify(%(channel)s, %(payload)s)
"""

LEASES = b"""
SELECT l.name, l.kind, l.owner, m.name, m.host, l.epoch,
       CASE WHEN l.owner IS NULL OR NOT isfinite(l.expires_at) THEN 0
            ELSE extract(epoch FROM l.expires_at - now())::float8 END,
       l.acquired_at
  FROM leases AS l LEFT JOIN members AS m ON m.id = l.owner
 ORDER BY l.name
"""

MEMBERS = b"""
SELECT id, name, host, pid, version, started_at,
       extract(epoch FROM expires_at - now())::float8
  FROM members ORDER BY name, started_at
"""


@dataclass(frozen=True)
class LeaseRow:
    name: str
    kind: str
    owner: str | None
    """The owning member's id (``name/token``), whether or not its lease is still live."""
    owner_name: str | None
    owner_host: str | None
    epoch: int
    expires_in: float
    """Seconds until it expires, in the database's clock (<= 0: expired or free)."""
    acquired_at: dt.datetime | None

    @property
    def live(self) -> bool:
        return self.owner is not None and self.expires_in > 0


@dataclass(frozen=True)
class MemberRow:
    id: str
    name: str
    host: str
    pid: int
    version: str
    started_at: dt.datetime
    expires_in: float

    @property
    def live(self) -> bool:
        return self.expires_in > 0


@dataclass(frozen=True)
class Snapshot:
    leases: dict[str, LeaseRow]
    members: list[MemberRow]

    @property
    def live_members(self) -> list[MemberRow]:
        return [member for member in self.members if member.live]


@dataclass(frozen=True)
class Identity:
    id: str
    name: str
    host: str
    pid: int


class LeaseBook:
    """One member's lease statements, on a session of its own (reconnected when broken)."""

    def __init__(self, database: Database, me: Identity) -> None:
        self.database = database
        self.me = me
        self._connection: AsyncConnection | None = None

    async def _db(self) -> AsyncConnection:
        if self._connection is None or self._connection.closed:
            self._connection = await connect_async(self.database, "leases")
        return self._connection

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def renew(self, held: Mapping[str, int]) -> set[str]:
        """The heartbeat and every lease in ``held`` (name: epoch); returns those renewed."""
        db = await self._db()
        cursor = await db.execute(
            _RENEW,
            {
                **self._member_params(),
                "forget": FORGET_MEMBERS_AFTER,
                "names": list(held),
                "epochs": list(held.values()),
            },
        )
        row = await cursor.fetchone()
        return set(row[0]) if row else set()

    async def claim(self, names: list[str]) -> dict[str, int]:
        """Claim what of ``names`` is free or expired; returns the epochs now held."""
        db = await self._db()
        cursor = await db.execute(
            CLAIM,
            {
                "id": self.me.id,
                "ttl": self.database.lease_ttl,
                "names": names,
                "kinds": [lease_kind(name) for name in names],
            },
        )
        return {row[0]: int(row[1]) for row in await cursor.fetchall()}

    async def release(self, held: Mapping[str, int]) -> int:
        db = await self._db()
        cursor = await db.execute(
            RELEASE,
            {
                "id": self.me.id,
                "names": list(held),
                "epochs": list(held.values()),
                "channel": self.database.channel,
                "payload": LEASES_CHANGED,
            },
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def leave(self) -> None:
        """This member is going: its row goes, and the others look again at once."""
        db = await self._db()
        await db.execute(
            _LEAVE,
            {"id": self.me.id, "channel": self.database.channel, "payload": LEASES_CHANGED},
        )

    async def snapshot(self) -> Snapshot:
        db = await self._db()
        return await read_snapshot(db)

    def _member_params(self) -> dict[str, Any]:
        return {
            "id": self.me.id,
            "name": self.me.name,
            "host": self.me.host,
            "pid": self.me.pid,
            "version": __version__,
            "ttl": self.database.lease_ttl,
        }


async def read_snapshot(db: AsyncConnection) -> Snapshot:
    """Every lease and member row, with times relative to the database's clock."""
    leases = {
        row[0]: LeaseRow(row[0], row[1], row[2], row[3], row[4], int(row[5]), row[6], row[7])
        for row in await (await db.execute(LEASES)).fetchall()
    }
    members = [MemberRow(*row) for row in await (await db.execute(MEMBERS)).fetchall()]
    return Snapshot(leases, members)
