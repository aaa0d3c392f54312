"""The poller: one task per stream, moving entries from the API into the journal.

Two strategies. *Range*: each cycle asks for ``timestamp >= min(newest journaled
timestamp, API time at the last complete read - lookback)`` and walks its pages by
cursor (``walk``) until a short page, or, far behind a slow API, fetches time windows in
parallel (``backfill``); the journal's unique key drops what was seen. *Cursor*, for an
API that refuses ranges on ``timestamp``: keep the cursor that fetched the last page and
poll it again; advance when pages fill; an expired cursor re-walks from the start of the
results, dropping what is older than the watermark, and checks whether the newest entry
we had is still there (a gap check, logged and counted).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import replace

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from runflow_tail.api.client import Page, PageBody, RunflowClient
from runflow_tail.api.range_query import PROBE_FUTURE_NS, RangeForm, with_range
from runflow_tail.api.settings import ApiSettings
from runflow_tail.config.model import StreamSettings
from runflow_tail.errors import (
    ApiConfigurationError,
    ApiCursorRejected,
    ApiCursorStuck,
    RetryableApiError,
)
from runflow_tail.ingest.backfill import (
    PAGES_PER_WINDOW,
    Backfilled,
    backfill,
    windows_supported,
)
from runflow_tail.ingest.probe import ProbeAnswer, probe
from runflow_tail.ingest.run_filter import LocalFilter, verified
from runflow_tail.ingest.stream_health import StreamHealth, query_fingerprint
from runflow_tail.ingest.walk import follow, walk
from runflow_tail.journal import CursorState, Journal
from runflow_tail.metrics import Metrics
from runflow_tail.models import FetchedEntry, RejectedEntry
from runflow_tail.observability import get_logger, redact
from runflow_tail.pacing import Backoff
from runflow_tail.times import NS_PER_SECOND, format_instant, parse_start

PERSIST_HEALTH_EVERY = 30.0
BACKFILL_MIN_ROUND_TRIP = 0.025
PARALLEL_GAIN = 1.5
"""Parallel windows pay only when the rate the API allows is at least this many times what
one request after another achieves (round trip x rate)."""
PARALLEL_STAY = 1.2
"""Once started, parallel windows go on while the gain is at least this."""
BACKFILL_MEMORY = 32 * 1024 * 1024
"""Fetched pages waiting for their commit: bounds memory during a backlog."""
PAGES_PER_COMMIT = 8
COMMIT_BYTES = 4 * 1024 * 1024
"""A group commit stops growing at this many bytes of pages (bounded memory)."""
REJECTED_REMEMBERED = 1024
"""Dead-lettered items already reported (a re-read brings them again)."""

log = get_logger(__name__)


class Poller:
    def __init__(
        self,
        stream: StreamSettings,
        api: ApiSettings,
        client: RunflowClient,
        journal: Journal,
        *,
        fatal_problems: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.configured = stream
        self.stream = stream
        """As polled: without its query when the API cannot apply it (``run_filter``)."""
        self._local: LocalFilter | None = None
        self._fatal_problems = fatal_problems
        self._metrics = metrics or Metrics()
        self.health = StreamHealth(stream.name)
        self._api = api
        self._client = client
        self._journal = journal
        self._backoff = Backoff(api.backoff_initial, api.backoff_max)
        self._stall_backoff = Backoff(api.backoff_initial, api.backoff_max)
        """Apart from ``_backoff``, which every good page resets: a stall shows only after
        good pages, and must still wait longer each time it comes back."""
        self._state = CursorState(fingerprint=query_fingerprint(stream))
        self.range_form: RangeForm = "bare"
        self._strategy: str | None = None
        self._gap_check: tuple[str, int] | None = None
        self._read_through_ns: int | None = None
        self._windows_supported: bool | None = None
        self._round_trip = 0.0
        """Seconds a page request spends on the wire, smoothed: parallel backfill pays only
        when it, not the rate limit or the journal, is what holds a sequential walk back."""
        self._commit_time = 0.0
        """Seconds to commit one page, smoothed."""
        self._persisted_health_at = 0.0
        self._reported_problem: str | None = None
        self._rejected_noted: OrderedDict[str, None] = OrderedDict()

    async def run(self) -> None:
        self.stream, self._local = await verified(self.configured, self._client, self._api)
        self._state = await self._load_state()
        while True:
            started = anyio.current_time()
            try:
                if self._strategy is None:
                    self._strategy = await self._choose_strategy()
                more = await (
                    self._range_cycle() if self._strategy == "range" else self._cursor_cycle()
                )
            except ApiCursorRejected as exc:
                await self._on_cursor_rejected(exc)
                continue
            except ApiCursorStuck as exc:
                if self._fatal_problems:
                    raise
                await self._on_stall(exc)
                continue
            except ApiConfigurationError as exc:
                if self._fatal_problems:
                    raise
                self.health.blocked = True
                await self._on_problem(str(exc))
                await anyio.sleep(self._api.config_error_retry_interval)
                continue
            self._metrics.poll_duration.labels(self.stream.name).observe(
                anyio.current_time() - started
            )
            await self._on_success()
            if not more:
                self.health.caught_up.set()
                await anyio.sleep(
                    max(0.0, self.stream.poll_interval - (anyio.current_time() - started))
                )

    # -- start-up ----------------------------------------------------------------------

    async def _load_state(self) -> CursorState:
        fingerprint = query_fingerprint(self.stream)
        stored = await self._journal.load_cursor(self.stream.name)
        if stored is None:
            start = parse_start(self.stream.start_at, now_ns=time.time_ns())
            state = CursorState(fingerprint=fingerprint, watermark=start, floor=start)
            log.info("stream.starting", stream=self.stream.name, start_at=self.stream.start_at)
        elif stored.fingerprint != fingerprint:
            # The watermark is about time, not about the query: keep it, so a changed
            # filter continues from where the stream was instead of replaying history.
            state = replace(stored, fingerprint=fingerprint, api_cursor=None)
            log.info(
                "stream.query_changed",
                stream=self.stream.name,
                kept_watermark=_show(stored.watermark),
            )
        else:
            state = stored
            log.info(
                "stream.resuming",
                stream=self.stream.name,
                watermark=_show(stored.watermark),
            )
        self.health.watermark_ns = state.watermark
        return state

    async def _choose_strategy(self) -> str:
        if self.stream.strategy != "auto":
            self.health.strategy = self.stream.strategy
            return self.stream.strategy
        if self.stream.query.strip():
            # The user's own filter first: if the API rejects it, that is the problem to
            # report, not a reason to think ranges are unsupported.
            await self.fetch(self.stream.query, None, limit=1)
        chosen, reason = "cursor", "the API rejects range filters on timestamp"
        future = time.time_ns() + PROBE_FUTURE_NS
        for form in ("bare", "quoted"):
            # A day ahead, a window holds nothing: any item means the filter was ignored.
            answer = await self._probe(with_range(self.stream.query, future, form, future + 1))
            if answer == "rejected":
                answer = await self._probe(with_range(self.stream.query, future, form))
                self._windows_supported = False
            elif answer == "honoured":
                self._windows_supported = True
            if answer == "honoured":
                chosen, reason, self.range_form = "range", f"range filters work ({form})", form
                break
            if answer == "ignored":
                reason = "the API ignores range filters on timestamp"
                break
        log.info("stream.strategy_chosen", stream=self.stream.name, strategy=chosen, reason=reason)
        self.health.strategy = chosen
        return chosen

    async def _probe(self, query: str) -> ProbeAnswer:
        return await probe(lambda q: self.fetch(q, None, limit=1), query)

    # -- cycles --------------------------------------------------------------------------

    async def _range_cycle(self) -> bool:
        """Follow pages from the lower bound until a short page; True if more is waiting."""
        start_watermark = self._state.watermark
        lower = self._lower_bound()
        query = (
            self.stream.query
            if lower is None
            else with_range(self.stream.query, lower, self.range_form)
        )
        first = await self.fetch(query, None)
        # The next cycle starts no earlier than this one, or, once this one completes, than
        # the read-through point it sets: retention keeps what may be read again.
        candidates = (lower, self._read_through(first.seen_since_ns))
        protected = [bound for bound in candidates if bound is not None]
        self._journal.note_reread_from(self.stream.name, min(protected, default=None))
        backfilled = await self._backfilled(first, lower, committed=False)
        if backfilled is None:
            last, handed_over = await walk(
                self, query, first, lower, hand_over=self._backfill_would_pay
            )
            if handed_over:
                # From the page the walk stopped at (committed): nothing read twice.
                backfilled = await self._backfilled(last, lower, committed=True)
                if backfilled is None:
                    return True  # it no longer pays: the next cycle walks on at once
        if backfilled is not None and backfilled.finished:
            evaluated = [first.seen_since_ns, backfilled.evaluated_ns]
            if None not in evaluated:
                self._note_read_through(min(e for e in evaluated if e is not None))
            return False
        if backfilled is not None:
            # Parallel windows stopped paying: walk on from where they ended, page by page
            # and by cursor, so that even more than a page of entries at one instant passes.
            query = with_range(self.stream.query, backfilled.frontier_ns, self.range_form)
            resumed = await self.fetch(query, None)
            last, _ = await walk(self, query, resumed, lower)
        self._note_read_through(first.seen_since_ns)
        full_without_next = self.is_full(last) and last.next_cursor is None
        return full_without_next and self._state.watermark != start_watermark

    async def follow(self, query: str, page: Page) -> Page:
        """The page after ``page`` (for backfill windows: see ``walk.follow``)."""
        return await follow(self, query, page)

    async def _cursor_cycle(self) -> bool:
        lower = self._lower_bound()
        self._journal.note_reread_from(self.stream.name, lower)
        cursor = self._state.api_cursor
        page = await self.fetch(self.stream.query, cursor)
        while True:
            await self._commit([page], lower, cursor)
            if not self.is_full(page) or page.next_cursor is None:
                if self._gap_check is not None:
                    self._finish_gap_check(found=False)
                return False
            cursor = page.next_cursor
            self._state = replace(self._state, api_cursor=cursor)
            page = await follow(self, self.stream.query, page)

    async def _backfilled(
        self, first: Page, lower: int | None, *, committed: bool
    ) -> Backfilled | None:
        """Far behind a slow API: fetch the rest of the backlog after ``first`` (committed
        here unless it already is) in parallel windows (backfill.py). None: go on
        sequentially from ``first``."""
        stream = self.stream
        if not self._backfill_would_pay(first):
            return None
        if self._windows_supported is None:
            self._windows_supported = await windows_supported(self)
            if not self._windows_supported:
                log.info(
                    "stream.backfill_unavailable",
                    stream=stream.name,
                    reason="the API ignores or rejects an upper bound on timestamp",
                )
                return None
        if not committed:
            await self._commit([first], lower, None)
        # Bounded memory: every open window may hold a few pages of this size.
        per_window = (PAGES_PER_WINDOW + 1) * max(1, first.body_bytes)
        parallelism = max(1, min(stream.backfill_parallelism, BACKFILL_MEMORY // per_window))
        return await backfill(self, first, lower, time.time_ns(), parallelism)

    def _backfill_would_pay(self, page: Page) -> bool:
        """Whether this stream is far enough behind, and the API slow enough, for parallel
        windows (and whether the API takes them, as far as is known)."""
        stream = self.stream
        if stream.backfill_parallelism < 2 or self._windows_supported is False:
            return False
        if not self.is_full(page) or page.next_cursor is None or not page.entries:
            return False
        behind = time.time_ns() - page.entries[-1].timestamp_ns
        if behind <= int(stream.backfill_after * NS_PER_SECOND):
            return False
        round_trip = self._round_trip
        if round_trip < max(BACKFILL_MIN_ROUND_TRIP, 2 * self._commit_time):
            return False
        return round_trip * self._client.limiter.rate >= PARALLEL_GAIN

    def parallel_pays(self) -> bool:
        """Whether requests in parallel still fetch faster than one after another: the round
        trip, not the rate the API allows, holds a sequential walk back, and committing
        keeps up (a fast API on a slow disk gains nothing from more requests). Looser than
        the test for starting (hysteresis), so one slow commit does not flip the mode."""
        round_trip = self._round_trip
        if round_trip < self._commit_time:
            return False
        return round_trip * self._client.limiter.rate >= PARALLEL_STAY

    def _note_read_through(self, first_evaluated: int | None) -> None:
        # Everything visible when this cycle began has been read, so an entry we have not
        # seen became visible later, and (with lookback covering visibility delays) has a
        # timestamp after this bound: the next cycle need not re-read older ones.
        bound = self._read_through(first_evaluated)
        if bound is not None:
            self._read_through_ns = bound

    def _read_through(self, first_evaluated: int | None) -> int | None:
        if first_evaluated is None:
            return None
        return first_evaluated - int(self.stream.lookback * NS_PER_SECOND)

    def _lower_bound(self) -> int | None:
        """Where a cycle starts reading: ``min(watermark, read-through point)``, never
        before the stream's start.

        The read-through point (the API's clock when the last full cycle began, less
        lookback) covers entries that became visible late but within lookback; the
        watermark (the newest timestamp journaled) covers every entry at or after it,
        however late it becomes visible. Without a server clock, watermark - lookback.
        Re-reads are dropped by the journal.
        """
        state = self._state
        lookback_ns = int(self.stream.lookback * NS_PER_SECOND)
        if state.watermark is None:
            bound = self._read_through_ns
        elif self._read_through_ns is None:
            bound = state.watermark - lookback_ns
        else:
            bound = min(state.watermark, self._read_through_ns)
        if bound is None or state.floor is None:
            return state.floor if bound is None else bound
        return max(state.floor, bound)

    def is_full(self, page: Page) -> bool:
        return page.item_count >= self.stream.page_size

    async def fetch(self, query: str, cursor: str | None, *, limit: int | None = None) -> Page:
        """One page; transient failures retry the same request (same cursor) after a backoff,
        so a flaky API slows a backlog down but never sends it back to the watermark."""
        return (await self.fetch_body(query, cursor, limit=limit)).parse()

    async def fetch_body(
        self, query: str, cursor: str | None, *, limit: int | None = None
    ) -> PageBody:
        """``fetch`` up to the page's items and cursor (the entries are read by ``parse``)."""
        while True:
            await self._journal.wait_for_space()
            self.health.requests += 1
            try:
                split = await self._client.fetch_page_body(
                    self.stream.run_id,
                    query=query,
                    fields=self.stream.fields,
                    limit=limit or self.stream.page_size,
                    cursor=cursor,
                )
            except RetryableApiError as exc:
                delay = self._backoff.next_delay(exc.retry_after)
                log.warning(
                    "stream.poll_failed",
                    stream=self.stream.name,
                    api=self._api.shown_url,
                    error=str(exc),
                    # The request waits for whichever is later: this backoff or a pause
                    # the API imposed on every request (a 429 without Retry-After: 1 s).
                    retry_in=round(max(delay, self._client.limiter.paused_for()), 2),
                    attempt=self._backoff.attempts,
                )
                await self._mark_failing(str(exc))
                await anyio.sleep(delay)
                continue
            self._backoff.reset()
            self._round_trip = _smoothed(self._round_trip, self._client.last_round_trip)
            self.health.items_received += split.item_count
            # A long backlog is one long cycle: every good page counts as a good poll.
            self.health.last_success_monotonic = anyio.current_time()
            return split

    async def commit_pages(
        self, receive: MemoryObjectReceiveStream[Page], lower: int | None
    ) -> None:
        async with receive:
            async for page in receive:
                group = [page]
                size = page.body_bytes
                while len(group) < PAGES_PER_COMMIT and size < COMMIT_BYTES:
                    try:
                        group.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                    size += group[-1].body_bytes
                await self._commit(group, lower, None)

    async def _commit(self, pages: list[Page], lower: int | None, api_cursor: str | None) -> None:
        """Journal the pages' new entries and the advanced cursor in one transaction."""
        kept = [
            entry
            for page in pages
            for entry in page.entries
            if lower is None or entry.timestamp_ns >= lower
        ]
        if self._gap_check is not None:
            self._check_gap([entry for page in pages for entry in page.entries])
        state = self._state.advanced(kept)
        state = replace(state, api_cursor=api_cursor, strategy=self._strategy)
        if self._local is not None:
            kept = self._local.keep(kept)  # after the cursor moved past all of them
        rejected = [item for page in pages for item in page.rejected]
        if kept or rejected or state != self._state:
            started = time.monotonic()
            inserted = await self._journal.append(self.stream.name, kept, state, rejected)
            self._note_rejected(rejected)
            took = (time.monotonic() - started) / max(1, len(pages))
            self._commit_time = (
                took if not self._commit_time else 0.8 * self._commit_time + 0.2 * took
            )
            self.health.entries_fetched += inserted
            self._metrics.entries_fetched.labels(self.stream.name).inc(inserted)
            self._persisted_health_at = time.monotonic()
        # Health noted while the commit ran (a prefetch retrying) stays.
        self._state = replace(
            state,
            health_error=self._state.health_error,
            last_success_at=self._state.last_success_at,
        )
        self.health.watermark_ns = state.watermark

    # -- trouble -------------------------------------------------------------------------

    def _note_rejected(self, rejected: list[RejectedEntry]) -> None:
        """Say once per item (it comes back with every re-read) that it was dead-lettered."""
        for item in rejected:
            if item.id in self._rejected_noted:
                continue
            self._rejected_noted[item.id] = None
            if len(self._rejected_noted) > REJECTED_REMEMBERED:
                self._rejected_noted.popitem(last=False)
            self._metrics.entries_rejected.labels(self.stream.name).inc()
            log.warning(
                "stream.entry_dead_lettered",
                stream=self.stream.name,
                id=item.id,
                reason=item.reason,
                item=item.raw[:200].decode("utf-8", "replace"),
                action="kept as a dead letter of each sink of the stream (runflow-tail "
                "replay --sink NAME --dead-letters); polling goes on",
            )

    async def _on_cursor_rejected(self, exc: ApiCursorRejected) -> None:
        self.health.cursor_resets += 1
        log.warning(
            "stream.cursor_rejected",
            stream=self.stream.name,
            error=str(exc),
            action="seeking again from the watermark",
            watermark=_show(self._state.watermark),
        )
        if self._strategy == "cursor" and self._state.last_id and self._state.watermark:
            self._gap_check = (self._state.last_id, self._state.watermark)
        self._state = replace(self._state, api_cursor=None)
        await self._journal.save_cursor(self.stream.name, self._state)

    async def _on_stall(self, exc: ApiCursorStuck) -> None:
        """Stop following a cursor that does not advance: say so (once per stall), show the
        stream unhealthy, and after a backoff poll again from the watermark."""
        self.health.cursor_stalls += 1
        self._metrics.cursor_stalls.labels(self.stream.name).inc()
        if not self.health.stalled:
            log.warning(
                "stream.cursor_stalled",
                stream=self.stream.name,
                cursor=exc.cursor,
                watermark=_show(self._state.watermark),
                action="polling again from the watermark after a backoff",
            )
        self.health.stalled = True
        await self._mark_failing(str(exc))
        if self._strategy == "cursor" and self._state.last_id and self._state.watermark:
            self._gap_check = (self._state.last_id, self._state.watermark)
        self._state = replace(self._state, api_cursor=None)
        await anyio.sleep(self._stall_backoff.next_delay())

    def _check_gap(self, entries: list[FetchedEntry]) -> None:
        assert self._gap_check is not None
        last_id, watermark = self._gap_check
        for entry in entries:
            if entry.id == last_id:
                self._finish_gap_check(found=True)
                return
            if entry.timestamp_ns > watermark:
                self._finish_gap_check(found=False)
                return

    def _finish_gap_check(self, *, found: bool) -> None:
        if found:
            log.info("stream.reseek_complete", stream=self.stream.name, gap=False)
        else:
            self.health.gaps_suspected += 1
            self._metrics.gaps.labels(self.stream.name).inc()
            log.warning(
                "stream.gap_suspected",
                stream=self.stream.name,
                reason="after the cursor expired, the newest entry we had was not found again; "
                "entries between it and the next one seen may be missing",
                watermark=_show(self._gap_check[1] if self._gap_check else None),
            )
        self._gap_check = None

    async def _on_problem(self, problem: str) -> None:
        if problem != self._reported_problem:
            log.error(
                "stream.configuration_problem",
                stream=self.stream.name,
                api=self._api.shown_url,
                problem=problem,
                retry_in=self._api.config_error_retry_interval,
            )
            self._reported_problem = problem
        await self._mark_failing(problem)

    async def _mark_failing(self, problem: str) -> None:
        problem = redact(problem)  # persisted for status, shown by /readyz
        changed = self.health.problem != problem
        self.health.problem = problem
        if changed:
            self._state = replace(self._state, health_error=problem)
            # Health only: a page may be committing meanwhile (a prefetch retrying), and
            # this state's watermark may already be older than the one it writes.
            await self._journal.save_health(self.stream.name, self._state)

    async def _on_success(self) -> None:
        self._backoff.reset()
        self._stall_backoff.reset()
        now = time.time()
        self.health.last_success_monotonic = anyio.current_time()
        self.health.last_success_at = now
        self._metrics.last_success.labels(self.stream.name).set(now)
        recovered = self.health.problem is not None
        if recovered:
            log.info("stream.recovered", stream=self.stream.name)
            self.health.problem = None
            self.health.blocked = False
            self.health.stalled = False
            self._reported_problem = None
        if recovered or time.monotonic() - self._persisted_health_at > PERSIST_HEALTH_EVERY:
            self._state = replace(self._state, health_error=None, last_success_at=now)
            await self._journal.save_cursor(self.stream.name, self._state)
            self._persisted_health_at = time.monotonic()
        self.health.first_poll_done.set()


def _smoothed(average: float, sample: float) -> float:
    """An exponentially weighted average that starts at its first sample."""
    return sample if not average else 0.8 * average + 0.2 * sample


def _show(ns: int | None) -> str | None:
    return None if ns is None else format_instant(ns)
