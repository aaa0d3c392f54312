"""Asking the API what it can do, cheaply: one request with ``limit=1`` and a filter that
no entry can match (a day ahead of now), so any item in the answer means the filter was
ignored, and a 400 or 422 that it was refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from runflow_tail.api.client import Page
from runflow_tail.errors import ApiConfigurationError

ProbeAnswer = Literal["honoured", "ignored", "rejected"]
FetchOne = Callable[[str], Awaitable[Page]]
"""Fetches the first page of a query with ``limit=1``."""


async def probe(fetch_one: FetchOne, query: str) -> ProbeAnswer:
    try:
        page = await fetch_one(query)
    except ApiConfigurationError as exc:
        if exc.status in (400, 422):
            return "rejected"
        raise
    return "honoured" if page.item_count == 0 else "ignored"
