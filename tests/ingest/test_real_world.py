"""The engine on data and API limits shaped like a real organization's: sparse history,
rate limiters that hold us to their Retry-After, late entries, cursors that stop advancing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.times import NS_PER_SECOND, now_ns

from tests.support.harness import (
    count_lines,
    read_jsonl,
    run_daemon_until,
    sandbox_ids,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.anyio

HOUR = 3600.0
DAY_OF_CLUSTERS = [24 * HOUR, 18 * HOUR, 12 * HOUR, 6 * HOUR, 1 * HOUR]


def lay_out(sandbox: SandboxHandle, ages: list[float], entries: int) -> None:
    for age in ages:
        sandbox.world.generate(
            entries, timestamp_ns=now_ns() - int(age * NS_PER_SECOND), step_ms=5, full_run=False
        )


async def drain(sandbox: SandboxHandle, tmp_path: Path, **options: Any) -> tuple[Daemon, int]:
    """Run the daemon from the beginning until the file holds every entry; returns the
    daemon and how many /logs requests it made."""
    expected = len(sandbox_ids(sandbox))
    api = options.pop("api", {})
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, api=api, **options)
    sandbox.world.reset_stats()
    daemon = await run_daemon_until(settings, lambda: count_lines(output) >= expected)
    assert [entry["id"] for entry in read_jsonl(output)] == sandbox_ids(sandbox)
    return daemon, sandbox.world.stats.logs_requests


async def test_a_sparse_backlog_costs_about_one_request_per_page(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Five bursts a day apart, at the default request rate, cost about one request per
    page of data, not one per stretch of quiet time."""
    lay_out(sandbox, DAY_OF_CLUSTERS, 1000)
    pages = 5000 // 500
    _daemon, requests = await drain(sandbox, tmp_path, api={"max_requests_per_second": 5})
    assert requests <= 1.5 * pages + 4


@pytest.mark.sandbox_options(latency=0.1)
async def test_parallel_backfill_over_gaps_costs_what_the_data_holds_not_its_span(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Against a slow API (parallel windows), five bursts cost requests bounded by their
    pages and gaps, whether they lie within a day or a year: empty time is crossed in one
    seek per gap, never one request per stretch of it."""
    pages, gaps, parallelism = 5000 // 200, 5, 16
    for span in (1, 365):
        sandbox.world.store.clear()
        lay_out(sandbox, [age * span for age in DAY_OF_CLUSTERS], 1000)
        _daemon, requests = await drain(sandbox, tmp_path / str(span), page_size=200)
        assert requests <= pages + gaps * (parallelism + 1) + 4


@pytest.mark.parametrize("latency", [0.0, 0.1], ids=["sequential", "parallel"])
async def test_no_request_goes_inside_a_retry_after_window(
    sandbox: SandboxHandle, tmp_path: Path, latency: float
) -> None:
    """An API that answers every sixth request 429 Retry-After: 1, and refuses whoever comes
    back early, sees no early request, sequential or in parallel, and every entry arrives."""
    sandbox.world.update_options({"fault_429_every": 6, "retry_after": 1, "latency": latency})
    lay_out(sandbox, [HOUR], 3000)
    _daemon, _requests = await drain(sandbox, tmp_path, page_size=250)
    assert sandbox.world.stats.requests_before_retry_after == 0


async def test_entries_newer_than_the_newest_delivered_arrive_however_late_they_appear(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """After an hour-old backlog is delivered, entries stamped after its newest one (but
    still an hour old) that appear only now are delivered too, with lookback 0."""
    lay_out(sandbox, [HOUR], 600)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, lookback=0, poll_interval=0.1)
    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: count_lines(output) >= 600)
        newest = max(entry.ts_ns for entry in sandbox.world.store.entries)
        # Quiet polls first: the stream has read through "now" before the late ones appear.
        requests = daemon.pollers[0].health.requests
        await wait_for(lambda: daemon.pollers[0].health.requests >= requests + 3)
        sandbox.world.generate(100, timestamp_ns=newest + NS_PER_SECOND, step_ms=1)
        await wait_for(lambda: count_lines(output) >= 700)
        daemon.request_stop()
    assert [entry["id"] for entry in read_jsonl(output)] == sandbox_ids(sandbox)


async def test_a_cursor_that_never_advances_is_reported_and_polling_recovers(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Full pages answered with the same cursor forever: the stream is reported unhealthy
    (readiness, metric), each retry waits longer than the last instead of spinning, and
    once the API behaves every entry arrives once."""
    sandbox.world.generate(1000, step_ms=1, full_run=False)
    sandbox.world.update_options({"fault_stuck_cursor": "same"})
    output = tmp_path / "out.jsonl"
    api = {"backoff_initial": 0.2, "backoff_max": 2.0}
    settings = settings_for(sandbox, tmp_path / "state", output, page_size=100, api=api)
    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: bool(daemon.pollers) and daemon.pollers[0].health.stalled)
        problems = daemon.readiness_problems()
        assert any(
            problem.startswith("stream all: the API answered a page cursor with the same")
            for problem in problems
        ), problems
        metrics = (await daemon.render_metrics()).decode()
        assert 'runflow_tail_stream_healthy{stream="all"} 0.0' in metrics
        assert 'runflow_tail_cursor_stalls_total{stream="all"}' in metrics
        # Watched for three seconds: backing off (0.2, 0.4, 0.8, 1.6 s at most, two
        # requests a try) makes a handful of requests; a hot loop, dozens.
        before = sandbox.world.stats.logs_requests
        await anyio.sleep(3.0)
        stalled_requests = sandbox.world.stats.logs_requests - before
        sandbox.world.update_options({"fault_stuck_cursor": None})
        await wait_for(lambda: count_lines(output) >= 1000)
        await wait_for(lambda: not daemon.pollers[0].health.stalled)
        daemon.request_stop()
    assert stalled_requests <= 20
    assert [entry["id"] for entry in read_jsonl(output)] == sandbox_ids(sandbox)
