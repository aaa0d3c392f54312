"""Run context for alerts: ``GET /v1/runs/{id}`` when entries were fetched without ``run``.

Streams usually project entries without the multi-KB ``run``; a rule that matches or
groups on ``run.*``, and every alert's context, then needs the run itself. Requests go
through the daemon's API client, so they share its rate limiter (and its 429 pauses)
with the pollers.

Caching is bounded and never stale where it matters: a run whose outcome is terminal
(succeeded, failed, canceled, partial_succeeded; see ``run_object``) never changes again,
so those are kept in an LRU; a run still in progress may change at any moment, so a copy
of it is only reused within the engine batch it was fetched for. Every entry of that
batch was journaled before the fetch, so the copy is at least as new as each of them: a
failure is never judged against an older "running" copy. The other way round, ``as_of``
keeps a line logged while the run was still going from seeing the failure that came
later (by ``completed_at``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import anyio

from runflow_tail.api.client import RunflowClient
from runflow_tail.errors import ApiConfigurationError, ApiError
from runflow_tail.observability import get_logger
from runflow_tail.pacing import Backoff
from runflow_tail.run_object import FAILURE_STAGE_KEYS, end_ns, outcome
from runflow_tail.times import NS_PER_SECOND

DEFAULT_CAPACITY = 1024
CONTEXT_ATTEMPTS = 3
"""Tries for a run wanted only as context: after these the alert goes out without it."""

_RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")
log = get_logger(__name__)


class RunContext:
    def __init__(
        self,
        client: RunflowClient | None,
        *,
        capacity: int = DEFAULT_CAPACITY,
        backoff_initial: float = 1.0,
        backoff_max: float = 32.0,
    ) -> None:
        self._client = client
        self._capacity = capacity
        self._terminal: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._batch: dict[str, dict[str, Any] | None] = {}
        self._backoff = (backoff_initial, backoff_max)
        self.fetches = 0
        self.problem: str | None = None
        """The last failure to fetch a run, until a fetch succeeds again."""

    def new_batch(self) -> None:
        """Forget copies of runs in progress: the next batch may hold newer entries."""
        self._batch.clear()

    async def get(self, run_id: Any, *, required: bool) -> dict[str, Any] | None:
        """The run, or None when there is none to fetch (no client, bad id, 404...).

        ``required``: matching depends on it, so transient API failures are retried until
        they pass (like the pollers do); otherwise it is context only, tried a few times.
        """
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            return None
        if run_id in self._terminal:
            self._terminal.move_to_end(run_id)
            return self._terminal[run_id]
        if run_id in self._batch:
            return self._batch[run_id]
        if self._client is None:
            return None
        run = await self._fetch(self._client, run_id, required=required)
        if run is not None and outcome(run) != "running":
            self._terminal[run_id] = run
            while len(self._terminal) > self._capacity:
                self._terminal.popitem(last=False)
        else:
            self._batch[run_id] = run
        return run

    async def _fetch(
        self, client: RunflowClient, run_id: str, *, required: bool
    ) -> dict[str, Any] | None:
        backoff = Backoff(*self._backoff)
        while True:
            self.fetches += 1
            try:
                document = await client.get_json(
                    f"/v1/runs/{run_id}", what=f"fetching run {run_id}"
                )
            except ApiConfigurationError as exc:
                # 404 (gone, another organization's), 403 (scope): asking again will not help.
                self._note_problem(run_id, exc)
                return None
            except ApiError as exc:
                self._note_problem(run_id, exc)
                if not required and backoff.attempts + 1 >= CONTEXT_ATTEMPTS:
                    return None
                await anyio.sleep(backoff.next_delay(exc.retry_after))
                continue
            if not isinstance(document, dict):
                return None
            self.problem = None
            # The run's own `logs` are not context we quote; dropping them bounds the cache.
            document.pop("logs", None)
            return document

    def _note_problem(self, run_id: str, exc: ApiError) -> None:
        self.problem = str(exc)
        log.warning("alerts.run_fetch_failed", run_id=run_id, error=str(exc), status=exc.status)


_FRACTION = re.compile(r"T[0-9:]+(?:[.,]([0-9]+))?")
_FIELDS_SET_AT_THE_END = ("completed_at", "duration_ms", "failure_code", "failure_message")


def as_of(run: Mapping[str, Any], timestamp: Any, timestamp_ns: int) -> Mapping[str, Any]:
    """The ``run`` as a line logged at ``timestamp`` would have carried it.

    A fetched run (and, as far as the API documents, an embedded one) describes the run
    now; a line logged before the run ended carried it still in progress. So for a line
    that certainly precedes ``completed_at`` (at the precision its timestamp is written
    with: a line stamped ``...:35Z`` may be anywhere in that second) the end, the duration,
    the failure and any ``status_code`` are taken back, which makes its outcome
    ``running`` in either schema version. Lines logged at or after the end, and runs not
    yet ended, see the run as it is.
    """
    if outcome(run) == "running":
        return run
    ended_ns = end_ns(run)
    if ended_ns is None or timestamp_ns + _resolution_ns(timestamp) > ended_ns:
        return run
    earlier = dict(run)
    for key in (*_FIELDS_SET_AT_THE_END, *FAILURE_STAGE_KEYS):
        if key in earlier:
            earlier[key] = None
    if "status_code" in earlier:
        earlier["status_code"] = "running"
    return earlier


def _resolution_ns(timestamp: Any) -> int:
    """How far the true instant may lie after what ``timestamp`` says (it is truncated)."""
    match = _FRACTION.search(timestamp) if isinstance(timestamp, str) else None
    if match is None:
        return NS_PER_SECOND
    digits = min(len(match.group(1) or ""), 9)
    return int(10 ** (9 - digits))
