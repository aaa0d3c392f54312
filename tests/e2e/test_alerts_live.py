"""Alerts against a live sandbox world with failing runs: latency, exactness, SIGKILL."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from runflow_tail.sandbox import SandboxHandle, SandboxThread, World
from runflow_tail.service.daemon import Daemon

from tests.support.alerts import (
    ALL,
    FAILED,
    PATHS,
    ROUTING_KEY,
    alert_settings,
    run_until,
    runs_alerted,
    settled,
)
from tests.support.harness import DaemonProcess, wait_for_sync
from tests.support.receivers import AlertReceiver, running_alert_receiver

POLL_INTERVAL = 1.0
FAILURE_LINES = "NOT run.failure_code:null"
"""A server-side filter the current run schema can answer: only lines logged with the
failure carry a failure_code."""
LIVE_WORLD: dict[str, Any] = {
    "world_rate": 3.0,
    "world_seed": 5,
    "world_run_seconds": 1.5,
    "world_lines_per_run": 6,
    "world_fail_ratio": 0.4,
    "world_cancel_ratio": 0.1,
    "world_partial_ratio": 0.1,
    "timestamp_style": "z",
}
ACTIVE = ("queued", "dispatching", "running")


def failed_runs(world: World) -> list[str]:
    return [run.id for run in list(world.runs.values()) if run.status_code == "failed"]


def all_ended(world: World) -> bool:
    return all(run.status_code not in ACTIVE for run in list(world.runs.values()))


def failure_visible_at(world: World, run_id: str) -> int:
    """When the run's failure line became visible in the API (epoch ns)."""
    entries = world.store.by_run[run_id]
    return min(e.visible_at for e in entries if e.mapping()["message"].startswith("Run failed"))


@pytest.mark.anyio
@pytest.mark.sandbox_options(**LIVE_WORLD)
async def test_every_failed_run_alerts_once_per_destination_within_two_poll_intervals(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    """A live world (40% of runs fail): every failed run reaches every destination exactly
    once, within 2 x poll_interval of its failure line becoming visible; no other run
    does. Entries are fetched without `run`, so this also exercises the run fetches."""
    world = sandbox.world
    rule = {"name": "failed-runs", "match": FAILED, "destinations": list(ALL)}
    started_ns = time.time_ns()
    stopped: list[bool] = []

    async def progress(daemon: Daemon) -> bool:
        if not stopped:
            if len(failed_runs(world)) < 8:
                return False
            world.update_options({"world_rate": 0.0})
            stopped.append(True)
        if not all_ended(world):
            return False
        wanted = failed_runs(world)
        done = all(
            set(runs_alerted(receiver, d, wanted)) == set(wanted) for d in ALL
        ) and await settled(daemon)
        return done

    with running_alert_receiver() as receiver:
        settings = alert_settings(
            sandbox, tmp_path, receiver, [rule], poll_interval=POLL_INTERVAL, lookback=2
        )
        await run_until(settings, progress, timeout=60)
    assert receiver.all_problems() == []
    everything = list(world.runs)
    failed = failed_runs(world)
    latencies: dict[str, list[float]] = {}
    for destination in ALL:
        assert runs_alerted(receiver, destination, everything) == dict.fromkeys(failed, 1)
        requests = receiver.accepted(PATHS[destination])
        assert len(requests) == len(failed)
        for run_id in failed:
            visible = failure_visible_at(world, run_id)
            if visible < started_ns:
                continue  # failed before the daemon started: no latency to speak of
            arrived = next(r.wall_ns for r in requests if run_id.encode() in r.body)
            latencies.setdefault(destination, []).append((arrived - visible) / 1e9)
    report = {
        d: f"max {max(v):.3f}s median {statistics.median(v):.3f}s (n={len(v)})"
        for d, v in latencies.items()
    }
    print(f"\nalert latency after the failure line became visible: {report}")
    assert all(max(v) <= 2 * POLL_INTERVAL for v in latencies.values()), report


def _config(sandbox: SandboxThread, receiver: AlertReceiver, tmp_path: Path) -> Path:
    fast = "backoff_initial = 0.05\nbackoff_max = 0.5\n"
    config = tmp_path / "alerts.toml"
    config.write_text(
        f"""
[api]
base_url = "{sandbox.url}"
max_requests_per_second = 200
backoff_initial = 0.05
backoff_max = 0.5

[state]
dir = "{tmp_path / "state"}"

[server]
enabled = false

[[streams]]
name = "failures"
query = "{FAILURE_LINES}"
start_at = "beginning"
poll_interval = 0.5
lookback = 1

[sinks.slack]
type = "slack"
webhook_url = "{receiver.url("slack")}"
{fast}
[sinks.discord]
type = "discord"
webhook_url = "{receiver.url("discord")}"
{fast}
[sinks.pager]
type = "pagerduty"
routing_key = "{ROUTING_KEY}"
url = "{receiver.url("pagerduty")}"
{fast}
[sinks.hook]
type = "webhook"
url = "{receiver.url("hook")}"
batch = false
{fast}
[[alerts]]
name = "failed-runs"
match = "{FAILED}"
destinations = ["slack", "discord", "pager", "hook"]
"""
    )
    return config


@pytest.mark.slow
@pytest.mark.parametrize("sandbox_thread", [{**LIVE_WORLD, "world_rate": 4.0}], indirect=True)
def test_a_sigkill_and_restart_re_sends_no_alert_and_loses_none(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """The daemon (a subprocess) is SIGKILLed while failures keep coming and restarted:
    every failed run is alerted to every destination, and no run gets a second alert (at
    most the one request in flight at the kill goes out again, with the same alert id)."""
    world = sandbox_thread.world
    env = {"RUNFLOW_API_KEY": sandbox_thread.api_key}
    with running_alert_receiver() as receiver:
        config = _config(sandbox_thread, receiver, tmp_path)
        first = DaemonProcess(config, tmp_path / "first.log", env=env).start()
        try:
            wait_for_sync(lambda: all(len(receiver.accepted(PATHS[d])) >= 3 for d in ALL))
            first.kill()
            at_kill = len(failed_runs(world))
            wait_for_sync(lambda: len(failed_runs(world)) >= at_kill + 3)
        finally:
            first.stop()
        second = DaemonProcess(config, tmp_path / "second.log", env=env).start()
        try:
            wait_for_sync(lambda: len(failed_runs(world)) >= at_kill + 6)
            sandbox_thread.patch_options(world_rate=0.0)
            wait_for_sync(lambda: all_ended(world), timeout=30)
            failed = failed_runs(world)
            wait_for_sync(
                lambda: all(set(runs_alerted(receiver, d, failed)) == set(failed) for d in ALL)
            )
            assert second.terminate() == 0
        finally:
            second.stop()
    assert receiver.all_problems() == []
    for destination in ALL:
        counts = runs_alerted(receiver, destination, list(world.runs))
        assert set(counts) == set(failed), destination
        assert sum(counts.values()) - len(failed) <= 1, (destination, counts)
    alert_ids: dict[str, set[str]] = {}
    for request in receiver.accepted("hook"):
        doc = request.json()
        alert_ids.setdefault(doc["run"]["id"], set()).add(doc["id"])
    assert all(len(ids) == 1 for ids in alert_ids.values())
    keys = Counter(r.json()["dedup_key"] for r in receiver.accepted("pagerduty"))
    assert len(keys) == len(failed)
