"""Walking a query's pages by cursor: the next page asked for while this one is read.

Three stages overlap: the next page is asked for as soon as this one's cursor is known
(``_prefetch``), this one's entries are read meanwhile, and pages commit in a task of
their own (the source's ``commit_pages``, which takes every waiting page in one
transaction when commits fall behind).

A cursor that does not advance is a stall, never a loop: a full page answered with the
cursor that fetched it, or a page holding the same entries as the one before (a new token
for the same place). A short page is the end of the results, whatever cursor it carries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from runflow_tail.api.client import Page, PageBody
from runflow_tail.config.model import StreamSettings
from runflow_tail.errors import ApiCursorStuck

PAGES_IN_FLIGHT = 4
"""Parsed pages waiting for their commit."""
PREFETCH_PAGES = 1
"""Pages asked for ahead of the one being read: enough to overlap the API's work with ours."""
RECHECK_PAGES = 8
"""A walk that may hand over asks every this many pages whether it should."""


class PageSource(Protocol):
    """What a walk needs from a stream's poller."""

    @property
    def stream(self) -> StreamSettings: ...

    async def fetch(self, query: str, cursor: str | None, *, limit: int | None = None) -> Page:
        """One page, parsed; transient failures are retried inside."""
        ...

    async def fetch_body(self, query: str, cursor: str | None) -> PageBody:
        """One page up to its items and cursor; transient failures are retried inside."""
        ...

    def is_full(self, page: Page) -> bool: ...

    async def commit_pages(
        self, receive: MemoryObjectReceiveStream[Page], lower: int | None
    ) -> None: ...


async def walk(
    source: PageSource,
    query: str,
    first: Page,
    lower: int | None,
    *,
    hand_over: Callable[[Page], bool] | None = None,
) -> tuple[Page, bool]:
    """Commit ``first`` and every page after it, by cursor, until a short page; returns the
    last page, and whether it stopped early because ``hand_over`` said so (asked every
    ``RECHECK_PAGES`` pages; the page it was asked about is committed)."""
    send, receive = anyio.create_memory_object_stream[Page](PAGES_IN_FLIGHT)
    arrive, arrived = anyio.create_memory_object_stream[PageBody](PREFETCH_PAGES)
    page = first
    pages = 1
    handed_over = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(source.commit_pages, receive, lower)
            async with send, arrived:
                await send.send(page)
                if source.is_full(page) and page.next_cursor is not None:
                    tg.start_soon(_prefetch, source, query, page.next_cursor, arrive)
                else:
                    arrive.close()
                async for split in arrived:
                    following = split.parse()
                    check_progress(page, following)
                    page = following
                    pages += 1
                    await send.send(page)
                    if hand_over is not None and pages % RECHECK_PAGES == 0 and hand_over(page):
                        handed_over = True  # closing ``arrived`` ends the prefetch
                        break
    except BaseExceptionGroup as group:
        # One failure at a time is what the retry logic understands; the task group only
        # exists for pipelining.
        raise group.exceptions[0] from None
    return page, handed_over


async def _prefetch(
    source: PageSource, query: str, cursor: str, arrive: MemoryObjectSendStream[PageBody]
) -> None:
    """Follow cursors from ``cursor``, handing each page on as soon as it arrives."""
    page_size = source.stream.page_size
    async with arrive:
        while True:
            split = await source.fetch_body(query, cursor)
            full = split.item_count >= page_size
            if full and split.next_cursor == cursor:
                raise stall(cursor, "the same page cursor")
            try:
                await arrive.send(split)
            except anyio.BrokenResourceError:
                return  # the walk stopped early (handing over to a backfill)
            if not full or split.next_cursor is None:
                return
            cursor = split.next_cursor


async def follow(source: PageSource, query: str, page: Page) -> Page:
    """The page after ``page`` (one request, no overlap: for cursor polling and windows)."""
    assert page.next_cursor is not None
    cursor = page.next_cursor
    following = await source.fetch(query, cursor)
    if source.is_full(following) and following.next_cursor == cursor:
        raise stall(cursor, "the same page cursor")
    check_progress(page, following)
    return following


def check_progress(page: Page, following: Page) -> None:
    """A page after ``page`` that holds the same entries is a cursor that names the same
    place again (a new token for it, perhaps): following it would never end."""
    if page.entries and same_entries(page, following):
        raise stall(page.next_cursor or "", "the same entries")


def same_entries(page: Page, following: Page) -> bool:
    entries, again = page.entries, following.entries
    return (
        len(entries) == len(again)
        and entries[0].id == again[0].id
        and entries[-1].id == again[-1].id
    )


def stall(cursor: str, what: str) -> ApiCursorStuck:
    # No stream name and no next step here: readiness prefixes the stream, the daemon
    # polls again from the watermark, and a tail ends.
    return ApiCursorStuck(
        f"the API answered a page cursor with {what} again: following it would never end",
        cursor=cursor,
    )
