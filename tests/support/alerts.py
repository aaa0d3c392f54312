"""Alert scenarios in-process: the sandbox plays runs, the daemon alerts, and one local
receiver plays Slack, Discord, PagerDuty and a webhook."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from runflow_tail.alerts.engine import AlertEngine
from runflow_tail.config.model import Settings
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.service.daemon import Daemon
from runflow_tail.times import NS_PER_SECOND, format_instant, now_ns

from tests.support.harness import DaemonCondition, run_daemon_until, settings_for
from tests.support.receivers import AlertReceiver

ROUTING_KEY = "R0123456789abcdef0123456789abcde"
ALL = ("slack", "discord", "pager", "hook")
PATHS = {"slack": "slack", "discord": "discord", "pager": "pagerduty", "hook": "hook"}
FAILED = "run.outcome:failed"


def destination_sinks(receiver: AlertReceiver) -> dict[str, dict[str, Any]]:
    fast = {"backoff_initial": 0.05, "backoff_max": 0.5}
    return {
        "slack": {"type": "slack", "webhook_url": receiver.url("slack"), **fast},
        "discord": {"type": "discord", "webhook_url": receiver.url("discord"), **fast},
        "pager": {
            "type": "pagerduty",
            "routing_key": ROUTING_KEY,
            "url": receiver.url("pagerduty"),
            **fast,
        },
        "hook": {"type": "webhook", "url": receiver.url("hook"), "batch": False, **fast},
    }


def alert_settings(
    sandbox: SandboxHandle,
    tmp_path: Path,
    receiver: AlertReceiver,
    rules: list[dict[str, Any]],
    *,
    more_streams: tuple[dict[str, Any], ...] = (),
    **stream: Any,
) -> Settings:
    base = settings_for(sandbox, tmp_path / "state", tmp_path / "unused.jsonl", **stream)
    data = base.model_dump()
    data["streams"] = [*data["streams"], *({**data["streams"][0], **s} for s in more_streams)]
    return Settings.model_validate({**data, "sinks": destination_sinks(receiver), "alerts": rules})


async def run_until(
    settings: Settings, condition: DaemonCondition, *, timeout: float = 20
) -> Daemon:
    """Run the daemon in-process until ``condition(daemon)`` holds, then stop it."""
    return await run_daemon_until(settings, condition, timeout=timeout)


async def settled(daemon: Daemon) -> bool:
    """Every stream caught up, the engine has seen every entry, every destination is idle."""
    journal, engine = daemon.journal, alert_engine(daemon)
    if journal is None or engine is None or not daemon.pollers:
        return False
    if not all(poller.health.caught_up.is_set() for poller in daemon.pollers):
        return False
    backlog = await journal.backlog(engine.offset, engine.streams)
    return backlog == 0 and all(d.health.idle_at_seq >= journal.last_seq for d in daemon.deliveries)


def runs_alerted(receiver: AlertReceiver, destination: str, run_ids: list[str]) -> Counter[str]:
    """How many accepted requests of a destination name each run."""
    found: Counter[str] = Counter()
    for request in receiver.accepted(PATHS[destination]):
        found.update(run_id for run_id in run_ids if run_id.encode() in request.body)
    return found


def alert_keys(
    receiver: AlertReceiver, destination: str, run_ids: list[str]
) -> dict[str, set[str]]:
    """The idempotency keys (``webhook-id``) of a webhook destination's accepted requests
    naming each run: a batch sent again after a crash keeps its key."""
    found: dict[str, set[str]] = {}
    for request in receiver.accepted(PATHS[destination]):
        for run_id in run_ids:
            if run_id.encode() in request.body:
                found.setdefault(run_id, set()).add(request.headers["webhook-id"])
    return found


def at(seconds_ago: float) -> str:
    return format_instant(now_ns() - int(seconds_ago * NS_PER_SECOND))


async def play(client: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    response = await client.post("/_sandbox/runs", json=spec)
    response.raise_for_status()
    run: dict[str, Any] = response.json()["run"]
    return run


def alert_engine(daemon: Daemon) -> AlertEngine | None:
    """The daemon's alert engine, while it has [[alerts]] rules."""
    running = daemon._engines.get("alerts")
    return None if running is None else running.worker
