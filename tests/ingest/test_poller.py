"""The tail engine in-process against the sandbox: every documented variant delivers everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr
from runflow_tail.sandbox import SandboxHandle, ScriptedFault

from tests.support.harness import (
    count_lines,
    read_jsonl,
    run_daemon_until,
    sandbox_ids,
    settings_for,
    wait_for,
)
from tests.support.sandbox import generate

pytestmark = pytest.mark.anyio


async def _generate(sandbox: SandboxHandle, count: int, **spec: Any) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        await generate(client, count, **spec)


async def test_backlog_arrives_once_in_timestamp_order(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A backlog from start_at=beginning reaches the file exactly once, in (timestamp, id) order."""
    await _generate(sandbox, 3000, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output)
    await run_daemon_until(settings, lambda: count_lines(output) >= 3000)
    ids = [entry["id"] for entry in read_jsonl(output)]
    assert ids == sandbox_ids(sandbox)


def _stats(sandbox: SandboxHandle) -> dict[str, Any]:
    return sandbox.world.stats_document()


@pytest.mark.parametrize("cursor_field", ["next", "next_pq"])
@pytest.mark.parametrize("cursor_form", ["token", "query", "url"])
async def test_every_cursor_variant_delivers_everything(
    sandbox: SandboxHandle, tmp_path: Path, cursor_field: str, cursor_form: str
) -> None:
    """Both cursor field names and all three cursor forms page through the whole backlog."""
    sandbox.world.options = sandbox.world.options.updated(
        {"cursor_field": cursor_field, "cursor_form": cursor_form}
    )
    await _generate(sandbox, 1000, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, page_size=100)
    await run_daemon_until(settings, lambda: count_lines(output) >= 1000)
    ids = [entry["id"] for entry in read_jsonl(output)]
    assert ids == sandbox_ids(sandbox)


