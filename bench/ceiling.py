"""How fast the drain could be: the fetch limit's loop doing part of the daemon's work.

Each stage is the fetch limit's sequential loop (``loops.py``) plus one more step of what
the daemon does to every page, measured in this process on the drain's data:

- ``parse``: the client's own ``parse_page`` (ids, timestamps, each entry's bytes);
- ``journal``: and the real ``JournalStore.append`` of each page with its cursor, in this
  thread (no event loop, no worker threads, no delivery);
- ``page journal``: instead, a *prototype* of a page-level journal (one row per page with
  its bytes, a key row per entry for de-duplication, written by SQLite's ``json_each`` so
  no Python runs per entry): what issue 18's "page-level journal" design step would
  save, measured before anyone builds it;
- ``file only``: parsing, then each page's entries appended to a JSON Lines file, with no
  journal at all: the most a daemon could reach that hands entries to a fast sink before
  anything is durable (a weaker promise than ours).

A stage's ratio to the limit is the most the daemon could reach while it does that much
work per entry on one core: the daemon adds delivery, the event loop and its threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from runflow_tail.api.client import Page, parse_page
from runflow_tail.journal.store import CursorState, JournalStore

from bench.loops import HEADERS, PAGE_PATH, LoopResult, _Cursor, _first_params
from bench.procs import DEFAULT_FIELDS, Sandbox
from bench.sections import HISTORY_AGES, PAGE_SIZE, SORT, Log, Plan, workdir

STAGES = ("limit", "parse", "journal", "page journal", "file only")
_encode = msgspec.json.Encoder().encode


class PageJournalProbe:
    """Not the product: the least a page-level journal would do per page (no re-read
    handling: the drain has none), to measure the design before building it."""

    def __init__(self, path: Path) -> None:
        db = self.db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA page_size=32768")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE pages (first_seq INTEGER PRIMARY KEY, last_seq INTEGER, "
            "stream TEXT, raw BLOB, lengths BLOB)"
        )
        db.execute(
            "CREATE TABLE keys (stream TEXT, ts INTEGER, id TEXT, seq INTEGER, "
            "PRIMARY KEY (stream, ts, id)) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE cursors (stream TEXT PRIMARY KEY, watermark INTEGER)")
        self.seq = 0

    def append(self, stream: str, page: Page) -> None:
        rows = page.entries
        if not rows:
            return
        keys = _encode([(row[0], row[1]) for row in rows])
        raws = [row[2] for row in rows]
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT OR IGNORE INTO keys (stream, ts, id, seq) "
            "SELECT ?1, value->>1, value->>0, ?2 + key FROM json_each(?3)",
            (stream, self.seq + 1, keys),
        )
        db.execute(
            "INSERT INTO pages VALUES (?, ?, ?, ?, ?)",
            (
                self.seq + 1,
                self.seq + len(rows),
                stream,
                b"".join(raws),
                _encode(list(map(len, raws))),
            ),
        )
        db.execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT (stream) DO UPDATE "
            "SET watermark = excluded.watermark",
            (stream, max(row[1] for row in rows)),
        )
        db.execute("COMMIT")
        self.seq += len(rows)


def _stage_step(stage: str, work: Path) -> Callable[[bytes], tuple[int, str | None]]:
    """What the stage does with each page body: returns its item count and next cursor."""
    if stage == "limit":
        decode = msgspec.json.Decoder(_Cursor).decode

        def limit(body: bytes) -> tuple[int, str | None]:
            page = decode(body)
            return len(page.items), page.next if page.next is not None else page.next_pq

        return limit
    store = JournalStore(work / "journal.sqlite3") if stage == "journal" else None
    probe = PageJournalProbe(work / "pages.sqlite3") if stage == "page journal" else None
    state = CursorState("bench")

    def step(body: bytes) -> tuple[int, str | None]:
        page = parse_page(body)
        if store is not None:
            store.append("all", page.entries, state.advanced(page.entries))
        if probe is not None:
            probe.append("all", page)
        if stage == "file only":
            with (work / "out.jsonl").open("ab") as output:
                output.write(b"".join([row[2] + b"\n" for row in page.entries]))
        return page.item_count, page.next_cursor

    return step


async def _walk(base_url: str, params: dict[str, str], step: Callable[..., Any]) -> LoopResult:
    query = _first_params(params)
    entries = requests = size = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, timeout=60) as client:
        while True:
            response = await client.get(PAGE_PATH, params=query)
            response.raise_for_status()
            requests += 1
            size += len(response.content)
            count, cursor = step(response.content)
            entries += count
            if cursor is None:
                break
            query = {**query, "pq": cursor}
    return LoopResult(entries, requests, size, time.perf_counter() - t0, time.process_time() - cpu0)


def _variant(sandbox: Sandbox, fields: tuple[str, ...], count: int) -> dict[str, Any]:
    params = {"limit": str(PAGE_SIZE), "sort_by": SORT}
    if fields:
        params["fields"] = ",".join(fields)
    measured: dict[str, LoopResult] = {}
    # The limit first and last, the faster counting: the first walk of a variant warms
    # the sandbox's caches and ours, and no stage should gain from coming later.
    for stage in (*STAGES, "limit"):
        with workdir("ceiling") as work:
            result = asyncio.run(_walk(sandbox.url, params, _stage_step(stage, work)))
        if result.entries != count:
            raise RuntimeError(f"the {stage} stage walked {result.entries} of {count}")
        if stage not in measured or result.rate > measured[stage].rate:
            measured[stage] = result
    limit = measured["limit"]
    return {
        stage: {
            "entries_per_s": round(result.rate, 1),
            "cpu_seconds": round(result.cpu_seconds, 2),
            "vs_limit": round(result.rate / limit.rate, 3),
            "cpu_vs_limit": round(result.cpu_seconds / max(limit.cpu_seconds, 1e-9), 2),
        }
        for stage, result in measured.items()
    }


def ceiling(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    log(f"ceiling: the drain's {plan.entries:,} entries, walked by partial loops")
    sandbox.clear()
    sandbox.clusters(HISTORY_AGES, plan.entries // len(HISTORY_AGES), step_ms=1.0, full_run=True)
    result: dict[str, Any] = {"entries": plan.entries}
    for variant, fields in (("projected", DEFAULT_FIELDS), ("full", ())):
        log(f"  {variant}")
        result[variant] = _variant(sandbox, fields, plan.entries)
    return result
