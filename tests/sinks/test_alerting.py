"""Alert destinations: payloads within each service's limits, 429s, independence, and
`runflow-tail alerts test`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from runflow_tail.alerts.sample import sample_alert, sample_run
from runflow_tail.config.alerts import AlertRule
from runflow_tail.run_object import CURRENT_FIELDS, NODE_RUN_FIELDS, outcome
from runflow_tail.sandbox import SandboxHandle
from runflow_tail.sinks.discord import DiscordSink, discord_message
from runflow_tail.sinks.pagerduty import pagerduty_event
from runflow_tail.times import NS_PER_SECOND, format_instant, now_ns

from tests.support.alerts import (
    FAILED,
    PATHS,
    ROUTING_KEY,
    alert_settings,
    play,
    run_until,
    settled,
)
from tests.support.harness import run_cli
from tests.support.receivers import (
    AlertReceiver,
    discord_problems,
    pagerduty_problems,
    running_alert_receiver,
)

pytestmark = [pytest.mark.anyio, pytest.mark.sandbox_options(timestamp_style="z")]

MENTION = "<!channel> & <@U024BE7LH> @everyone"


async def test_oversized_alerts_stay_within_every_services_limits_and_ping_nobody(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A 10,000-character failure message and fifty 2,000-character lines full of mentions:
    Slack gets header/section/context blocks within Block Kit's limits with everything
    escaped, Discord an embed within its limits and no pings, PagerDuty a valid event."""
    run = await play(
        sandbox_client,
        status_code="failed",
        failure_message=(MENTION + " ") * 300,
        timestamp=format_instant(now_ns() - 120 * NS_PER_SECOND),
    )
    base = now_ns() - 100 * NS_PER_SECOND
    sandbox.world.append(
        [
            {
                "run_id": run["id"],
                "level_code": "error",
                "message": f"line {i} " + MENTION * 60,
                "timestamp": format_instant(base + i * NS_PER_SECOND),
            }
            for i in range(60)
        ]
    )
    rule = {
        "name": "noisy",
        "match": "level_code:error",
        "threshold": 50,
        "window": "1h",
        "lines": 50,
        "title": "{run.failure_message}",
        "text": "{detail} {line.message}",
        "destinations": ["slack", "discord", "pager"],
    }
    with running_alert_receiver() as receiver:
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(
            settings,
            lambda d: (
                all(receiver.accepted(p) for p in ("slack", "discord", "pagerduty")) and settled(d)
            ),
        )
    assert receiver.all_problems() == []
    slack = receiver.accepted("slack")[0].json()
    assert [block["type"] for block in slack["blocks"]] == [
        "header",
        "section",
        "section",
        "section",
        "context",
    ]
    assert len(slack["blocks"][0]["text"]["text"]) == 150
    assert "&lt;!channel&gt; &amp; &lt;@U024BE7LH&gt;" in slack["blocks"][1]["text"]["text"]
    assert b"<!channel>" not in receiver.accepted("slack")[0].body
    embed = receiver.accepted("discord")[0].json()["embeds"][0]
    assert len(embed["title"]) == 256 and embed["description"].endswith("…")
    summary = receiver.accepted("pagerduty")[0].json()["payload"]["summary"]
    assert len(summary) == 1024


