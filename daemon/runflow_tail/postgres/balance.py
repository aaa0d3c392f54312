"""Who should own what: each member's fair share of the streams and of the sinks.

The Kinesis Client Library's rule, without stealing: with ``M`` live members and ``N``
leases of a kind, each member aims for ``ceil(N / M)`` of that kind. A member below its
share claims leases that are free or expired (and any lease that nobody else claims for a
lease time, whatever the share); one above it hands one over per round
(its worker stops gracefully, then the lease is released for another to claim). And no
member sits idle while another holds two or more: that one hands one over too (two
streams and two sinks over three members: 2/1/1, not 2/2/0). Because every member
computes the same from the same rows, they converge without talking to each other, and
a live lease is never taken from its owner.

Pinned sinks (``pin``) are claimed by the members they name, whatever the share, and
never handed over for balance. The alert engine's lease is one of its kind: whoever
claims it first keeps it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from runflow_tail.ownership import lease_kind
from runflow_tail.postgres.leases import LeaseRow


@dataclass(frozen=True)
class Wanted:
    """The leases this member's configuration has, and which of them are pinned
    (``True``: pinned here; ``False``: pinned elsewhere, never claimed here)."""

    leases: Collection[str]
    pinned: Mapping[str, bool] = field(default_factory=dict)

    def eligible(self, lease: str) -> bool:
        return self.pinned.get(lease, True)


@dataclass(frozen=True)
class Plan:
    claim: list[str]
    release: list[str]
    wake_in: float | None
    """Seconds until a lease this member would claim expires (a dead owner's), if sooner
    than the next round: claiming right then keeps failover within the lease time."""


def plan(
    *,
    me: str,
    wanted: Wanted,
    held: Collection[str],
    rows: Mapping[str, LeaseRow],
    live_members: Collection[str],
    cooling: Collection[str] = (),
    balance: bool = True,
    long_free: Collection[str] = (),
) -> Plan:
    """What ``me`` claims and hands over this round. ``live_members``: the ids of the
    members whose heartbeat is live (``me`` among them); ``cooling``: leases ``me`` handed
    over lately, left for the others to claim (else it could take them straight back);
    ``balance``: whether to hand over for the fair share at all; ``long_free``: leases
    that stayed free for a lease time, which no other member wants: claimed whatever the
    share (the shares assume every member has the same configuration)."""
    claim: list[str] = []
    release = [lease for lease in held if lease not in wanted.leases]
    members = max(1, len(set(live_members) | {me}))
    nothing_free = True
    for kind in ("stream", "sink", "alerts"):
        shared = [
            lease
            for lease in wanted.leases
            if lease_kind(lease) == kind and lease not in wanted.pinned
        ]
        target = math.ceil(len(shared) / members)
        mine = [lease for lease in shared if lease in held]
        free = [
            lease
            for lease in shared
            if lease not in held and lease not in cooling and _claimable(rows.get(lease))
        ]
        # Members try leases in different orders, so those claiming at once rarely collide.
        free.sort(key=lambda lease: _spread(me, lease))
        nothing_free = nothing_free and not free
        if len(mine) < target:
            claim += free[: target - len(mine)]
        elif balance and len(mine) > target and not free:
            # Only when nothing is waiting to be claimed: a member that just joined (or
            # one that came back) takes the free leases first.
            release.append(max(mine, key=lambda lease: _spread(me, lease)))
        claim += [lease for lease in free if lease in long_free and lease not in claim]
    shared_held = [lease for lease in held if lease in wanted.leases and lease not in wanted.pinned]
    if (
        balance
        and not release
        and nothing_free
        and len(shared_held) >= 2
        and _someone_idle(me, rows, live_members)
    ):
        release.append(max(shared_held, key=lambda lease: _spread(me, lease)))
    for lease, here in wanted.pinned.items():
        if here and lease in wanted.leases and lease not in held and _claimable(rows.get(lease)):
            claim.append(lease)
    # A lease that expires before the next round belongs to a member that stopped renewing
    # (its heartbeat expires at the same moment): look again right then.
    waits = [
        row.expires_in
        for lease in wanted.leases
        if lease not in held
        and wanted.eligible(lease)
        and (row := rows.get(lease)) is not None
        and row.live
    ]
    return Plan(claim, release, min(waits) if waits else None)


def _someone_idle(me: str, rows: Mapping[str, LeaseRow], live_members: Collection[str]) -> bool:
    busy = {row.owner for row in rows.values() if row.live}
    return any(member != me and member not in busy for member in live_members)


def _claimable(row: LeaseRow | None) -> bool:
    return row is None or not row.live


def _spread(me: str, lease: str) -> bytes:
    return hashlib.blake2b(f"{me}\n{lease}".encode(), digest_size=8).digest()
