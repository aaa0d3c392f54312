"""A rule naming run fields the API's runs do not have is not silent."""

from __future__ import annotations

from pathlib import Path

import pytest
from runflow_tail.alerts.field_watch import ABSENT_RUNS, FieldWatch
from runflow_tail.journal import JournalStore
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sandbox.simulator import play_instantly
from runflow_tail.service.daemon import Daemon
from runflow_tail.service.status import snapshot
from structlog.testing import capture_logs

from tests.support.alerts import alert_engine, alert_settings, run_until, settled
from tests.support.receivers import running_alert_receiver

OLD_RULE = {
    "name": "failed-runs",
    "match": "run.status_code:failed",
    "text": "{run.failure_message}",
    "destinations": ["hook"],
}


@pytest.mark.anyio
@pytest.mark.sandbox_options(timestamp_style="z")
async def test_a_rule_on_a_field_no_run_has_warns_once_and_shows_in_readiness_and_status(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """Current schema, match on run.status_code: after ten runs without the field the rule
    logs one warning naming it and run.outcome, /readyz lists it, and `status` shows it
    (the rule never alerts, which is the silence this reports)."""
    for index in range(ABSENT_RUNS + 2):
        play_instantly(sandbox.world, outcome="failed" if index % 2 else "succeeded")
    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [OLD_RULE])
        problems: list[str] = []

        async def reported(daemon: Daemon) -> bool:
            engine = alert_engine(daemon)
            if engine is None or not await settled(daemon):
                return False
            problems.extend(daemon.readiness_problems())
            return True

        with capture_logs() as logs:
            await run_until(settings, reported)
    assert receiver.requests == []
    warnings = [log for log in logs if log["event"] == "alerts.rule_fields_missing"]
    assert len(warnings) == 1 and warnings[0]["rule"] == "failed-runs"
    assert "run.status_code" in warnings[0]["problem"] and "run.outcome" in warnings[0]["problem"]
    (problem,) = problems
    assert problem.startswith("alert rule failed-runs: run.status_code is not in any of the last")
    assert settings.state.dir is not None
    store = JournalStore(settings.state.dir / "journal.sqlite3")
    (shown,) = snapshot(store, settings, settings.state.dir)["alert_problems"]
    assert shown["rule"] == "failed-runs" and "run.status_code" in shown["problem"]


def test_a_field_seen_again_clears_the_problem_and_each_run_counts_once() -> None:
    """Lines of one run count as one run; a run that has the field clears the problem."""
    watch = FieldWatch("r", ["status_code", "outcome"])
    for _ in range(ABSENT_RUNS * 3):
        assert not watch.observe("same-run", {"id": "same-run"})
    changed = [watch.observe(f"run-{i}", {"id": i}) for i in range(1, ABSENT_RUNS - 1)]
    assert not any(changed) and watch.problem is None
    assert watch.observe("run-last", {}) and "run.status_code" in str(watch.problem)
    assert "run.outcome" not in str(watch.problem).split(" is not in")[0]
    assert watch.observe("run-older", {"status_code": "running"}) and watch.problem is None
