"""Alert rules end to end, in-process: the sandbox plays runs and log lines, the daemon
alerts, and one local receiver plays Slack, Discord, PagerDuty and a webhook, checking
every payload against what the real service accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.service.daemon import Daemon, RunOptions
from runflow_tail.times import NS_PER_SECOND, format_instant, now_ns

from tests.support.alerts import (
    ALL,
    FAILED,
    PATHS,
    alert_engine,
    alert_settings,
    at,
    play,
    run_until,
    runs_alerted,
    settled,
)
from tests.support.receivers import running_alert_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox_options(timestamp_style="z")]


async def test_every_failed_run_alerts_once_per_destination_and_no_other_run_does(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Four failed runs among succeeded and canceled ones, entries fetched without `run`:
    each destination gets exactly one valid alert per failed run and nothing else."""
    outcomes = ["failed", "succeeded", "failed", "canceled", "succeeded", "failed", "failed"]
    runs = [
        await play(sandbox_client, status_code=outcome, timestamp=at(60 - i))
        for i, outcome in enumerate(outcomes)
    ]
    failed = [run["id"] for run, outcome in zip(runs, outcomes, strict=True) if outcome == "failed"]
    with running_alert_receiver() as receiver:
        rule = {"name": "failed-runs", "match": FAILED, "destinations": list(ALL)}
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(
            settings,
            lambda d: all(len(receiver.accepted(PATHS[x])) >= 4 for x in ALL) and settled(d),
        )
    assert receiver.all_problems() == []
    every = [run["id"] for run in runs]
    for destination in ALL:
        assert runs_alerted(receiver, destination, every) == dict.fromkeys(failed, 1), destination
        assert len(receiver.accepted(PATHS[destination])) == 4
    docs = [request.json() for request in receiver.accepted("hook")]
    assert {doc["run"]["id"] for doc in docs} == set(failed)
    assert {doc["run"]["failure_code"] for doc in docs} == {"NODE_TIMEOUT"}
    assert all(doc["kind"] == "alert" and doc["rule"] == "failed-runs" for doc in docs)


