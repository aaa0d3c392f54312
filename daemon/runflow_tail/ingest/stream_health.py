"""What a poller knows about its stream right now, and the stream's query identity."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import anyio

from runflow_tail.config.model import StreamSettings


@dataclass
class StreamHealth:
    """What the poller knows about its stream right now (for status, readiness, metrics)."""

    name: str
    strategy: str | None = None
    last_success_monotonic: float | None = None
    last_success_at: float | None = None
    problem: str | None = None
    blocked: bool = False
    """The problem is one a person must fix (bad key, filter, run): not worth waiting out."""
    started_monotonic: float = field(default_factory=time.monotonic)
    entries_fetched: int = 0
    items_received: int = 0
    """Items the API returned, re-reads included (what polling costs in transfer)."""
    requests: int = 0
    gaps_suspected: int = 0
    stalled: bool = False
    """The API's page cursor stopped advancing; true until a cycle completes again."""
    cursor_stalls: int = 0
    cursor_resets: int = 0
    watermark_ns: int | None = None
    first_poll_done: anyio.Event = field(default_factory=anyio.Event)
    caught_up: anyio.Event = field(default_factory=anyio.Event)
    """Set once a cycle has reached the end of what the API shows."""


def query_fingerprint(stream: StreamSettings) -> str:
    return hashlib.sha256(f"{stream.run_id}\n{stream.query}".encode()).hexdigest()[:16]
