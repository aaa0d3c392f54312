"""The README's failed-run rule, copied as written, against both versions of the run."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from runflow_tail.config.model import Settings
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sinks.alerting import describe_duration

from tests.support.alerts import at, play, run_until, runs_alerted, settled
from tests.support.harness import REPO, settings_for
from tests.support.receivers import running_alert_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox_options(timestamp_style="z")]
OUTCOMES = ("failed", "succeeded", "failed", "canceled", "partial_succeeded", "failed")


def readme_alert_config() -> dict[str, Any]:
    """The first TOML block of the README's "Alert on failed runs" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Alert on failed runs") :]
    start = section.index("```toml\n") + len("```toml\n")
    return tomllib.loads(section[start : section.index("```", start)])


@pytest.mark.parametrize("schema", ["current", "older"])
async def test_the_readme_rule_alerts_each_failed_run_once_with_its_failure_line_end_and_duration(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path, schema: str
) -> None:
    """With the API serving the current run (no status_code) or the older one, the README's
    rule posts one Slack message per failed run and none for the others, quoting the
    failure line (not a line logged before it), with the run's end and duration."""
    sandbox.world.update_options({"run_schema": schema})
    played = [
        await play(sandbox_client, status_code=outcome, lines=5, timestamp=at(60 - i))
        for i, outcome in enumerate(OUTCOMES)
    ]
    failed = [
        run["id"] for run, outcome in zip(played, OUTCOMES, strict=True) if outcome == "failed"
    ]
    config = readme_alert_config()
    with running_alert_receiver() as receiver:
        config["sinks"]["slack"]["webhook_url"] = receiver.url("slack")
        base = settings_for(sandbox, tmp_path / "state", tmp_path / "unused.jsonl").model_dump()
        # Only the harness's own settings are added: where to start, how often to poll.
        stream = {**config["streams"][0], "start_at": "beginning", "poll_interval": 0.2}
        settings = Settings.model_validate({**base, **config, "streams": [stream]})
        await run_until(settings, lambda d: len(receiver.accepted("slack")) >= 3 and settled(d))
    assert receiver.all_problems() == []
    everyone = [run["id"] for run in played]
    assert runs_alerted(receiver, "slack", everyone) == dict.fromkeys(failed, 1)
    for request in receiver.accepted("slack"):
        (run_id,) = [run_id for run_id in failed if run_id.encode() in request.body]
        run = (await sandbox_client.get(f"/v1/runs/{run_id}")).json()
        message = request.json()
        header = message["blocks"][0]["text"]["text"]
        fields = [field["text"] for field in message["blocks"][2]["fields"]]
        quoted = message["blocks"][3]["text"]["text"]
        failure_line = next(log for log in run["logs"] if log["message"].startswith("Run failed"))
        assert (
            quoted
            == f"*Log lines*\n```{failure_line['timestamp']} error {failure_line['message']}```"
        )
        assert f"*Ended*\n{run['completed_at']}" in fields
        assert f"*Duration*\n{describe_duration(run['duration_ms'] / 1000)}" in fields
        assert "*Outcome*\nfailed" in fields
        if schema == "current":
            assert header == f":rotating_light: Run of {run['model']['name']} failed: NODE_TIMEOUT"
            assert message["blocks"][1]["text"]["text"] == run["failure_message"]
        else:
            assert header == f":rotating_light: Run of flow {run['flow_id']} failed"
            assert message["blocks"][1]["text"]["text"] == failure_line["message"]
