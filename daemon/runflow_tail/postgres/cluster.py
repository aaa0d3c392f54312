"""The lease manager: which streams, sinks and alert engine this daemon works on, when
several daemons share one PostgreSQL state.

Every ``ttl / 3`` a round: renew the heartbeat and every lease held (one statement), read
every lease and member, claim this member's fair share of what is free or expired, and
hand over one lease above the share (balance.py). A lease is valid here until
``sent + ttl - margin``, ``sent`` being when the renewal that succeeded was *sent* (this
process's monotonic clock): the database set ``expires_at = now() + ttl`` no earlier, so
whatever the hosts' clocks say, this daemon is done with a lease before it can expire.

When renewals do not come back (database down, a partition, this process paused), a
watchdog steps down at that deadline without waiting for the database: the lease's fence
is dropped (no write of it is sent any more) and its worker is stopped at once, so a
delivery sends nothing more and a poller commits nothing more. A write that was already
on its way is refused by the database's epoch check if another member claimed the lease.

Failover: a member wakes when a lease it could take expires (a dead owner's heartbeat
expires with it), claims it, and the daemon starts its worker at once: the work moves
within the lease time plus a round trip; a poller then polls right away.

The listener session follows the other members: commits (NOTIFY ``seq N``) wake this
daemon's deliveries; released leases (NOTIFY ``leases``) start a round at once. Every
second without a notification it reads the journal's end anyway (a missed notice, or a
connection pooler that does not pass LISTEN through, costs a second, not an entry).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
from anyio.abc import TaskGroup
from psycopg import sql

from runflow_tail.errors import StateError
from runflow_tail.metrics import Metrics
from runflow_tail.observability import get_logger
from runflow_tail.ownership import Workforce
from runflow_tail.pacing import Backoff
from runflow_tail.postgres import sql as statements
from runflow_tail.postgres.balance import Wanted, plan
from runflow_tail.postgres.connection import Database, connect_async
from runflow_tail.postgres.fences import Fences
from runflow_tail.postgres.journal import PostgresJournal
from runflow_tail.postgres.leases import LEASES_CHANGED, Identity, LeaseBook, LeaseRow, Snapshot

MARGIN = 0.2
"""Of the lease time, kept back: a lease is given up at 80 % of its life after the renewal
was sent (3 s of the default 15 s: clock rate drift, the stopping itself)."""
WAKE_AFTER = 0.05
"""Seconds after a lease's expiry at which a member that wants it looks again."""
FOLLOW_EVERY = 1.0
"""Seconds between reads of the journal's end when no notification came."""

log = get_logger(__name__)


def _live(row: LeaseRow | None) -> bool:
    return row is not None and row.live


@dataclass
class Held:
    epoch: int
    valid_until: float
    """``anyio.current_time()`` after which this lease may already have expired."""