async def test_a_429_waits_for_retry_after_without_holding_back_other_destinations(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Slack answers 429 with Retry-After: 2: its retry comes at least 2 s later, while
    Discord and PagerDuty have the alert long before."""
    await play(sandbox_client, status_code="failed")
    receiver = AlertReceiver(script={"slack": [(429, {"Retry-After": "2"})]})
    rule = {"name": "failed", "match": FAILED, "destinations": ["slack", "discord", "pager"]}
    with running_alert_receiver(receiver):
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(settings, lambda d: bool(receiver.accepted("slack")) and settled(d))
    slack = [r for r in receiver.requests if r.path == "slack"]
    assert [r.status for r in slack] == [429, 200]
    assert slack[1].at - slack[0].at >= 2.0
    for path in ("discord", "pagerduty"):
        assert receiver.accepted(path)[0].at < slack[0].at + 1.0


async def test_a_destination_that_is_down_never_holds_back_the_others(
    sandbox: SandboxHandle, sandbox_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Discord answers 503 to everything: Slack, PagerDuty and the webhook still get every
    alert, while Discord keeps retrying."""
    for _ in range(3):
        await play(sandbox_client, status_code="failed")
    receiver = AlertReceiver(failing={"discord": 503})
    destinations = ["discord", "slack", "pager", "hook"]
    rule = {"name": "failed", "match": FAILED, "destinations": destinations}
    with running_alert_receiver(receiver):
        settings = alert_settings(sandbox, tmp_path, receiver, [rule])
        await run_until(
            settings,
            lambda d: (
                all(len(receiver.accepted(PATHS[x])) >= 3 for x in destinations[1:])
                and len([r for r in receiver.requests if r.path == "discord"]) >= 3
            ),
        )
    assert receiver.accepted("discord") == []
    for destination in destinations[1:]:
        assert len(receiver.accepted(PATHS[destination])) == 3


def test_discord_honours_retry_after_from_the_body_when_the_header_is_missing() -> None:
    """Discord's 429 body says {"retry_after": 1.5}; that is the wait when no header says."""
    sink = DiscordSink("d", "https://discord.example/api/webhooks/1/x", timeout=1, username="u")
    response = httpx.Response(429, json={"retry_after": 1.5, "global": False})
    assert sink.retry_after(response) == 1.5
    assert sink.retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0


def _alerts_test(config: Path, destination: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runflow_tail",
            "alerts",
            "test",
            "-d",
            destination,
            "-c",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _destinations_config(tmp_path: Path, receiver: AlertReceiver, **paths: Any) -> Path:
    config = tmp_path / "alerts.toml"
    slack = receiver.url(paths.get("slack", "slack"))
    config.write_text(
        f'[sinks.slack]\ntype = "slack"\nwebhook_url = "{slack}"\n'
        f'[sinks.pager]\ntype = "pagerduty"\nrouting_key = "{ROUTING_KEY}"\n'
        f'url = "{receiver.url("pagerduty")}"\n'
        f'[sinks.discord]\ntype = "discord"\nwebhook_url = "{receiver.url("discord")}"\n'
    )
    return config


def test_alerts_test_sends_a_valid_sample_to_each_destination(tmp_path: Path) -> None:
    """`alerts test` sends one valid sample alert and exits 0; to PagerDuty a trigger and
    its resolve, so no incident is left open."""
    with running_alert_receiver() as receiver:
        config = _destinations_config(tmp_path, receiver)
        for destination in ("slack", "discord", "pager"):
            result = _alerts_test(config, destination)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"sent a test alert to {destination}")
    assert receiver.all_problems() == []
    assert len(receiver.accepted("slack")) == len(receiver.accepted("discord")) == 1
    events = [r.json() for r in receiver.accepted("pagerduty")]
    assert [e["event_action"] for e in events] == ["trigger", "resolve"]
    assert events[0]["dedup_key"] == events[1]["dedup_key"]


def test_alerts_test_failure_is_one_line_without_the_webhook_token(tmp_path: Path) -> None:
    """A destination that refuses (404) exits 1 with one line naming the sink and the
    answer, and never the secret part of the webhook URL."""
    token = "T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    with running_alert_receiver(AlertReceiver(failing={"gone": 404})) as receiver:
        config = _destinations_config(tmp_path, receiver, slack=f"gone?token={token}")
        result = _alerts_test(config, "slack")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "slack did not accept the alert" in lines[0] and "HTTP 404" in lines[0]
    assert token not in result.stderr + result.stdout


def test_alerts_test_names_an_unknown_destination(tmp_path: Path) -> None:
    """An unknown --destination is a configuration error (exit 2) with a suggestion."""
    with running_alert_receiver() as receiver:
        result = _alerts_test(_destinations_config(tmp_path, receiver), "slak")
    assert result.returncode == 2
    assert "--destination 'slak': no sink of that name; did you mean 'slack'?" in result.stderr


RULE_WITH_RUN_FIELDS = """
[[alerts]]
name = "failed-runs"
match = "run.outcome:failed"
destinations = ["slack"]
title = "{run.model.name} failed: {run.failure_code}"
text = "ended {run.completed_at} after {run.duration_seconds}s"
link = "https://runflow.example/runs/{run.id}"
"""


def test_alerts_test_renders_a_rules_own_alert_with_the_run_as_the_api_has_it(
    tmp_path: Path,
) -> None:
    """`alerts test --rule` prints the rule's own title, text and link for a sample failed
    run of the API's current schema (model name, flow id, end, duration) and sends nothing;
    with -d it sends that alert, the run id linked."""
    with running_alert_receiver() as receiver:
        config = _destinations_config(tmp_path, receiver)
        config.write_text(config.read_text() + RULE_WITH_RUN_FIELDS)
        shown = run_cli("alerts", "test", "--rule", "failed-runs", "-c", str(config))
        assert shown.returncode == 0, shown.stderr
        assert receiver.requests == []
        sent = run_cli("alerts", "test", "-r", "failed-runs", "-d", "slack", "-c", str(config))
        assert sent.returncode == 0, sent.stderr
    run = sample_run(0)
    lines = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert lines["title"].strip() == "Invoice extractor failed: NODE_TIMEOUT"
    assert lines["text"].strip().startswith("ended ") and lines["text"].endswith(" after 42.317s")
    assert lines["link"].strip() == f"https://runflow.example/runs/{run['id']}"
    assert lines["model"].strip().startswith("Invoice extractor (")
    assert lines["flow"].strip() == run["flow_id"] and "after 42.317s" in lines["ended"]
    message = receiver.accepted("slack")[0].json()
    assert message["blocks"][0]["text"]["text"] == "Invoice extractor failed: NODE_TIMEOUT"
    fields = [field["text"] for field in message["blocks"][2]["fields"]]
    assert "*Model*\nInvoice extractor" in fields and f"*Flow*\n{run['flow_id']}" in fields
    assert f"*Run*\n<https://runflow.example/runs/{run['id']}|{run['id']}>" in fields
    assert receiver.all_problems() == []


def test_the_sample_run_has_exactly_the_current_schemas_fields() -> None:
    """The sample alert's run is the reference's current version, field for field."""
    run = sample_run(0)
    assert set(run) == CURRENT_FIELDS | {"failure_stage_code"}
    assert all(set(node) == NODE_RUN_FIELDS for node in run["node_runs"])
    assert outcome(run) == "failed"


def test_discord_and_pagerduty_carry_the_model_name_flow_id_and_link() -> None:
    """A rule's alert with a link: Discord's title links to the run and its fields name the
    model and flow; PagerDuty's component is the model and the run is among its links;
    both stay valid for their service."""
    rule = AlertRule(
        name="failed-runs",
        match="run.outcome:failed",
        destinations=["d"],
        link="https://runflow.example/runs/{run.id}",
    )
    _id, _raw, alert = sample_alert("d", now_ns(), rule)
    run = sample_run(0)
    embed = discord_message(alert)["embeds"][0]
    assert embed["url"] == f"https://runflow.example/runs/{run['id']}"
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Model"] == "Invoice extractor" and fields["Flow"] == run["flow_id"]
    assert fields["Ended"] == alert["run"]["completed_at"] and fields["Outcome"] == "failed"
    event = pagerduty_event(alert, ROUTING_KEY, "runflow-tail")
    assert event["payload"]["component"] == "Invoice extractor"
    assert event["links"] == [{"href": alert["link"], "text": "The run"}]
    assert discord_problems(discord_message(alert)) == [] and pagerduty_problems(event) == []
