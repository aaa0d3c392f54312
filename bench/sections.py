"""The measurements: each section sets up the sandbox, runs the daemon, returns numbers.

Every section starts from an empty sandbox and a fresh state directory, so sections can
run alone (``--only``) or in any order and give the same numbers.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from runflow_tail.times import format_instant

from bench.loops import fetch_limit, naive_poller
from bench.procs import DEFAULT_FIELDS, Daemon, IdTail, LineCounter, Sandbox, daemon_config
from bench.procs import file_sink as file_sink_toml
from bench.receiver import SlowReceiver

PAGE_SIZE = 500
SORT = "timestamp:asc,id:asc"
LIVE_RUN_ID = "0190b3a4-5c6d-7e8f-9a0b-00000000be0c"
LIVE_TICK = 0.05  # append a small batch every 50 ms: 200/s is 10 entries per call


@dataclass(frozen=True)
class Plan:
    """How big each section is; ``quick()`` is the CI variant."""

    entries: int = 200_000
    live_rate: float = 200.0
    live_seconds: float = 20.0
    poll_interval: float = 1.0
    idle_seconds: float = 30.0
    slow_backlogs: tuple[int, int] = (100_000, 400_000)
    slow_seconds: float = 20.0
    slow_delay: float = 0.2
    latency_entries: int = 20_000
    latency: float = 0.1
    sink_entries: int = 50_000
    sparse_cluster_entries: int = 4_000
    rate_limited_entries: int = 30_000

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            entries=5_000,
            live_seconds=2.0,
            idle_seconds=3.0,
            slow_backlogs=(5_000, 20_000),
            slow_seconds=3.0,
            latency_entries=2_000,
            sink_entries=2_000,
            sparse_cluster_entries=400,
            rate_limited_entries=1_500,
        )


Log = Callable[[str], None]


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    # Full-object drains leave ~1 GB of file and journal behind: delete each one promptly.
    path = Path(tempfile.mkdtemp(prefix=f"runflow-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _generate(sandbox: Sandbox, count: int) -> None:
    # 1 ms apart, ending now: a backlog spread over time as a real one is (one shared
    # timestamp would be a degenerate case for range polling), all of it visible.
    sandbox.clear()
    sandbox.generate(count, step_ms=1.0, full_run=True)
    sandbox.reset_stats()


def _stream(fields: tuple[str, ...], **overrides: Any) -> dict[str, Any]:
    return {
        "start_at": "beginning",
        "page_size": PAGE_SIZE,
        "fields": list(fields),
        **overrides,
    }


def _page_params(stats: dict[str, Any], fields: tuple[str, ...]) -> dict[str, str]:
    """The query parameters the daemon's backlog walk used, read back from the sandbox.

    The sandbox keeps only the last 100 queries, so the first page is long gone; but every
    continuation request carries the whole query plus ``pq``, so one of them minus ``pq``
    is exactly the first page's request.
    """
    for query in stats.get("recent_logs_queries", []):
        # A parallel backfill's requests cover one time window each (timestamp<...);
        # the reference walk must cover the whole backlog, as a sequential poller would.
        if "timestamp<" in query.get("q", ""):
            continue
        if query.get("pq") and query.get("limit") == str(PAGE_SIZE):
            return {key: value for key, value in query.items() if key != "pq"}
    params = {"limit": str(PAGE_SIZE), "sort_by": SORT}
    if fields:
        params["fields"] = ",".join(fields)
    return params


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- a: backlog drain ------------------------------------------------------------------


def product_drain(
    sandbox: Sandbox,
    count: int,
    fields: tuple[str, ...],
    work: Path,
    *,
    wrapper: Callable[[int], Callable[[], None]] | None = None,
    max_requests_per_second: float = 1000,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``runflow-tail run`` from the beginning until the file holds ``count`` lines.

    ``wrapper`` (for profiling) is called with the daemon's pid right after it starts and
    returns a function to call once the daemon has been reaped.
    """
    output = work / "out.jsonl"
    config = daemon_config(
        sandbox.url,
        work / "state",
        stream=_stream(fields, poll_interval=1.0),
        sink=file_sink_toml(output),
        # The journal's default cap (1 GiB) would pause a full-object drain of 200k
        # entries halfway; this measures throughput, not the cap.
        state={"max_journal_bytes": "16GiB", **(state or {})},
        max_requests_per_second=max_requests_per_second,
    )
    sandbox.reset_stats()
    sandbox_cpu = sandbox.cpu_seconds()
    daemon = Daemon(config, work)
    finish = wrapper(daemon.pid) if wrapper else None
    # What starting took (importing, opening the journal, probing the API) is not work
    # per entry: the CPU per entry counts from the first request on.
    startup_cpu = float("nan")
    deadline = time.monotonic() + 30
    while daemon.alive() and time.monotonic() < deadline:
        if sandbox.first_request_seen():
            startup_cpu = daemon.cpu_seconds()
            break
        time.sleep(0.005)
    counter = LineCounter(output)
    timeout = max(60.0, count / 500)
    done_at = counter.wait_for(count, timeout=timeout, alive=daemon.alive)
    if daemon.alive():
        cpu_at_done = daemon.cpu_seconds()
        hwm = daemon.hwm_mb()
    else:
        cpu_at_done, hwm = float("nan"), float("nan")
    stats = sandbox.stats()
    sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu
    reaped = daemon.stop()
    if finish is not None:
        finish()
    if done_at is None:
        problems = "; ".join(daemon.problems()[-5:]) or daemon.log.read_text()[-1500:]
        raise RuntimeError(
            f"the daemon wrote {counter.update()} of {count} lines within {timeout:.0f}s "
            f"({problems})"
        )
    bench = stats["bench"]
    first_request = bench["first_request_at"] or daemon.started_at
    seconds = done_at - first_request
    counter.update()
    return {
        "entries": count,
        "lines_at_stop": counter.lines,
        "seconds": round(seconds, 3),
        "startup_seconds": round(first_request - daemon.started_at, 3),
        "entries_per_s": round(count / seconds, 1),
        **_pace(counter.seen, count, done_at),
        "api_requests": stats["logs_requests"],
        "requests_before_retry_after": stats.get("requests_before_retry_after", 0),
        "bytes_read": bench["response_bytes"],
        "max_requests_in_flight": bench["max_in_flight"],
        "cpu_seconds": round(cpu_at_done, 2),
        "startup_cpu_seconds": round(startup_cpu, 2),
        "cpu_seconds_lifetime": round(reaped.cpu_seconds, 2),
        "peak_rss_mb": round(max(hwm, reaped.peak_rss_mb), 1),
        "sandbox_cpu_seconds": round(sandbox_cpu, 2),
        "exit_code": reaped.returncode,
        "warnings": daemon.warnings(),
        "params": _page_params(stats, fields),
    }


