"""Parallel time-sliced backfill: catching up fast when a stream is far behind.

A sequential drain waits one API round trip per page; against an API with real latency,
that, not bandwidth, is the limit. When a stream's lower bound is more than
``backfill_after`` behind, the time from there to now is cut into consecutive windows
(``timestamp>=a AND timestamp<b``, the last one open-ended), sized from the density of what
was just read so that each holds about one page, and up to ``backfill_parallelism`` of
them (fewer when pages are large: the poller keeps the buffers within a memory budget) are
fetched at once (each following its own page cursor). The shared rate limiter
still spaces every request.

Windows are committed strictly in order (window k's entries all precede window k+1's by
timestamp), so the journal sees the same order as a sequential drain, and the watermark
only moves over committed data: a crash loses nothing. Memory is bounded: at most
``parallelism`` windows are open, each buffering at most ``PAGES_PER_WINDOW`` pages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runflow_tail.api.client import Page
from runflow_tail.api.range_query import PROBE_FUTURE_NS, RangeForm, with_range
from runflow_tail.config.model import StreamSettings
from runflow_tail.ingest.probe import probe
from runflow_tail.observability import get_logger
from runflow_tail.times import NS_PER_SECOND

PAGES_PER_WINDOW = 2
FILL = 85
"""Percent of a page a window is sized to hold."""
MIN_WINDOW_NS = 1_000  # format_instant writes microseconds: no narrower window exists

log = get_logger(__name__)


class WindowSource(Protocol):
    """What backfill needs from a stream's poller: its requests (with their retries and
    pacing) and its commits (with their cursor bookkeeping)."""

    @property
    def stream(self) -> StreamSettings: ...

    @property
    def range_form(self) -> RangeForm: ...

    async def fetch(self, query: str, cursor: str | None, *, limit: int | None = None) -> Page:
        """One page; transient failures are retried inside."""
        ...

    def is_full(self, page: Page) -> bool: ...

    async def commit_pages(
        self, receive: MemoryObjectReceiveStream[Page], lower: int | None
    ) -> None:
        """Journal every page ``receive`` yields, in order, dropping entries before ``lower``."""
        ...


@dataclass
class _Window:
    start: int
    end: int | None
    pages: MemoryObjectReceiveStream[Page]
    items: int = 0


class _Windows:
    """Hands out consecutive windows, each about one page wide at the latest density."""

    def __init__(self, start_ns: int, end_ns: int, width_ns: int) -> None:
        self.start = start_ns
        self.end = end_ns
        self.width = max(MIN_WINDOW_NS, width_ns)

    def next(self) -> tuple[int, int | None]:
        start, stop = self.start, self.start + self.width
        if stop >= self.end:
            self.start = self.end
            return start, None  # open-ended: also takes whatever arrives meanwhile
        self.start = stop
        return start, stop

    @property
    def exhausted(self) -> bool:
        return self.start >= self.end

    def observe(self, entries: int, span_ns: int, page_size: int) -> None:
        """Re-size from a committed window: ``entries`` were found in ``span_ns``. Aim a
        little under one page, so that a window rarely needs a second request."""
        if entries > 0 and span_ns > 0:
            self.width = max(MIN_WINDOW_NS, span_ns * page_size * FILL // (entries * 100))


async def backfill(
    poller: WindowSource, lower_ns: int, now_ns: int, width_ns: int, parallelism: int
) -> int | None:
    """Fetch everything from ``lower_ns`` on in parallel windows; commit them in order.

    Returns the earliest ``seen_since_ns`` of the windows' first pages (what the poller
    may treat as read through), or None when a window's answer had no Date.
    """
    windows = _Windows(lower_ns, now_ns, width_ns * FILL // 100)
    log.info(
        "stream.backfill",
        stream=poller.stream.name,
        parallelism=parallelism,
        behind_seconds=round((now_ns - lower_ns) / NS_PER_SECOND),
    )
    slots = anyio.Semaphore(parallelism)
    queue_send, queue_receive = anyio.create_memory_object_stream[_Window](parallelism)
    firsts: list[int | None] = []

    async def fetch(window: _Window, send: MemoryObjectSendStream[Page]) -> None:
        query = with_range(poller.stream.query, window.start, poller.range_form, window.end)
        cursor: str | None = None
        async with send:
            while True:
                page = await poller.fetch(query, cursor)
                if cursor is None:
                    firsts.append(page.seen_since_ns)
                window.items += page.item_count
                await send.send(page)
                if not poller.is_full(page) or page.next_cursor is None:
                    return
                cursor = page.next_cursor

    async def dispatch() -> None:
        async with queue_send:
            while not windows.exhausted:
                await slots.acquire()
                start, end = windows.next()
                send, receive = anyio.create_memory_object_stream[Page](PAGES_PER_WINDOW)
                window = _Window(start, end, receive)
                await queue_send.send(window)
                tg.start_soon(fetch, window, send)

    async def commit_in_order() -> None:
        async with queue_receive:
            async for window in queue_receive:
                await poller.commit_pages(window.pages, lower_ns)
                slots.release()
                if window.end is not None:
                    windows.observe(
                        window.items, window.end - window.start, poller.stream.page_size
                    )

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatch)
            tg.start_soon(commit_in_order)
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return None if None in firsts or not firsts else min(f for f in firsts if f is not None)


async def windows_supported(poller: WindowSource) -> bool:
    """Whether the API honours an upper bound on timestamp: a window that cannot hold any
    entry must come back empty (a cheap probe, once per stream)."""
    future = time.time_ns() + PROBE_FUTURE_NS
    query = with_range(poller.stream.query, future, poller.range_form, future + NS_PER_SECOND)
    return await probe(lambda q: poller.fetch(q, None, limit=1), query) == "honoured"
