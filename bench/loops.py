"""The yardsticks the daemon is compared with, run in the bench process on the same data.

- ``fetch_limit``: the fastest a single sequential client can walk the pages: an async
  httpx loop that decodes only the cursor and the item count, and keeps nothing. The
  daemon cannot beat it without fetching in parallel; what it loses against it is the
  daemon's own per-page and per-entry work (parsing, journal, delivery).
- ``naive_poller``: what a user would write in ten minutes: ``httpx.Client``, page by page,
  ``json.loads`` the body, ``json.dumps`` each item into a JSON Lines file. No journal, no
  exactly-once, no retries: the daemon should still be faster, because it never decodes
  or re-encodes an entry.

Both follow the same ``next`` cursors with the same query parameters the daemon sent
(read back from the sandbox), so they walk exactly the same pages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.procs import API_KEY

HEADERS = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
PAGE_PATH = "/v1/runs/any/logs"


@dataclass
class LoopResult:
    entries: int
    requests: int
    bytes_read: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.entries / self.seconds if self.seconds > 0 else 0.0

    def document(self) -> dict[str, Any]:
        return {**asdict(self), "entries_per_s": round(self.rate, 1)}


class _Cursor(msgspec.Struct):
    items: list[msgspec.Raw]
    next: str | None = None
    next_pq: str | None = None


def _first_params(params: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in params.items() if key != "pq"}


PageStep = Callable[[bytes], tuple[int, str | None]]
"""What a loop does with each page body: returns its item count and the next cursor."""


def limit_step() -> PageStep:
    """The fetch limit's only work: the items split off and the cursor read."""
    decode = msgspec.json.Decoder(_Cursor).decode

    def step(body: bytes) -> tuple[int, str | None]:
        page = decode(body)
        return len(page.items), page.next if page.next is not None else page.next_pq

    return step


async def walk_pages(
    base_url: str, params: dict[str, str], step: PageStep, max_pages: int = 100_000
) -> LoopResult:
    """Follow the cursors one request after another, handing each body to ``step``."""
    query = _first_params(params)
    entries = requests = size = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, timeout=60) as client:
        while requests < max_pages:
            response = await client.get(PAGE_PATH, params=query)
            response.raise_for_status()
            body = response.content
            requests += 1
            size += len(body)
            count, cursor = step(body)
            entries += count
            if cursor is None:
                break
            query = {**query, "pq": cursor}
    return LoopResult(entries, requests, size, time.perf_counter() - t0, time.process_time() - cpu0)


def fetch_limit(base_url: str, params: dict[str, str], *, max_pages: int = 100_000) -> LoopResult:
    return asyncio.run(walk_pages(base_url, params, limit_step(), max_pages))


def naive_poller(
    base_url: str, params: dict[str, str], output: Path, *, max_pages: int = 100_000
) -> LoopResult:
    query = _first_params(params)
    entries = requests = size = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    with (
        httpx.Client(base_url=base_url, headers=HEADERS, timeout=60) as client,
        output.open("w", encoding="utf-8") as sink,
    ):
        while requests < max_pages:
            response = client.get(PAGE_PATH, params=query)
            response.raise_for_status()
            requests += 1
            size += len(response.content)
            page = json.loads(response.content)
            for item in page["items"]:
                sink.write(json.dumps(item) + "\n")
            entries += len(page["items"])
            if not page.get("next"):
                break
            query = {**query, "pq": page["next"]}
    return LoopResult(entries, requests, size, time.perf_counter() - t0, time.process_time() - cpu0)
