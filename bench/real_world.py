"""Sections on data and limits shaped like a real organization's (README "Performance").

f. **Sparse backlog**: bursts a day apart, drained with the default request rate (5/s):
   the cost follows the pages, so the drain takes about pages / rate seconds and about one
   request per page, however much quiet time lies between the bursts.
g. **Rate-limited API**: every sixth request answered 429 with ``Retry-After: 1``, early
   returns refused and counted; the daemon (rate cap lifted) against the best a client
   can do there: one request after another, waiting exactly what each 429 says.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import msgspec

from bench.loops import HEADERS, PAGE_PATH
from bench.procs import DEFAULT_FIELDS, Sandbox
from bench.sections import PAGE_SIZE, SORT, Log, Plan, product_drain, workdir

HOUR = 3600.0
CLUSTER_AGES = [24 * HOUR, 18 * HOUR, 12 * HOUR, 6 * HOUR, 1 * HOUR]
DEFAULT_RATE = 5.0
EVERY_429 = 6
RETRY_AFTER = 1


def sparse(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    per_cluster = plan.sparse_cluster_entries
    total = per_cluster * len(CLUSTER_AGES)
    pages = len(CLUSTER_AGES) * math.ceil(per_cluster / PAGE_SIZE)
    log(f"sparse: {len(CLUSTER_AGES)} bursts of {per_cluster:,}, a day apart, at 5 requests/s")
    sandbox.clear()
    sandbox.clusters(CLUSTER_AGES, per_cluster, step_ms=8.0)
    with workdir("sparse") as work:
        product = product_drain(
            sandbox, total, DEFAULT_FIELDS, work, max_requests_per_second=DEFAULT_RATE
        )
    product.pop("params")
    ideal_seconds = pages / DEFAULT_RATE
    return {
        "entries": total,
        "pages": pages,
        "rate": DEFAULT_RATE,
        "product": product,
        "requests_per_page": round(product["api_requests"] / pages, 3),
        "seconds_vs_ideal": round(product["seconds"] / ideal_seconds, 3),
        # What the polite default costs a backlog (issue 18): measured, not derived.
        "seconds_per_million": round(product["seconds"] / total * 1_000_000),
    }


class _Page(msgspec.Struct):
    items: list[msgspec.Raw]
    next: str | None = None


async def _patient_client(base_url: str, params: dict[str, str]) -> dict[str, Any]:
    """One request after another, following cursors, waiting exactly each Retry-After."""
    decode = msgspec.json.Decoder(_Page).decode
    entries = requests = refused = 0
    started = time.perf_counter()
    query = dict(params)
    async with httpx.AsyncClient(base_url=base_url, headers=HEADERS, timeout=60) as client:
        while True:
            response = await client.get(PAGE_PATH, params=query)
            requests += 1
            if response.status_code == 429:
                refused += 1
                await asyncio.sleep(float(response.headers.get("retry-after", RETRY_AFTER)))
                continue
            response.raise_for_status()
            page = decode(response.content)
            entries += len(page.items)
            if page.next is None:
                break
            query = {**params, "pq": page.next}
    seconds = time.perf_counter() - started
    return {
        "entries": entries,
        "requests": requests,
        "refused": refused,
        "seconds": round(seconds, 3),
        "entries_per_s": round(entries / seconds, 1),
    }


def rate_limited(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    count = plan.rate_limited_entries
    log(f"rate-limited: {count:,} entries, every {EVERY_429}th request 429 Retry-After 1")
    sandbox.clear()
    sandbox.clusters([HOUR], count, step_ms=1.0)
    sandbox.patch_options(fault_429_every=EVERY_429, retry_after=RETRY_AFTER)
    try:
        with workdir("rate-limited") as work:
            product = product_drain(sandbox, count, DEFAULT_FIELDS, work)
        product.pop("params")
        sandbox.reset_stats()
        params = {"limit": str(PAGE_SIZE), "sort_by": SORT, "fields": ",".join(DEFAULT_FIELDS)}
        patient = asyncio.run(_patient_client(sandbox.url, params))
        patient["requests_before_retry_after"] = sandbox.stats()["requests_before_retry_after"]
    finally:
        sandbox.patch_options(fault_429_every=None, retry_after=None)
    return {
        "entries": count,
        "product": product,
        "patient_client": patient,
        "product_vs_allowed": round(product["entries_per_s"] / patient["entries_per_s"], 3),
    }
