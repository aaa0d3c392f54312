"""How fast the drain could be: the fetch limit's loop doing part of the daemon's work.

Each stage is the fetch limit's sequential loop (``loops.py``) plus one more step of what
the daemon does to every page, measured in this process on the drain's data:

- ``parse``: the client's own ``parse_page`` (ids, timestamps, each entry's bytes);
- ``journal``: and the real ``JournalStore.append`` of each page with its cursor, in this
  thread (no event loop, no worker threads, no delivery);
- ``page journal``: instead, a *prototype* of a page-level journal (one row per page with
  its bytes; the per-entry key rows for de-duplication made by SQLite's ``json_each``
  from one JSON array per page, so the statement runs no Python per entry, though
  building the arrays does): what issue 18's "page-level journal" design step would
  save, measured before anyone builds it;
- ``file only``: parsing, then each page's entries appended to a JSON Lines file, with no
  journal at all: the most a daemon could reach that hands entries to a fast sink before
  anything is durable (a weaker promise than ours).

Every stage runs twice, in opposite orders, and the faster run counts: the first walk
warms the sandbox's caches, and each stage's deleted files leave the page cache warm for
the next (on this VM, writing into memory freed a moment ago costs a tenth of the system
time), so no stage should gain or lose by its place. A stage's ratio to the limit is the
most the daemon could reach while it does that much work per entry on one core: the
daemon adds delivery, the event loop and its threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from runflow_tail.api.client import Page, parse_page
from runflow_tail.journal.schema import PAGE_SIZE as JOURNAL_PAGE_SIZE
from runflow_tail.journal.store import CursorState, JournalStore

from bench.loops import LoopResult, PageStep, limit_step, walk_pages
from bench.procs import DEFAULT_FIELDS, Sandbox
from bench.sections import PAGE_SIZE, SORT, Log, Plan, history_backlog, workdir

STAGES = ("limit", "parse", "journal", "page journal", "file only")
_encode = msgspec.json.Encoder().encode


class PageJournalProbe:
    """Not the product: the least a page-level journal would do per page (no re-read
    handling: the drain has none), to measure the design before building it."""

    def __init__(self, path: Path) -> None:
        db = self.db = sqlite3.connect(path, isolation_level=None)
        db.execute(f"PRAGMA page_size={JOURNAL_PAGE_SIZE}")
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

    def close(self) -> None:
        self.db.close()

    def append(self, stream: str, page: Page) -> None:
        rows = page.entries
        if not rows:
            return
        keys = _encode([(row[0], row[1]) for row in rows])
        raws = [row[2] for row in rows]
        lengths = _encode(list(map(len, raws)))
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        # json_extract, not ->>: that operator needs SQLite 3.38.
        db.execute(
            "INSERT OR IGNORE INTO keys (stream, ts, id, seq) SELECT ?1, "
            "json_extract(value, '$[1]'), json_extract(value, '$[0]'), ?2 + key "
            "FROM json_each(?3)",
            (stream, self.seq + 1, keys),
        )
        db.execute(
            "INSERT INTO pages VALUES (?, ?, ?, ?, ?)",
            (self.seq + 1, self.seq + len(rows), stream, b"".join(raws), lengths),
        )
        db.execute(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT (stream) DO UPDATE "
            "SET watermark = excluded.watermark",
            (stream, max(row[1] for row in rows)),
        )
        db.execute("COMMIT")
        self.seq += len(rows)


def _stage_step(stage: str, work: Path, resources: contextlib.ExitStack) -> PageStep:
    if stage == "limit":
        return limit_step()
    store = probe = None
    if stage == "journal":
        store = resources.enter_context(contextlib.closing(JournalStore(work / "j.sqlite3")))
    if stage == "page journal":
        probe = resources.enter_context(contextlib.closing(PageJournalProbe(work / "p.sqlite3")))
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


def _walk(sandbox: Sandbox, params: dict[str, str], stage: str, count: int) -> LoopResult:
    with workdir("ceiling") as work, contextlib.ExitStack() as resources:
        step = _stage_step(stage, work, resources)
        result = asyncio.run(walk_pages(sandbox.url, params, step))
    if result.entries != count:
        raise RuntimeError(f"the {stage} stage walked {result.entries} of {count} entries")
    return result


def _variant(sandbox: Sandbox, fields: tuple[str, ...], count: int) -> dict[str, Any]:
    params = {"limit": str(PAGE_SIZE), "sort_by": SORT}
    if fields:
        params["fields"] = ",".join(fields)
    best: dict[str, LoopResult] = {}
    for stage in (*STAGES, *reversed(STAGES)):
        result = _walk(sandbox, params, stage, count)
        if stage not in best or result.rate > best[stage].rate:
            best[stage] = result
    limit = best["limit"]
    return {
        stage: {
            "entries_per_s": round(result.rate, 1),
            "cpu_seconds": round(result.cpu_seconds, 2),
            "vs_limit": round(result.rate / limit.rate, 3),
            "cpu_vs_limit": round(result.cpu_seconds / max(limit.cpu_seconds, 1e-9), 2),
        }
        for stage, result in best.items()
    }


def ceiling(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    log(f"ceiling: the drain's {plan.entries:,} entries, walked by partial loops")
    history_backlog(sandbox, plan.entries)
    result: dict[str, Any] = {"entries": plan.entries}
    for variant, fields in (("projected", DEFAULT_FIELDS), ("full", ())):
        log(f"  {variant}")
        result[variant] = _variant(sandbox, fields, plan.entries)
    return result
