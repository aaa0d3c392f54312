"""A sink's `match` and the run an entry carries."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sinks.file import FileSinkConfig

from tests.support.harness import read_jsonl, run_daemon_until, settings_for

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox_options(timestamp_style="z")]


@pytest.mark.parametrize("schema", ["current", "older"])
async def test_a_sink_match_sees_the_derived_outcome_of_the_run_an_entry_carries(
    sandbox: SandboxHandle, tmp_path: Path, schema: str
) -> None:
    """Whole entries (with their run), match = run.outcome:failed: the sink gets the
    failure lines, the only ones logged once their run had failed, in either schema."""
    sandbox.world.update_options({"run_schema": schema})
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        for outcome in ("failed", "succeeded", "failed", "partial_succeeded"):
            await client.post("/_sandbox/runs", json={"status_code": outcome})
    output = tmp_path / "out.jsonl"
    sink = FileSinkConfig(path=output, fsync="never", match="run.outcome:failed")
    settings = settings_for(sandbox, tmp_path / "state", output, fields=[], sinks={"out": sink})
    await run_daemon_until(settings, lambda: len(read_jsonl(output)) >= 2)
    delivered = read_jsonl(output)
    assert [entry["message"][:12] for entry in delivered] == ["Run failed: "] * 2