class Cluster:
    """``ownership.Ownership`` for the PostgreSQL backend."""

    def __init__(
        self,
        database: Database,
        journal: PostgresJournal,
        identity: Identity,
        fences: Fences,
        metrics: Metrics,
    ) -> None:
        self.database = database
        self.journal = journal
        self.identity = identity
        self.fences = fences
        self._metrics = metrics
        self._book = LeaseBook(database, identity)
        self.ttl = database.lease_ttl
        self.renew_every = self.ttl / 3
        self._held: dict[str, Held] = {}
        self._releasing: set[str] = set()
        self._cooling: dict[str, float] = {}
        """Leases handed over lately, and until when they are left to the others (while
        the members stay the same: when one leaves, its leases are anyone's)."""
        self._members: frozenset[str] = frozenset()
        self._handed_at: dict[str, float] = {}
        self._free_since: dict[str, float] = {}
        """Leases this member wants that were free (or expired) at each round since then."""
        self._balance_paused_for: frozenset[str] | None = None
        """The live members when a lease handed over came back unclaimed: their
        configurations differ, so handing over would only leave leases idle. Balancing
        resumes when the members change."""
        self._wanted = Wanted(())
        self._poke = anyio.Event()
        self._claimed = anyio.Event()
        self._reconcile = anyio.Event()
        self._closing = False
        self._in_round = anyio.Lock()
        """Held through each round, so that leaving waits for the one in flight (a round
        after leaving would write this member's heartbeat back)."""
        self._failing_since: float | None = None
        self._failure: str | None = None
        self.snapshot: Snapshot | None = None
        self._refused_seen: dict[tuple[str, str], int] = {}
        self._tg: TaskGroup | None = None
        self._workforce: Workforce | None = None

    # -- what the daemon asks ----------------------------------------------------------

    @property
    def member(self) -> str:
        return self.identity.name

    def want(self, leases: Collection[str], pins: Mapping[str, str]) -> None:
        """The leases this daemon's configuration has, and the sinks pinned to a member or
        host (``pins``: lease -> name); the next round acts on it."""
        here = {self.identity.name, self.identity.host, self.identity.host.split(".")[0]}
        pinned = {lease: pin in here for lease, pin in pins.items()}
        self._wanted = Wanted(tuple(leases), pinned)
        self._poke.set()

    def holds(self, lease: str) -> bool:
        return lease in self._held and lease not in self._releasing

    def held(self) -> list[str]:
        return sorted(lease for lease in self._held if lease not in self._releasing)

    def lost(self, lease: str) -> None:
        if self._held.pop(lease, None) is not None:
            self.fences.drop(lease)
            log.warning("cluster.lease_lost", member=self.member, lease=lease)
            self._metrics.lease_changes.labels(lease, "lost").inc()
        self._poke.set()

    def problems(self) -> list[str]:
        found = []
        if self.journal.outage is not None:
            since = anyio.current_time() - (self.journal.outage_since or anyio.current_time())
            found.append(f"state: {self.journal.outage} (for {since:.0f}s; retrying)")
        if self._failure is not None and self._failing_since is not None:
            since = anyio.current_time() - self._failing_since
            found.append(f"leases: cannot renew for {since:.0f}s: {self._failure}")
        return found

    def describe(self) -> dict[str, Any]:
        return {"member": self.member, "member_id": self.identity.id, "leases": self.held()}

    def refresh_metrics(self) -> None:
        metrics = self._metrics
        metrics.lease_held.clear()
        for lease in self.held():
            metrics.lease_held.labels(lease, self.member).set(1)
        if self.snapshot is not None:
            metrics.cluster_members.set(len(self.snapshot.live_members))
        up = self.journal.outage is None and self._failure is None
        metrics.state_up.set(1 if up else 0)
        for key, count in self.fences.refused.items():
            new = count - self._refused_seen.get(key, 0)
            if new:
                metrics.writes_refused.labels(*key).inc(new)
            self._refused_seen[key] = count

    # -- the rounds ---------------------------------------------------------------------

    async def run(self, workforce: Workforce) -> None:
        self._workforce = workforce
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._listen)
            tg.start_soon(self._watchdog)
            tg.start_soon(self._reconciler)
            while True:
                delay = await self._round()
                with anyio.move_on_after(delay):
                    await self._poke.wait()
                self._poke = anyio.Event()

    async def _round(self) -> float:
        """One round; returns the seconds until the next one."""
        try:
            with anyio.fail_after(self.renew_every):
                async with self._in_round:
                    if self._closing:
                        return math.inf
                    wake_in = await self._renew_and_balance()
        except (StateError, psycopg.Error, TimeoutError) as exc:
            self._round_failed(exc)
            return min(1.0, max(0.1, self.ttl / 10))
        if self._failure is not None:
            log.info("cluster.renewing_again", member=self.member)
        self._failure = self._failing_since = None
        if wake_in is not None:
            return min(self.renew_every, max(0.0, wake_in) + WAKE_AFTER)
        return self.renew_every

    async def _renew_and_balance(self) -> float | None:
        sent = anyio.current_time()
        held = {lease: state.epoch for lease, state in self._held.items()}
        renewed = await self._book.renew(held)
        gone = [lease for lease in held if lease not in renewed and lease in self._held]
        for lease in renewed:
            if lease in self._held:
                self._held[lease].valid_until = sent + self.ttl * (1 - MARGIN)
        if gone:
            self._step_down(gone, "the database no longer has this member's lease")
        snapshot = self.snapshot = await self._book.snapshot()
        now = anyio.current_time()
        live = frozenset(member.id for member in snapshot.live_members)
        if live != self._members:
            self._members, self._cooling = live, {}
        self._cooling = {lease: until for lease, until in self._cooling.items() if until > now}
        free = [
            lease
            for lease in self._wanted.leases
            if lease not in self._held and not _live(snapshot.leases.get(lease))
        ]
        self._free_since = {lease: self._free_since.get(lease, now) for lease in free}
        decided = plan(
            me=self.identity.id,
            wanted=self._wanted,
            held=set(self._held),
            rows=snapshot.leases,
            live_members=live,
            cooling=self._cooling,
            balance=self._balance_paused_for != live,
            long_free=[
                lease for lease, since in self._free_since.items() if now - since >= self.ttl
            ],
        )
        unclaimed = [
            lease
            for lease in decided.claim
            if now - self._handed_at.get(lease, -math.inf) < 3 * self.ttl
        ]
        if unclaimed and self._balance_paused_for != live:
            self._balance_paused_for = live
            log.warning(
                "cluster.balance_paused",
                member=self.member,
                leases=unclaimed,
                reason="a lease handed over to the others was claimed by none of them: "
                "their configurations differ; give every member the same configuration "
                "(names and pins aside)",
                action="keeping what this member holds until the members change",
            )
        log.debug(
            "cluster.round",
            member=self.member,
            members=len(snapshot.live_members),
            held=sorted(self._held),
            claim=decided.claim,
            release=decided.release,
        )
        if decided.claim:
            sent = anyio.current_time()
            claimed = await self._book.claim(decided.claim)
            for lease, epoch in claimed.items():
                self._held[lease] = Held(epoch, sent + self.ttl * (1 - MARGIN))
                self.fences.hold(lease, epoch)
                self._metrics.lease_changes.labels(lease, "claimed").inc()
                log.info("cluster.claimed", member=self.member, lease=lease, epoch=epoch)
            if claimed:
                self._claimed.set()
                self._reconcile.set()
        for lease in decided.release:
            if lease not in self._releasing and lease in self._held:
                self._releasing.add(lease)
                assert self._tg is not None
                self._tg.start_soon(self._hand_over, lease)
        return decided.wake_in

    def _round_failed(self, exc: BaseException) -> None:
        text = self.database.scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            text = f"no answer within {self.renew_every:.1f}s"
        if self._failure is None:
            self._failing_since = anyio.current_time()
            log.warning(
                "cluster.renew_failed",
                member=self.member,
                error=text,
                leases=self.held(),
                action="retrying; this member stops its work before its leases can expire",
            )
        self._failure = text

    def _step_down(self, leases: list[str], reason: str) -> None:
        for lease in leases:
            self._held.pop(lease, None)
            self.fences.drop(lease)
            self._metrics.lease_changes.labels(lease, "stepped_down").inc()
        log.warning("cluster.stepped_down", member=self.member, leases=leases, reason=reason)
        assert self._tg is not None and self._workforce is not None
        self._tg.start_soon(self._workforce.stop_now, leases)

    async def _watchdog(self) -> None:
        """Step down from each lease at its deadline, whatever the database is doing."""
        while True:
            now = anyio.current_time()
            due = [lease for lease, state in self._held.items() if state.valid_until <= now]
            if due:
                self._step_down(
                    due, "no renewal came back in time: stopped before the lease can expire"
                )
            deadline = min((state.valid_until for state in self._held.values()), default=math.inf)
            if deadline == math.inf:
                await self._claimed.wait()
                self._claimed = anyio.Event()
            else:
                await anyio.sleep(max(0.0, deadline - anyio.current_time()))

    async def _reconciler(self) -> None:
        """Start the workers of claimed leases (in a task of its own: starting a worker
        may wait for the journal, and renewals must never wait for that)."""
        assert self._workforce is not None
        while True:
            await self._reconcile.wait()
            self._reconcile = anyio.Event()
            await self._workforce.reconcile()

    async def _hand_over(self, lease: str) -> None:
        """Above the fair share: stop the worker gracefully, then release the lease."""
        assert self._workforce is not None
        try:
            log.info("cluster.handing_over", member=self.member, lease=lease)
            await self._workforce.hand_over([lease], self.ttl)
            state = self._held.pop(lease, None)
            self.fences.drop(lease)
            self._cooling[lease] = anyio.current_time() + self.ttl
            self._handed_at[lease] = anyio.current_time()
            if state is not None:
                with anyio.move_on_after(self.renew_every):
                    await self._release({lease: state.epoch})
                self._metrics.lease_changes.labels(lease, "handed_over").inc()
        finally:
            self._releasing.discard(lease)

    async def _release(self, held: Mapping[str, int]) -> None:
        try:
            await self._book.release(held)
        except (StateError, psycopg.Error) as exc:
            log.warning(
                "cluster.release_failed",
                leases=sorted(held),
                error=self.database.scrub(str(exc)),
                consequence="the leases expire on their own; another member takes them then",
            )

    async def release_all(self) -> None:
        """Shutdown, once the workers stopped: give everything back and leave."""
        self._closing = True
        released: list[str] = []
        with anyio.move_on_after(self.renew_every, shield=True):
            await self._in_round.acquire()  # kept: no round after this
            held = {lease: state.epoch for lease, state in self._held.items()}
            for lease in held:
                self.fences.drop(lease)
            self._held.clear()
            if held:
                await self._release(held)
                released = sorted(held)
            try:
                await self._book.leave()
            except (StateError, psycopg.Error) as exc:
                log.warning(
                    "cluster.leave_failed",
                    error=self.database.scrub(str(exc)),
                    consequence="this member's heartbeat expires on its own",
                )
        log.info("cluster.left", member=self.member, released=released)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._book.aclose()

    # -- following the others --------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                connection = await connect_async(self.database, "listener")
                try:
                    await connection.execute(
                        sql.SQL("LISTEN {}").format(sql.Identifier(self.database.channel))
                    )
                    backoff.reset()
                    while True:
                        row = await (await connection.execute(statements.MAX_SEQ)).fetchone()
                        if row is not None:
                            self.journal.announce(int(row[0]))
                        async for notice in connection.notifies(timeout=FOLLOW_EVERY):
                            self._heard(notice.payload)
                finally:
                    with anyio.CancelScope(shield=True):
                        await connection.close()
            except (StateError, psycopg.Error) as exc:
                log.debug("cluster.listener_reconnecting", error=self.database.scrub(str(exc)))
                await anyio.sleep(backoff.next_delay())

    def _heard(self, payload: str) -> None:
        if payload.startswith("seq "):
            self.journal.announce(int(payload[4:]))
        elif payload == LEASES_CHANGED:
            self._poke.set()
