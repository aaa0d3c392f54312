"""The leases this daemon holds, with their epochs: what its writes are fenced with.

The lease manager (event loop) adds a lease when its claim commits and drops it the
moment it is no longer sure to hold it (a renewal that did not come back in time, a
hand-over, shutdown); the store (worker threads) reads the epoch for every fenced write.
A write for a lease not held here is refused before it is sent; one whose epoch the
database no longer knows is refused by ``fence()`` in its own transaction. Both count
(``refused``), both raise ``LeaseLost``.
"""

from __future__ import annotations

import threading
from collections import Counter

from runflow_tail.errors import LeaseLost


class Fences:
    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        """The owner written into lease rows: the member name and a per-process token, so
        two daemons given the same name never pass for each other."""
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        self.refused: Counter[tuple[str, str]] = Counter()
        """(lease, "database" | "local") -> writes refused."""

    def hold(self, lease: str, epoch: int) -> None:
        with self._lock:
            self._held[lease] = epoch

    def drop(self, lease: str) -> None:
        with self._lock:
            self._held.pop(lease, None)

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)

    def epoch(self, lease: str) -> int:
        """The epoch to fence a write with; ``LeaseLost`` when the lease is not held here."""
        with self._lock:
            epoch = self._held.get(lease)
        if epoch is None:
            raise self.refuse(lease, by_database=False)
        return epoch

    def refuse(self, lease: str, *, by_database: bool) -> LeaseLost:
        with self._lock:
            self.refused[(lease, "database" if by_database else "local")] += 1
        why = (
            "the database's epoch check refused it: another member owns the lease now"
            if by_database
            else "this daemon no longer holds the lease"
        )
        return LeaseLost(
            f"write for {lease} not committed: {why}", lease=lease, by_database=by_database
        )
