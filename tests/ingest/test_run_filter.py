"""Server-side filters on run fields are verified at start, and fall back to filtering here
when the API's runs lack a field they name."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from runflow_tail.sandbox import SandboxHandle
from structlog.testing import capture_logs

from tests.support.harness import read_jsonl, run_daemon_until, sandbox_ids, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox_options(timestamp_style="z")]
QUERY = "level_code:error AND run.status_code:failed"


async def _play(sandbox: SandboxHandle, *outcomes: str) -> list[str]:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        played = [
            (await client.post("/_sandbox/runs", json={"status_code": o, "lines": 4})).json()
            for o in outcomes
        ]
    return [run["run"]["id"] for run in played]


async def test_a_filter_on_a_run_field_the_api_lacks_is_applied_here_and_said_loudly(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Current schema, query on run.status_code: the stream logs an error naming the field,
    polls without the query, and delivers every error line (each failed run's failure line
    among them) instead of nothing."""
    ids = await _play(sandbox, "failed", "succeeded", "failed", "canceled")
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, query=QUERY)
    wanted = sandbox_ids(sandbox, "level_code:error")
    with capture_logs() as logs:
        await run_daemon_until(settings, lambda: len(read_jsonl(output)) >= len(wanted))
    delivered = read_jsonl(output)
    assert [entry["id"] for entry in delivered] == wanted
    failure_lines = [e for e in delivered if e["message"].startswith("Run failed: ")]
    assert sorted(e["run_id"] for e in failure_lines) == sorted([ids[0], ids[2]])
    (warning,) = [log for log in logs if log["event"] == "stream.run_filter_not_trusted"]
    assert warning["log_level"] == "error" and "run.status_code" in warning["reason"]
    queries = sandbox.world.stats.recent_logs_queries
    assert all("run.status_code" not in query.get("q", "") for query in queries)


@pytest.mark.sandbox_options(run_schema="older", timestamp_style="z")
async def test_a_filter_on_a_run_field_the_api_has_stays_on_the_server(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Older schema, same query: verified against one run, then filtered by the API, so
    only the failed runs' error lines travel."""
    await _play(sandbox, "failed", "succeeded", "failed")
    output = tmp_path / "out.jsonl"
    settings = settings_for(sandbox, tmp_path / "state", output, query=QUERY)
    wanted = sandbox_ids(sandbox, QUERY)
    with capture_logs() as logs:
        await run_daemon_until(settings, lambda: len(read_jsonl(output)) >= len(wanted))
    assert [entry["id"] for entry in read_jsonl(output)] == wanted and len(wanted) == 2
    assert any(log["event"] == "stream.run_filter_verified" for log in logs)
    queries = [q.get("q", "") for q in sandbox.world.stats.recent_logs_queries]
    assert sum("run.status_code:failed" in q for q in queries) >= 2
