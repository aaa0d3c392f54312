"""The alert engine's rule state, as it is kept in the journal's ``alert_state`` table.

One row per rule and group (``GroupState``: recent matches by entry time, cooldown, open
incident, counts) and one per rule with a pending digest (``DigestState``, under the key
``DIGEST_KEY``). Rows are JSON, so a person can read them with ``sqlite3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from runflow_tail.times import NS_PER_SECOND

DIGEST_KEY = "*digest*"
"""The state row of a rule's pending digest (group keys are JSON lists, never this)."""
FIELDS_KEY = "*fields*"
"""The state row of a rule's missing-fields problem (``alerts.field_watch``), for
``runflow-tail status``; rewritten from each start's own observations."""


class Incident(msgspec.Struct):
    """A fired group that waits for its ``resolve_match``."""

    dedup_key: str
    opened_ns: int
    alert_id: str


class GroupState(msgspec.Struct, kw_only=True):
    group: dict[str, Any] = {}
    stream: str = ""
    matches: list[int] = []
    """Entry timestamps (ns) of the matches counted towards the threshold."""
    lines: list[tuple[int, dict[str, Any]]] = []
    """The first few of those matches, as the alert will quote them."""
    cooldown_until: int | None = None
    suppressed: int = 0
    """Matches since the last alert that fell into the cooldown."""
    total: int = 0
    incident: Incident | None = None

    def count(self, timestamp_ns: int, line: dict[str, Any], *, keep_lines: int) -> None:
        self.matches.append(timestamp_ns)
        if len(self.lines) < keep_lines:
            self.lines.append((timestamp_ns, line))

    def slide(self, window: float | None, threshold: int) -> None:
        """Forget matches that fell out of the window (measured from the newest match)."""
        if window is None or not self.matches:
            return
        cutoff = max(self.matches) - int(window * NS_PER_SECOND)
        self.matches = [m for m in self.matches if m >= cutoff][-threshold:]
        self.lines = [(t, line) for t, line in self.lines if t >= cutoff]

    def idle(self, window: float | None, now_ns: int) -> bool:
        """Nothing left to remember: no incident, cooldown over, no match in the window."""
        if self.incident is not None:
            return False
        if self.cooldown_until is not None and self.cooldown_until > now_ns:
            return False
        if not self.matches:
            return True
        return window is not None and max(self.matches) < now_ns - int(window * NS_PER_SECOND)


class DigestState(msgspec.Struct, kw_only=True):
    since_ns: int
    """Wall-clock time the digest was opened."""
    items: list[dict[str, Any]] = []
    total: int = 0


encode_state = msgspec.json.Encoder().encode
decode_problem = msgspec.json.Decoder(dict[str, str]).decode
decode_group = msgspec.json.Decoder(GroupState).decode
decode_digest = msgspec.json.Decoder(DigestState).decode


class Digests:
    """Each rule's pending digest: opened by its first alert, due ``period`` later by the
    wall clock. A rule whose digest was switched off (or that is gone) is due at once."""

    def __init__(self, periods: Mapping[str, float | None]) -> None:
        self._periods = dict(periods)
        self.pending: dict[str, DigestState] = {}

    def add(self, rule: str, item: dict[str, Any], *, now_ns: int, keep: int) -> None:
        digest = self.pending.get(rule)
        if digest is None:
            digest = self.pending[rule] = DigestState(since_ns=now_ns)
        digest.total += 1
        if len(digest.items) < keep:
            digest.items.append(item)

    def due_ns(self, rule: str, digest: DigestState) -> int:
        period = self._periods.get(rule)
        return digest.since_ns if period is None else digest.since_ns + int(period * NS_PER_SECOND)

    def next_delay(self, now_ns: int) -> float | None:
        """Seconds until the next digest is due (None: none pending)."""
        if not self.pending:
            return None
        due = min(self.due_ns(rule, digest) for rule, digest in self.pending.items())
        return max(0.0, (due - now_ns) / NS_PER_SECOND)

    def take_due(self, now_ns: int) -> list[tuple[str, DigestState]]:
        due = [(r, d) for r, d in self.pending.items() if self.due_ns(r, d) <= now_ns]
        for rule, _digest in due:
            del self.pending[rule]
        return due
