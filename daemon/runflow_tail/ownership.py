"""What a daemon can own when several share one PostgreSQL state: a lease per stream, one
per sink, and one for the alert engine (a singleton).

With the embedded SQLite state one daemon owns everything. With PostgreSQL the lease
manager (``postgres.cluster``) decides, and the daemon runs exactly the pollers,
deliveries and alert engine whose leases it holds. The names and the two interfaces
between them live here, below both, so that the service layer never imports the
PostgreSQL package (an optional extra) and the lease manager never imports the daemon.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

ALERTS_LEASE = "alerts"
"""The alert engine's lease: rules are judged by one member at a time."""
KINDS = ("stream", "sink", "alerts")


def stream_lease(stream: str) -> str:
    return f"stream:{stream}"


def sink_lease(sink: str) -> str:
    return f"sink:{sink}"


def lease_kind(lease: str) -> str:
    """``stream``, ``sink`` or ``alerts``."""
    return lease.partition(":")[0]


def lease_target(lease: str) -> str:
    """The stream or sink a lease is for (``alerts`` for the engine's)."""
    kind, _, name = lease.partition(":")
    return name or kind


class Workforce(Protocol):
    """What the lease manager asks of the daemon."""

    async def reconcile(self) -> None:
        """Run the workers of every lease held now, and only those."""

    async def stop_now(self, leases: Collection[str]) -> None:
        """Stop these leases' workers at once: their leases may expire any moment."""

    async def hand_over(self, leases: Collection[str], within: float) -> None:
        """Stop these leases' workers gracefully (a delivery finishes its batch and commits)
        within ``within`` seconds; another member takes them over."""


class Ownership(Protocol):
    """What the daemon asks of the lease manager."""

    @property
    def member(self) -> str:
        """This daemon's member name, as ``runflow-tail cluster`` lists it."""

    def want(self, leases: Collection[str], pins: Mapping[str, str]) -> None:
        """The leases this daemon's configuration has, and the sinks pinned to a member
        or host (lease -> that name)."""

    def holds(self, lease: str) -> bool: ...

    async def run(self, workforce: Workforce) -> None:
        """Claim, renew, balance and give up leases until cancelled."""

    async def release_all(self) -> None:
        """After the workers stopped: hand every lease back, so others take over now."""

    def lost(self, lease: str) -> None:
        """A worker's write was refused: its lease is gone (stop counting it as held)."""

    def problems(self) -> list[str]:
        """What keeps this member from working (readiness)."""

    def describe(self) -> dict[str, Any]:
        """Member name and the leases held, for /readyz and ``status``."""

    def refresh_metrics(self) -> None:
        """Bring the ownership gauges up to date (before a scrape)."""

    async def aclose(self) -> None: ...