def _pace(seen: list[tuple[float, int]], count: int, done: float) -> dict[str, float]:
    """The rates over the drain's first and last quarter of lines, and their ratio:
    whether the drain slows as the journal grows. The first quarter starts at the first
    look that found a line (not at the first request: starting up is not pace); each
    quarter runs from the look before its boundary to the one after, so a look that
    skipped a boundary still gives a rate."""
    quarter = max(1, count // 4)
    start_at, start_lines = next(((t, n) for t, n in seen if n > 0), (done, count))
    first_at, first_lines = next(((t, n) for t, n in seen if n >= quarter), (done, count))
    last_at, last_lines = max(
        ((t, n) for t, n in seen if n <= count - quarter), default=(start_at, start_lines)
    )
    first_rate = (first_lines - start_lines) / max(first_at - start_at, 1e-9)
    last_rate = (count - last_lines) / max(done - last_at, 1e-9)
    return {
        "first_quarter_entries_per_s": round(first_rate, 1),
        "last_quarter_entries_per_s": round(last_rate, 1),
        "last_vs_first_quarter": round(last_rate / max(first_rate, 1e-9), 3),
    }


def _loop_document(result: Any, sandbox_cpu: float) -> dict[str, Any]:
    document: dict[str, Any] = result.document()
    document["sandbox_cpu_seconds"] = round(sandbox_cpu, 2)
    document["seconds"] = round(document["seconds"], 3)
    document["cpu_seconds"] = round(document["cpu_seconds"], 2)
    return document


def drain_variant(
    sandbox: Sandbox, count: int, fields: tuple[str, ...], log: Log
) -> dict[str, Any]:
    with workdir("drain") as work:
        log(f"  product ({count:,} entries)")
        product = product_drain(sandbox, count, fields, work)
    params = product.pop("params")
    log("  fetch limit")
    cpu = sandbox.cpu_seconds()
    limit = fetch_limit(sandbox.url, params)
    limit_doc = _loop_document(limit, sandbox.cpu_seconds() - cpu)
    with workdir("naive") as work:
        log("  naive poller")
        cpu = sandbox.cpu_seconds()
        naive = naive_poller(sandbox.url, params, work / "naive.jsonl")
        naive_doc = _loop_document(naive, sandbox.cpu_seconds() - cpu)
    for name, loop in (("fetch limit", limit), ("naive poller", naive)):
        if loop.entries != count:
            raise RuntimeError(f"the {name} walked {loop.entries} entries, expected {count}")
    return {
        "params": params,
        "product": product,
        "fetch_limit": limit_doc,
        "naive": naive_doc,
        "product_vs_limit": round(product["entries_per_s"] / limit.rate, 3),
        "product_vs_naive": round(product["entries_per_s"] / naive.rate, 3),
        # Both read the same entries: the ratio of their CPU is that of CPU per entry.
        "cpu_vs_limit": round(
            (product["cpu_seconds"] - product["startup_cpu_seconds"])
            / max(limit.cpu_seconds, 1e-9),
            2,
        ),
    }


HISTORY_AGES = [24 * 3600.0, 18 * 3600.0, 12 * 3600.0, 6 * 3600.0, 3600.0]
"""The drain's backlog lies in the past in five chunks with quiet hours between them, as
a real organization's does (not one stretch continuous up to now)."""


def history_backlog(sandbox: Sandbox, entries: int) -> None:
    """The drain's backlog: ``entries`` in the five chunks of ``HISTORY_AGES``, 1 ms apart."""
    sandbox.clear()
    sandbox.clusters(HISTORY_AGES, entries // len(HISTORY_AGES), step_ms=1.0, full_run=True)


def drain(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    log(f"drain: generating {plan.entries:,} entries in {len(HISTORY_AGES)} chunks of history")
    history_backlog(sandbox, plan.entries)
    sandbox.reset_stats()
    log("drain, projected fields")
    projected = drain_variant(sandbox, plan.entries, DEFAULT_FIELDS, log)
    log("drain, full run object (fields = [])")
    full = drain_variant(sandbox, plan.entries, (), log)
    return {"entries": plan.entries, "projected": projected, "full": full}


# -- b: live latency, c: idle cost -----------------------------------------------------


class _Appender(threading.Thread):
    """Appends ``rate`` entries per second, in small batches stamped now, for ``seconds``.

    An entry is visible in the API from the moment the append call returns: that is the
    instant latency is measured from.
    """

    def __init__(self, url: str, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.per_tick = max(1, round(rate * LIVE_TICK))
        self.ticks = max(1, round(seconds / LIVE_TICK))
        self.visible: dict[str, float] = {}
        self.late_ticks = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=30) as client:
                start = time.monotonic()
                for tick in range(self.ticks):
                    due = start + tick * LIVE_TICK
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        self.late_ticks += 1
                    stamp = format_instant(time.time_ns())
                    entries = [
                        {"run_id": LIVE_RUN_ID, "timestamp": stamp, "message": f"live {tick}.{i}"}
                        for i in range(self.per_tick)
                    ]
                    response = client.post("/_sandbox/entries", json={"entries": entries})
                    response.raise_for_status()
                    returned = time.monotonic()
                    for entry_id in response.json()["ids"]:
                        self.visible[entry_id] = returned
        except BaseException as exc:  # reported by the section, which owns the thread
            self.error = exc


def _live_daemon(sandbox: Sandbox, plan: Plan, work: Path) -> tuple[Daemon, Path]:
    output = work / "live.jsonl"
    config = daemon_config(
        sandbox.url,
        work / "state",
        stream=_stream(DEFAULT_FIELDS, start_at="now", poll_interval=plan.poll_interval),
        sink=file_sink_toml(output),
    )
    daemon = Daemon(config, work)
    daemon.wait_for_event("stream.strategy_chosen", timeout=30)
    # Let the first cycle after the probe finish: from then on the daemon is polling.
    time.sleep(plan.poll_interval + 0.2)
    return daemon, output


def live(sandbox: Sandbox, plan: Plan, daemon: Daemon, output: Path, log: Log) -> dict[str, Any]:
    log(
        f"live: {plan.live_rate:g}/s for {plan.live_seconds:g}s, "
        f"poll_interval {plan.poll_interval:g}s"
    )
    tail = IdTail(output)
    appender = _Appender(sandbox.url, plan.live_rate, plan.live_seconds)
    appender.start()
    # Tail the file every 5 ms: the timestamps' resolution, small against the poll interval.
    while appender.is_alive():
        tail.update()
        time.sleep(0.005)
    if appender.error is not None:
        raise RuntimeError(f"appending live entries failed: {appender.error!r}")
    deadline = time.monotonic() + plan.poll_interval * 5 + 5
    while time.monotonic() < deadline and not appender.visible.keys() <= tail.seen.keys():
        tail.update()
        time.sleep(0.005)
    latencies = [
        tail.seen[entry_id] - visible
        for entry_id, visible in appender.visible.items()
        if entry_id in tail.seen
    ]
    missing = len(appender.visible) - len(latencies)
    return {
        "rate": plan.live_rate,
        "seconds": plan.live_seconds,
        "poll_interval": plan.poll_interval,
        "appended": len(appender.visible),
        "delivered": len(latencies),
        "missing": missing,
        "late_append_ticks": appender.late_ticks,
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else float("nan"),
    }


def idle(sandbox: Sandbox, plan: Plan, daemon: Daemon, log: Log) -> dict[str, Any]:
    log(f"idle: {plan.idle_seconds:g}s with nothing new")
    # Caught up: the last entries were written; one more poll cycle to be sure.
    time.sleep(plan.poll_interval + 0.5)
    sandbox.reset_stats()
    cpu0, t0, written0 = daemon.cpu_seconds(), time.monotonic(), daemon.bytes_written()
    time.sleep(plan.idle_seconds)
    cpu1, t1, written1 = daemon.cpu_seconds(), time.monotonic(), daemon.bytes_written()
    stats = sandbox.stats()
    return {
        "seconds": round(t1 - t0, 2),
        "poll_interval": plan.poll_interval,
        "cpu_seconds": round(cpu1 - cpu0, 3),
        "cpu_percent": round((cpu1 - cpu0) / (t1 - t0) * 100, 2),
        # Each poll re-reads the entries of the last `lookback` seconds before the newest
        # one (the watermark does not move while nothing is new): this shows their cost.
        "api_requests": stats["logs_requests"],
        "requests_before_retry_after": stats.get("requests_before_retry_after", 0),
        "bytes_read": stats["bench"]["response_bytes"],
        # Each of those polls commits only when something moved: a quiet stream's disk
        # writes (SSD wear, the WAL's checkpoints) show here.
        "bytes_written": written1 - written0,
        "rss_mb": round(daemon.rss_mb(), 1),
    }


def live_and_idle(
    sandbox: Sandbox, plan: Plan, log: Log, *, want_live: bool, want_idle: bool
) -> dict[str, Any]:
    """Live latency, then idle cost on the same (caught-up) daemon."""
    sandbox.clear()
    results: dict[str, Any] = {}
    with workdir("live") as work:
        daemon, output = _live_daemon(sandbox, plan, work)
        try:
            if want_live:
                results["live"] = live(sandbox, plan, daemon, output, log)
            if want_idle:
                results["idle"] = idle(sandbox, plan, daemon, log)
        finally:
            reaped = daemon.stop()
        for section in results.values():
            section["daemon_peak_rss_mb"] = round(reaped.peak_rss_mb, 1)
    return results


# -- d: slow sink ----------------------------------------------------------------------


def _journaled(state_dir: Path) -> int:
    try:
        with sqlite3.connect(state_dir / "journal.sqlite3") as db:
            return int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
    except sqlite3.Error:
        return -1


def slow_sink_run(sandbox: Sandbox, plan: Plan, backlog: int, log: Log) -> dict[str, Any]:
    log(
        f"slow sink: {backlog:,} backlog, {plan.slow_delay * 1000:g} ms per request, "
        f"{plan.slow_seconds:g}s"
    )
    _generate(sandbox, backlog)
    with SlowReceiver(plan.slow_delay) as receiver, workdir("slow") as work:
        sink = f'[sinks.hook]\ntype = "webhook"\nurl = "{receiver.url}"\n'
        config = daemon_config(
            sandbox.url, work / "state", stream=_stream(DEFAULT_FIELDS), sink=sink
        )
        daemon = Daemon(config, work)
        samples: list[float] = []
        deadline = time.monotonic() + plan.slow_seconds
        while time.monotonic() < deadline and daemon.alive():
            samples.append(daemon.rss_mb())
            time.sleep(0.25)
        hwm = daemon.hwm_mb()
        reaped = daemon.stop()
        journaled = _journaled(work / "state")
        delivered = receiver.entries
    return {
        "backlog": backlog,
        "seconds": plan.slow_seconds,
        "journaled": journaled,
        "delivered": delivered,
        "peak_rss_mb": round(max(hwm, reaped.peak_rss_mb), 1),
        "rss_first_mb": round(samples[0], 1) if samples else float("nan"),
        "rss_last_mb": round(samples[-1], 1) if samples else float("nan"),
        "exit_code": reaped.returncode,
    }


def slow_sink(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    small, large = (slow_sink_run(sandbox, plan, backlog, log) for backlog in plan.slow_backlogs)
    return {
        "delay_ms": plan.slow_delay * 1000,
        "small": small,
        "large": large,
        "rss_large_vs_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
    }


# -- e: latency-bound API --------------------------------------------------------------


def latency_bound(sandbox: Sandbox, plan: Plan, log: Log) -> dict[str, Any]:
    log(f"latency-bound: {plan.latency_entries:,} entries, {plan.latency * 1000:g} ms per request")
    _generate(sandbox, plan.latency_entries)
    sandbox.patch_options(latency=plan.latency)
    try:
        with workdir("latency") as work:
            product = product_drain(sandbox, plan.latency_entries, DEFAULT_FIELDS, work)
        params = product.pop("params")
        sequential = fetch_limit(sandbox.url, params)
    finally:
        sandbox.patch_options(latency=0.0)
    parallel = product["max_requests_in_flight"] > 1
    return {
        "latency_ms": plan.latency * 1000,
        "entries": plan.latency_entries,
        "product": product,
        "sequential_limit": sequential.document(),
        "product_parallel": parallel,
        "product_vs_sequential": round(product["entries_per_s"] / sequential.rate, 3),
    }