async def test_alerts_carry_run_context_fetched_once_per_run(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A stream of failed runs' lines without `run`: each alert has the run's outcome, ids,
    model name, failure, end, duration and its failure line, and each run was fetched from
    the API once."""
    failures = [("MODEL_ERROR", "Model provider returned 500"), ("NO_WORKER", "No worker")]
    runs = [
        await play(
            sandbox_client,
            status_code="failed",
            lines=6,
            failure_code=code,
            failure_message=message,
            timestamp=at(30 - i),
        )
        for i, (code, message) in enumerate(failures)
    ]
    await play(sandbox_client, status_code="succeeded", timestamp=at(10))
    with running_alert_receiver() as receiver:
        rule = {"name": "failed", "match": FAILED, "destinations": ["hook"], "lines": 3}
        # The current API has no run.status_code to filter on; run.failure_code it has.
        query = "NOT run.failure_code:null"
        settings = alert_settings(sandbox, tmp_path, receiver, [rule], query=query)
        daemon = await run_until(
            settings, lambda d: len(receiver.accepted("hook")) >= 2 and settled(d)
        )
    engine = alert_engine(daemon)
    assert engine is not None and engine.context.fetches == 2
    stats = sandbox.world.stats
    assert stats.requests_total - stats.logs_requests == 2
    docs = {doc["run"]["id"]: doc for doc in (r.json() for r in receiver.accepted("hook"))}
    for run, (code, message) in zip(runs, failures, strict=True):
        context = docs[run["id"]]["run"]
        assert context["outcome"] == "failed" and context["status_code"] is None
        assert context["failure_code"] == code and context["failure_message"] == message
        assert context["flow_id"] == run["flow_id"] and context["model_id"] == run["model_id"]
        assert context["model"]["name"] == run["model"]["name"]
        assert context["started_at"] and context["completed_at"] == run["completed_at"]
        assert context["duration_seconds"] == run["duration_ms"] / 1000
        lines = docs[run["id"]]["lines"]
        assert len(lines) == 1 and lines[0]["message"] == f"Run failed: {message}"
        assert docs[run["id"]]["title"] == f"Run of {run['model']['name']} failed: {code}"


async def test_threshold_fires_only_for_matches_within_the_window(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """threshold = 3 in a 10 s window (entry time): 3 errors in 2 s fire; errors at 0, 6 and
    12 s do not until a fourth at 13 s; two errors never do."""
    t0 = now_ns() - 300 * NS_PER_SECOND

    def errors(run_id: str, *offsets: float) -> list[dict[str, Any]]:
        return [
            {
                "run_id": run_id,
                "level_code": "error",
                "message": f"error at +{offset:g}s",
                "timestamp": format_instant(t0 + int(offset * NS_PER_SECOND)),
            }
            for offset in offsets
        ]

    world = sandbox.world
    runs = {name: world.start_run().id for name in ("burst", "spread", "pair")}
    world.append(errors(runs["burst"], 0, 1, 2) + errors(runs["spread"], 0, 6, 12))
    world.append(errors(runs["pair"], 3, 4) + errors(runs["spread"], 13))
    rule = {
        "name": "error-bursts",
        "match": "level_code:error",
        "threshold": 3,
        "window": "10s",
        "destinations": ["hook"],
    }
    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(settings, lambda d: len(receiver.accepted("hook")) >= 2 and settled(d))
    docs = {doc["group"]["run_id"]: doc for doc in (r.json() for r in receiver.accepted("hook"))}
    assert set(docs) == {runs["burst"], runs["spread"]}
    spread = docs[runs["spread"]]
    assert [line["message"] for line in spread["lines"]] == [
        "error at +6s",
        "error at +12s",
        "error at +13s",
    ]
    assert spread["counts"]["matches"] == 3
    assert spread["first_match_at"] == format_instant(t0 + 6 * NS_PER_SECOND)


async def test_cooldown_suppresses_repeats_and_counts_them_in_the_next_alert(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """cooldown = 60 s: errors at 0, 10, 30, 61 and 70 s alert at 0 and at 61 s, and the
    second alert says two were suppressed."""
    t0 = now_ns() - 300 * NS_PER_SECOND
    run_id = sandbox.world.start_run().id
    sandbox.world.append(
        [
            {
                "run_id": run_id,
                "level_code": "error",
                "message": f"error at +{offset}s",
                "timestamp": format_instant(t0 + offset * NS_PER_SECOND),
            }
            for offset in (0, 10, 30, 61, 70)
        ]
    )
    rule = {
        "name": "errors",
        "match": "level_code:error",
        "cooldown": "60s",
        "destinations": ["hook"],
    }
    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(settings, lambda d: len(receiver.accepted("hook")) >= 2 and settled(d))
    docs = [request.json() for request in receiver.accepted("hook")]
    assert [doc["lines"][0]["message"] for doc in docs] == ["error at +0s", "error at +61s"]
    assert docs[1]["counts"] == {"matches": 1, "suppressed": 2, "total": 4}


async def test_digest_sends_one_message_per_period_listing_its_alerts(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """digest = 1s: three failed runs arrive as one message per destination listing three
    runs; a fourth, later, as a second message of its own, sent by the clock alone."""
    from runflow_tail.sandbox.simulator import play_instantly

    world = sandbox.world
    first = [play_instantly(world, outcome="failed").id for _ in range(3)]
    later: list[str] = []
    destinations = ("slack", "pager", "hook")
    rule = {"name": "failures", "match": FAILED, "digest": "1s", "destinations": destinations}

    def progress(daemon: Daemon) -> bool:
        if not later and all(receiver.accepted(PATHS[x]) for x in destinations):
            later.append(play_instantly(world, outcome="failed").id)
        return bool(later) and all(len(receiver.accepted(PATHS[x])) >= 2 for x in destinations)

    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(settings, progress)
    assert receiver.all_problems() == []
    for destination in destinations:
        requests = receiver.accepted(PATHS[destination])
        assert len(requests) == 2
        assert runs_alerted(receiver, destination, first + later) == dict.fromkeys(first + later, 1)
        assert all(run_id.encode() in requests[0].body for run_id in first)
    digests = [request.json() for request in receiver.accepted("hook")]
    assert [d["kind"] for d in digests] == ["digest", "digest"]
    assert [d["counts"]["alerts"] for d in digests] == [3, 1]
    slack = receiver.accepted("slack")[0].json()
    assert slack["blocks"][0]["text"]["text"].startswith("3 alerts for failures")


async def test_pagerduty_gets_trigger_and_resolve_pairs_with_a_stable_dedup_key(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Grouped by flow: a flow's failure triggers, its repeat folds into the cooldown, its
    next success resolves with the same dedup_key, and a failure after that triggers anew;
    another flow's success resolves nothing."""
    plan = [(0, "failed"), (0, "failed"), (1, "succeeded"), (0, "succeeded"), (0, "failed")]
    plan.append((1, "failed"))
    for i, (flow, outcome) in enumerate(plan):
        await play(sandbox_client, status_code=outcome, flow=flow, timestamp=at(60 - i))
    flows = [flow.id for flow in sandbox.world.flows[:2]]
    rule = {
        "name": "flow-health",
        "match": FAILED,
        "resolve_match": "run.outcome:succeeded",
        "group_by": ["run.flow_id"],
        "destinations": ["pager", "slack"],
    }
    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(settings, lambda d: len(receiver.accepted("pagerduty")) >= 4 and settled(d))
    assert receiver.all_problems() == []
    events = [request.json() for request in receiver.accepted("pagerduty")]
    actions = [
        (event["event_action"], event.get("payload", {}).get("component")) for event in events
    ]
    names = [sandbox.world.flows[i].model["name"] for i in (0, 0, 0, 1)]
    assert actions == [
        ("trigger", names[0]),
        ("resolve", None),
        ("trigger", names[2]),
        ("trigger", names[3]),
    ]
    keys = [event["dedup_key"] for event in events]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert events[3]["payload"]["custom_details"]["group"] == {"run.flow_id": flows[1]}
    slack_headers = [r.json()["blocks"][0]["text"]["text"] for r in receiver.accepted("slack")]
    assert slack_headers[1] == "Resolved: flow-health"


async def test_a_restart_neither_re_alerts_nor_forgets_an_open_incident(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """After a trigger and a restart, the same failure is not sent again, a repeat within the
    cooldown stays quiet, and the flow's next success resolves the incident."""
    await play(sandbox_client, status_code="failed", flow=0, timestamp=at(60))
    rule = {
        "name": "flow-health",
        "match": FAILED,
        "resolve_match": "run.outcome:succeeded",
        "group_by": ["run.flow_id"],
        "destinations": ["pager"],
    }
    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(settings, lambda d: bool(receiver.accepted("pagerduty")) and settled(d))
        await play(sandbox_client, status_code="failed", flow=0, timestamp=at(50))
        await play(sandbox_client, status_code="succeeded", flow=0, timestamp=at(40))
        await run_until(settings, lambda d: len(receiver.accepted("pagerduty")) >= 2 and settled(d))
    events = [request.json() for request in receiver.accepted("pagerduty")]
    assert [event["event_action"] for event in events] == ["trigger", "resolve"]
    assert events[0]["dedup_key"] == events[1]["dedup_key"]


async def test_an_entry_that_two_watched_streams_hold_counts_once(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Streams `all` and `failures` both journal each failure line; a rule watching both,
    without a cooldown, still alerts once per failed run."""
    failed = [
        (await play(sandbox_client, status_code="failed", timestamp=at(9 - i)))["id"]
        for i in range(3)
    ]
    rule = {"name": "failed", "match": FAILED, "cooldown": 0, "destinations": ["pager"]}
    with running_alert_receiver() as receiver:
        settings = alert_settings(
            sandbox,
            tmp_path,
            receiver,
            [rule],
            more_streams=({"name": "failures", "query": "NOT run.failure_code:null"},),
        )
        await run_until(settings, lambda d: len(receiver.accepted("pagerduty")) >= 3 and settled(d))
    assert runs_alerted(receiver, "pager", failed) == dict.fromkeys(failed, 1)
    assert len(receiver.accepted("pagerduty")) == 3


async def test_a_rule_added_by_reload_starts_at_the_journal_end(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A failure journaled before a reload added the rule is history and is not alerted;
    the next failure is."""
    old = await play(sandbox_client, status_code="failed", timestamp=at(30))
    rule = {"name": "failed", "match": FAILED, "destinations": ["pager"]}
    with running_alert_receiver() as receiver:
        before = alert_settings(sandbox, tmp_path, receiver, [])
        after = alert_settings(sandbox, tmp_path, receiver, [rule])
        assert before.state.dir is not None
        options = RunOptions(handle_signals=False, reload=lambda: after)
        daemon = Daemon(before, before.state.dir, options)
        new: list[str] = []

        async def script() -> None:
            with anyio.fail_after(20):
                while not (daemon.pollers and daemon.pollers[0].health.caught_up.is_set()):
                    await anyio.sleep(0.05)
                await daemon.reload()
                new.append((await play(sandbox_client, status_code="failed"))["id"])
                while not (receiver.accepted("pagerduty") and await settled(daemon)):
                    await anyio.sleep(0.05)
            daemon.request_stop("test done")

        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            tg.start_soon(script)
    assert runs_alerted(receiver, "pager", [old["id"], *new]) == {new[0]: 1}


async def test_a_pending_digest_survives_a_restart(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Stopped while a digest is collecting, the daemon sends it after the restart, with
    every alert it had collected."""
    failed = [(await play(sandbox_client, status_code="failed"))["id"] for _ in range(2)]
    rule = {"name": "failed", "match": FAILED, "digest": "3s", "destinations": ["hook"]}
    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])

        async def collecting(daemon: Daemon) -> bool:
            journal, engine = daemon.journal, alert_engine(daemon)
            if journal is None or engine is None or not await settled(daemon):
                return False
            return bool(await journal._run(journal._store.load_alert_state))

        await run_until(settings, collecting)
        assert receiver.requests == []
        await run_until(settings, lambda d: bool(receiver.accepted("hook")))
    (digest,) = [request.json() for request in receiver.accepted("hook")]
    assert digest["kind"] == "digest" and digest["counts"]["alerts"] == 2
    assert {item["run"]["id"] for item in digest["items"]} == set(failed)
