"""The sandbox's state: options, the entry store, runs, scripted faults, stats and a clock.

Everything here runs on the server's event loop (control requests arrive over HTTP), so
no locking is needed. ``clock`` is injectable: tests that need time to pass (late
visibility, cursor expiry) replace it instead of sleeping.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from runflow_tail.sandbox.options import SandboxOptions, ScriptedFault
from runflow_tail.sandbox.runs import (
    Flow,
    IdFactory,
    Run,
    TimestampWriter,
    make_flows,
    new_run,
    stub_run,
)
from runflow_tail.sandbox.store import Entry, EntryStore, make_entry
from runflow_tail.times import NS_PER_SECOND, parse_instant

RECENT_QUERIES_KEPT = 100
_BASE_KEYS = ("id", "run_id", "level_code", "message", "timestamp", "meta")


class EntryError(ValueError):
    """An appended entry the sandbox cannot store (bad timestamp, duplicate id)."""


@dataclass(slots=True)
class Stats:
    requests_total: int = 0
    logs_requests: int = 0
    requests_before_retry_after: int = 0
    """Requests that arrived before a Retry-After deadline the API had given (refused)."""
    in_flight: int = 0
    max_in_flight: int = 0
    """The most API requests the sandbox was answering at once."""
    by_status: Counter[str] = field(default_factory=Counter)
    recent_logs_queries: deque[dict[str, str]] = field(
        default_factory=lambda: deque(maxlen=RECENT_QUERIES_KEPT)
    )


@dataclass(slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float


class World:
    """The simulated Runflow organisation behind the API."""

    def __init__(
        self, options: SandboxOptions | None = None, *, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.options = options or SandboxOptions()
        self.clock = clock
        self.store = EntryStore()
        self.runs: dict[str, Run] = {}
        self.faults: deque[ScriptedFault] = deque()
        self.stats = Stats()
        self.runs_playing = 0
        """Simulated runs still being played live (their entries are not all written)."""
        self.rng = random.Random(self.options.world_seed)
        self.ids = IdFactory(self.rng)
        self.timestamps = TimestampWriter(self.rng)
        self.flows: list[Flow] = make_flows(self.rng, self.ids)
        self._fault_rng = random.Random(self.options.fault_seed)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._retry_windows: dict[str, tuple[float, float]] = {}
        """Per API key: when the API last told the client to wait, and until when
        (monotonic)."""

    def now(self) -> int:
        return self.clock()

    # -- options ----------------------------------------------------------------------------

    def update_options(self, changes: dict[str, Any]) -> SandboxOptions:
        """Apply a partial update; a pydantic.ValidationError leaves the options unchanged."""
        updated = self.options.updated(changes)
        if updated.fault_seed != self.options.fault_seed:
            self._fault_rng = random.Random(updated.fault_seed)
        if updated.rate_limit_per_second != self.options.rate_limit_per_second:
            self._buckets.clear()
        self.options = updated
        return updated

    # -- runs and entries -------------------------------------------------------------------

    def start_run(self, *, run_id: str | None = None, flow: Flow | None = None) -> Run:
        run = new_run(
            rng=self.rng,
            ids=self.ids,
            flow=flow or self.rng.choice(self.flows),
            options=self.options,
            created_ns=self.now(),
            run_id=run_id,
        )
        self.runs[run.id] = run
        return run

    def run_for(self, run_id: str | None, *, full: bool = True) -> Run:
        """The run an appended entry belongs to: an existing one, or a new one."""
        if run_id is not None and run_id in self.runs:
            return self.runs[run_id]
        if full:
            run = self.start_run(run_id=run_id)
            run.update(status_code="running", started_at=run.doc["created_at"])
            return run
        run = stub_run(run_id or self.ids.uuid7(self.now()), self.options, self.now())
        self.runs[run.id] = run
        return run

    def visible_at(self, ts_ns: int, *, visible_after: float = 0.0) -> int:
        now = self.now()
        late = ts_ns + int(self.options.late_delay * NS_PER_SECOND)
        return max(late, now + int(visible_after * NS_PER_SECOND)) if visible_after else late

    def write(
        self,
        run: Run,
        level_code: str,
        message: str,
        meta: dict[str, Any],
        *,
        ts_ns: int | None = None,
    ) -> Entry:
        """Write one entry of ``run`` now (or at ``ts_ns``) carrying its current snapshot.

        A run's lines sort after each other as they were logged: readers order by the
        written timestamp, then by random id, so a spelling that drops digits ('mixed')
        must not put a line at or before the run's previous one."""
        ns = self.now() if ts_ns is None else ts_ns
        style = self.options.timestamp_style
        text, exact = self.timestamps.write(ns, style)
        if exact <= run.logged_ns:
            text, exact = self.timestamps.write(max(ns, run.logged_ns + 1), style, exact=True)
        run.logged_ns = exact
        document = {
            "id": self.ids.uuid4(),
            "run_id": run.id,
            "level_code": level_code,
            "message": message,
            "timestamp": text,
            "meta": meta,
        }
        entry = make_entry(
            document,
            ts_ns=exact,
            visible_at=self.visible_at(exact),
            run_doc=run.doc,
            run_raw=run.raw,
        )
        self.store.add(entry)
        return entry

    def append(self, partials: list[dict[str, Any]], *, visible_after: float = 0.0) -> list[Entry]:
        """Store entries given partially; missing fields are filled in like the world would."""
        default_run: Run | None = None
        batch: list[Entry] = []
        now = self.now()
        for partial in partials:
            run_id = partial.get("run_id")
            if run_id is None:
                default_run = default_run or self.run_for(None)
                run = default_run
            else:
                run = self.run_for(str(run_id))
            stamp = partial.get("timestamp")
            if stamp is None:
                text, exact = self.timestamps.write(now, self.options.timestamp_style)
            else:
                try:
                    text, exact = str(stamp), parse_instant(str(stamp), date_only_ok=False)
                except ValueError as exc:
                    raise EntryError(f"entry timestamp: {exc}") from exc
            document: dict[str, Any] = {
                "id": str(partial.get("id") or self.ids.uuid4()),
                "run_id": run.id,
                "level_code": partial.get("level_code", "info"),
                "message": partial.get("message", "sandbox entry"),
                "timestamp": text,
                "meta": partial.get("meta", {}),
            }
            document.update((k, v) for k, v in partial.items() if k not in _BASE_KEYS)
            run_doc = document.pop("run", run.doc)
            run_raw = run.raw if run_doc is run.doc else msgspec.json.encode(run_doc)
            visible = self.visible_at(exact, visible_after=visible_after)
            batch.append(
                make_entry(
                    document, ts_ns=exact, visible_at=visible, run_doc=run_doc, run_raw=run_raw
                )
            )
        self._add_batch(batch)
        return batch

    def generate(
        self,
        count: int,
        *,
        timestamp_ns: int | None = None,
        step_ms: float = 0.0,
        run_id: str | None = None,
        level_code: str = "info",
        message: str = "entry {i}",
        visible_after: float = 0.0,
        full_run: bool = True,
    ) -> list[Entry]:
        """Generate ``count`` entries of one run; step_ms=0 gives them one identical timestamp.

        ``timestamp_ns`` is the first entry's instant; without it the last one is now.
        """
        run = self.run_for(run_id, full=full_run)
        step_ns = int(step_ms * 1_000_000)
        # Without a start, the entries end now: all of them are in the past, hence visible.
        base = self.now() - step_ns * max(0, count - 1) if timestamp_ns is None else timestamp_ns
        style = self.options.timestamp_style
        uuid4, write = self.ids.uuid4, self.timestamps.write
        run_doc, run_raw, run_key = run.doc, run.raw, run.id
        templated = "{i}" in message
        last_ns, text, exact = -1, "", 0
        late_ns = int(self.options.late_delay * NS_PER_SECOND)
        floor_ns = self.now() + int(visible_after * NS_PER_SECOND) if visible_after else 0
        batch: list[Entry] = []
        for index in range(count):
            ns = base + index * step_ns
            if ns != last_ns:
                # A burst shares one written timestamp, even in the 'mixed' style.
                last_ns = ns
                text, exact = write(ns, style)
            document = {
                "id": uuid4(),
                "run_id": run_key,
                "level_code": level_code,
                "message": message.replace("{i}", str(index)) if templated else message,
                "timestamp": text,
                "meta": {"i": index},
            }
            batch.append(
                make_entry(
                    document,
                    ts_ns=exact,
                    visible_at=max(exact + late_ns, floor_ns),
                    run_doc=run_doc,
                    run_raw=run_raw,
                )
            )
        self._add_batch(batch)
        return batch

    def _add_batch(self, batch: list[Entry]) -> None:
        try:
            self.store.add_many(batch)
        except KeyError as exc:
            raise EntryError(f"an entry with id {exc.args[0]} already exists") from exc

    def visible_run_entries(self, run_id: str, cap: int) -> list[Entry]:
        now = self.now()
        entries = [e for e in self.store.by_run.get(run_id, ()) if e.visible_at <= now]
        entries.sort(key=lambda entry: entry.key)
        return entries[:cap]

    # -- faults and limits --------------------------------------------------------------------

    def next_fault(self) -> ScriptedFault | None:
        """The fault for this /logs request: the scripted queue first, then every Nth 429,
        then the random rates."""
        if self.faults:
            return self.faults.popleft()
        options = self.options
        every = options.fault_429_every
        if every is not None and self.stats.logs_requests % every == 0:
            return ScriptedFault(status=429, retry_after=options.retry_after)
        total = (
            options.fault_429_rate
            + options.fault_5xx_rate
            + options.fault_malformed_rate
            + options.fault_drop_rate
        )
        if total <= 0:
            return None
        draw = self._fault_rng.random()
        if draw < options.fault_429_rate:
            retry = options.retry_after
            return ScriptedFault(status=429, retry_after=retry)
        draw -= options.fault_429_rate
        if draw < options.fault_5xx_rate:
            return ScriptedFault(status=self._fault_rng.choice(options.fault_5xx_statuses))
        draw -= options.fault_5xx_rate
        if draw < options.fault_malformed_rate:
            return ScriptedFault(kind="malformed")
        draw -= options.fault_malformed_rate
        if draw < options.fault_drop_rate:
            return ScriptedFault(kind="drop")
        return None

    def retry_after_remaining(self, api_key: str, arrived: float) -> float:
        """Seconds left of a Retry-After given to ``api_key`` before a request that arrived
        at ``arrived`` (monotonic); 0 when it came before that answer was given (or so soon
        after that it crossed it on the way) or after its end."""
        issued, deadline = self._retry_windows.get(api_key, (0.0, 0.0))
        if not issued + self.options.retry_after_crossing <= arrived < deadline:
            return 0.0
        return max(0.001, deadline - time.monotonic())

    def note_retry_after(self, api_key: str, seconds: float) -> None:
        """The API just told ``api_key`` to wait ``seconds``; the deadline only moves later."""
        now = time.monotonic()
        issued, deadline = self._retry_windows.get(api_key, (now, 0.0))
        if deadline <= now:
            issued = now
        self._retry_windows[api_key] = (issued, max(deadline, now + seconds))

    def take_request(self, api_key: str) -> RateDecision:
        """Token bucket per key in real (monotonic) time: rate limits are about real load."""
        rate = self.options.rate_limit_per_second
        if rate is None:
            return RateDecision(True, 0, 0, 0.0)
        capacity = max(1.0, rate)
        now = time.monotonic()
        tokens, last = self._buckets.get(api_key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[api_key] = (tokens, now)
        reset = max(0.0, (1.0 - tokens) / rate)
        return RateDecision(allowed, int(capacity), int(tokens), reset)

    # -- stats ------------------------------------------------------------------------------

    def stats_document(self) -> dict[str, Any]:
        return {
            "requests_total": self.stats.requests_total,
            "logs_requests": self.stats.logs_requests,
            "requests_before_retry_after": self.stats.requests_before_retry_after,
            "max_in_flight": self.stats.max_in_flight,
            "by_status": dict(self.stats.by_status),
            "entries_total": len(self.store),
            "entries_visible": self.store.visible_count(self.now()),
            "runs_total": len(self.runs),
            "runs_playing": self.runs_playing,
            "faults_pending": len(self.faults),
            "recent_logs_queries": list(self.stats.recent_logs_queries),
        }

    def reset_stats(self) -> None:
        self.stats = Stats()
