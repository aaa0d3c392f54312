"""The tail engine in-process against the sandbox: every documented variant delivers everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runflow_tail.sandbox import SandboxHandle

from tests.fixtures_sandbox import generate
from tests.harness import count_lines, read_jsonl, run_daemon_until, sandbox_ids, settings_for

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
# strategy cannot see (see poller.py).
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
    """1,200 entries with one identical timestamp and page_size 500 all arrive, with few requests."""
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