# Whole-precision timestamps: a truncated one can sort behind the cursor, which this
# strategy cannot see (README, "State and guarantees").
@pytest.mark.sandbox_options(reject_timestamp_range=True, timestamp_style="z")
async def test_auto_strategy_falls_back_to_cursor_when_ranges_are_rejected(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """When the API rejects range filters, `auto` follows the cursor and still gets everything,
    including entries that arrive while it runs."""
    from runflow_tail.times import now_ns

    await _generate(sandbox, 700, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, page_size=200)

    appended = False

    def progress() -> bool:
        nonlocal appended
        lines = count_lines(output)
        if lines >= 700 and not appended:
            # After the newest entry: the cursor strategy cannot see behind its cursor.
            sandbox.world.generate(450, timestamp_ns=now_ns(), step_ms=1, full_run=False)
            appended = True
        return appended and lines >= 1150

    daemon = await run_daemon_until(settings, progress)
    assert daemon.pollers[0].health.strategy == "cursor"
    ids = [entry["id"] for entry in read_jsonl(output)]
    assert ids == sandbox_ids(sandbox)


async def test_burst_sharing_one_timestamp_drains_without_looping(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """1,200 entries sharing one timestamp, page_size 500: all arrive, with few requests."""
    await _generate(sandbox, 1200, step_ms=0, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, page_size=500, poll_interval=0.5)
    daemon = await run_daemon_until(settings, lambda: count_lines(output) >= 1200)
    assert len({entry["id"] for entry in read_jsonl(output)}) == 1200
    assert count_lines(output) == 1200
    # probes (3) + one cycle of three pages; a loop would show hundreds
    assert daemon.pollers[0].health.requests <= 12


async def test_late_arrivals_within_lookback_are_delivered_once(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Entries that become visible 2 s after their timestamp arrive once with lookback = 5."""
    from runflow_tail.times import NS_PER_SECOND, format_instant, now_ns

    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, lookback=5, start_at="-1m")
    expected: list[str] = []
    rounds = 0

    def produce() -> bool:
        nonlocal rounds
        lines = count_lines(output)
        if lines >= len(expected) and rounds < 6:
            now = now_ns()
            on_time = [{"timestamp": format_instant(now), "message": f"on time {rounds}"}]
            late = [
                {"timestamp": format_instant(now - 2 * NS_PER_SECOND), "message": f"late {rounds}"}
            ]
            expected.extend(e.id for e in sandbox.world.append(on_time + late))
            rounds += 1
        return rounds == 6 and lines >= len(expected)

    await run_daemon_until(settings, produce)
    delivered = [entry["id"] for entry in read_jsonl(output)]
    assert sorted(delivered) == sorted(expected)


async def test_user_query_delivers_exactly_the_matching_entries(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A stream's query combines with the range condition: only matching entries arrive."""
    await _generate(sandbox, 300, step_ms=1, level_code="info", full_run=False)
    await _generate(sandbox, 40, step_ms=1, level_code="error", full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, query="level_code:error")
    await run_daemon_until(settings, lambda: count_lines(output) >= 40)
    entries = read_jsonl(output)
    assert [e["id"] for e in entries] == sandbox_ids(sandbox, "level_code:error")
    assert {e["level_code"] for e in entries} == {"error"}


@pytest.mark.sandbox_options(
    fault_429_rate=0.1,
    fault_5xx_rate=0.1,
    fault_malformed_rate=0.1,
    fault_drop_rate=0.1,
    latency=0.005,
    fault_seed=3,
)
async def test_random_faults_lose_nothing_and_keep_the_request_rate_bounded(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """429s, 5xx, malformed bodies and dropped connections: everything arrives, in order, with
    a bounded number of requests."""
    await _generate(sandbox, 2000, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, page_size=100)
    daemon = await run_daemon_until(settings, lambda: count_lines(output) >= 2000)
    assert [e["id"] for e in read_jsonl(output)] == sandbox_ids(sandbox)
    statuses = _stats(sandbox)["by_status"]
    assert {"429", "200"} <= set(statuses) and any(s.startswith("5") for s in statuses)
    # 20 pages; with 40% faults, retries stay within a small multiple of that
    assert daemon.pollers[0].health.requests < 80


async def test_retry_after_header_is_honoured(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """A 429 with Retry-After (seconds or an HTTP date) delays the next request that long."""
    await _generate(sandbox, 10, step_ms=1, full_run=False)
    sandbox.world.faults.extend(
        ScriptedFault(status=429, retry_after=retry_after) for retry_after in ("1", "date")
    )
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output)
    started = anyio.current_time()
    await run_daemon_until(settings, lambda: count_lines(output) >= 10)
    # "1" second, then an HTTP date about one second ahead (whole seconds: at least ~0)
    assert anyio.current_time() - started >= 1.0
    assert count_lines(output) == 10


async def test_a_wrong_key_is_reported_once_and_not_hammered(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A rejected key marks the stream unhealthy with one clear problem, and the poller waits
    (minutes) instead of retrying in a loop."""
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output)
    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"api_key": SecretStr("wrong-key")})}
    )
    daemon_holder: list[Any] = []

    def unhealthy() -> bool:
        return bool(daemon_holder) and daemon_holder[0].pollers[0].health.problem is not None

    from runflow_tail.service.daemon import Daemon, RunOptions

    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    daemon_holder.append(daemon)
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: bool(daemon.pollers) and unhealthy())
        # observe for a while: a hot loop would make dozens of requests in this time
        await anyio.sleep(1.5)
        daemon.request_stop()
    problem = daemon.pollers[0].health.problem or ""
    assert "401" in problem and "RUNFLOW_API_KEY" in problem
    assert "wrong-key" not in problem
    assert _stats(sandbox)["by_status"] == {"401": 1}


async def test_expired_cursor_mid_backlog_recovers_from_the_watermark(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A cursor the API reports as expired halfway through a backlog: the stream seeks again
    from its watermark and loses nothing."""
    sandbox.world.options = sandbox.world.options.updated({"latency": 0.005})
    await _generate(sandbox, 3000, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, page_size=100)
    state = {"expired": False}

    def scenario() -> bool:
        if count_lines(output) >= 500 and not state["expired"]:
            sandbox.world.faults.append(ScriptedFault(status=400, code="CURSOR_EXPIRED"))
            state["expired"] = True
        return count_lines(output) >= 3000

    daemon = await run_daemon_until(settings, scenario)
    assert [e["id"] for e in read_jsonl(output)] == sandbox_ids(sandbox)
    assert daemon.pollers[0].health.cursor_resets == 1
    assert _stats(sandbox)["by_status"]["400"] == 1


@pytest.mark.sandbox_options(reject_timestamp_range=True, timestamp_style="z")
async def test_cursor_strategy_reseeks_after_expiry_and_checks_for_a_gap(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """With the cursor strategy, an expired cursor re-walks from the start, finds the newest
    entry it had (no gap), and then delivers what came after, nothing twice."""
    from runflow_tail.times import now_ns

    await _generate(sandbox, 300, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, page_size=100)
    state = {"expired": False}

    def scenario() -> bool:
        if count_lines(output) >= 300 and not state["expired"]:
            sandbox.world.faults.append(ScriptedFault(status=400, code="CURSOR_EXPIRED"))
            sandbox.world.generate(50, timestamp_ns=now_ns(), step_ms=1, full_run=False)
            state["expired"] = True
        return state["expired"] and count_lines(output) >= 350

    daemon = await run_daemon_until(settings, scenario)
    assert [e["id"] for e in read_jsonl(output)] == sandbox_ids(sandbox)
    health = daemon.pollers[0].health
    assert health.cursor_resets == 1 and health.gaps_suspected == 0


async def test_whole_entries_reach_the_file_byte_for_byte(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """With fields = [] each line is exactly the bytes the API sent for that entry."""
    await _generate(sandbox, 50, step_ms=1, full_run=True)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, fields=())
    await run_daemon_until(settings, lambda: count_lines(output) >= 50)
    lines = output.read_bytes().splitlines()
    expected = [sandbox.world.store.by_id[entry_id].raw for entry_id in sandbox_ids(sandbox)]
    assert lines == expected
    assert len(lines[0]) > 2000  # the multi-KB run object came along


@pytest.mark.sandbox_options(organization_id="org-a")
async def test_organization_header_is_sent(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """api.organization_id goes out as X-Organization-Id (a different org is refused with 403)."""
    await _generate(sandbox, 5, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, api={"organization_id": "org-a"})
    await run_daemon_until(settings, lambda: count_lines(output) >= 5)
    assert "403" not in _stats(sandbox)["by_status"]


async def test_a_full_journal_pauses_polling_and_nothing_is_lost(
    sandbox: SandboxHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the journal capped far below the backlog, polling pauses when it is full, resumes
    as the sink catches up, and every entry still arrives once."""
    from runflow_tail.config.model import StateSettings

    await _generate(sandbox, 1500, step_ms=1, full_run=True)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, fields=(), page_size=100)
    settings = settings.model_copy(
        update={"state": StateSettings(dir=tmp_path / "state", max_journal_bytes=1024 * 1024)}
    )
    await run_daemon_until(settings, lambda: count_lines(output) >= 1500)
    assert [e["id"] for e in read_jsonl(output)] == sandbox_ids(sandbox)
    assert "journal.full" in capsys.readouterr().out


async def test_idle_polls_do_not_wake_the_sinks(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """Once caught up, polls that find only re-reads neither move the journal's end nor make
    the sinks look for work."""
    from runflow_tail.service.daemon import Daemon, RunOptions

    await _generate(sandbox, 20, step_ms=1, full_run=False)
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, poll_interval=0.05)
    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: count_lines(output) >= 20 and bool(daemon.deliveries))
        assert daemon.journal is not None
        end, idle_at = daemon.journal.last_seq, daemon.deliveries[0].health.idle_at_seq
        requests = daemon.pollers[0].health.requests
        await wait_for(lambda: daemon.pollers[0].health.requests >= requests + 5)
        assert daemon.journal.last_seq == end
        assert daemon.deliveries[0].health.idle_at_seq == idle_at
        daemon.request_stop()


async def test_quiet_polls_stop_re_reading_old_entries(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Once a cycle has read everything the API showed, a quiet stream's polls start at its
    newest timestamp: they re-read only the entry there, not its last burst."""
    from runflow_tail.service.daemon import Daemon, RunOptions
    from runflow_tail.times import NS_PER_SECOND, now_ns

    # a burst from 10 s ago: older than any lookback from now, newer than the stream's start
    sandbox.world.generate(
        600, timestamp_ns=now_ns() - 10 * NS_PER_SECOND, step_ms=1, full_run=False
    )
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, poll_interval=0.1, lookback=2)
    daemon = Daemon(settings, tmp_path / "state", RunOptions(handle_signals=False))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await wait_for(lambda: count_lines(output) >= 600)
        health = daemon.pollers[0].health
        received, requests = health.items_received, health.requests
        await wait_for(lambda: health.requests >= requests + 10)
        assert health.items_received - received <= health.requests - requests
        daemon.request_stop()


async def _drain_ten_minutes_behind_a_slow_api(
    sandbox: SandboxHandle, tmp_path: Path, entries: int
) -> Path:
    """``entries`` 200 ms apart from ten minutes ago, behind 50 ms a request, drained with
    pages of 100 and up to 6 windows at once; the file they went to."""
    from runflow_tail.times import NS_PER_SECOND, now_ns

    sandbox.world.options = sandbox.world.options.updated({"latency": 0.05})
    sandbox.world.generate(
        entries, timestamp_ns=now_ns() - 600 * NS_PER_SECOND, step_ms=200, full_run=False
    )
    output = tmp_path / "out.jsonl"
    settings = settings_for(
        sandbox,
        tmp_path / "state",
        output,
        page_size=100,
        backfill_parallelism=6,
        backfill_after=60,
    )
    await run_daemon_until(settings, lambda: count_lines(output) >= entries)
    return output


async def test_far_behind_streams_backfill_in_parallel_windows_in_order(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A stream ten minutes behind a slow API fetches time windows in parallel (requests
    with an upper bound on timestamp) and still journals every entry once, in order."""
    output = await _drain_ten_minutes_behind_a_slow_api(sandbox, tmp_path, 3000)
    assert [e["id"] for e in read_jsonl(output)] == sandbox_ids(sandbox)
    queries = [q.get("q", "") for q in _stats(sandbox)["recent_logs_queries"]]
    assert any("timestamp<" in q for q in queries)


async def test_a_dense_backlog_behind_a_slow_api_gets_every_window_in_the_first_round(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """The backlog's first full page proves the data dense, so the first round of windows
    is as wide as backfill_parallelism allows: a backlog of about that many windows is
    fetched all at once, not one window, then two, then three (a round trip each)."""
    output = await _drain_ten_minutes_behind_a_slow_api(sandbox, tmp_path, 600)
    assert [e["id"] for e in read_jsonl(output)] == sandbox_ids(sandbox)
    assert _stats(sandbox)["max_in_flight"] >= 6
