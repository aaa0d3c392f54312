"""[[alerts]] configuration: validation messages a person can act on, routing, secrets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from runflow_tail.config.alerts import ALERT_ENGINE_CONSUMER
from runflow_tail.config.load import load_settings
from runflow_tail.config.model import Settings
from runflow_tail.errors import ConfigError
from runflow_tail.sandbox import SandboxThread

from tests.support.harness import run_cli

WriteConfig = Callable[[str], Path]

KEY = "rf_key_123456"

SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/XXXXXXXXXXXXXXXXXXXXXXXX"
ROUTING_KEY = "R0123456789abcdef0123456789abcde"
SINKS = f"""
[sinks.archive]
type = "file"
path = "/tmp/archive.jsonl"

[sinks.slack]
type = "slack"
webhook_url = "{SLACK_URL}"

[sinks.pager]
type = "pagerduty"
routing_key = "{ROUTING_KEY}"

[sinks.hook]
type = "webhook"
url = "https://hooks.example.com/alerts"
"""
RULE = """
[[alerts]]
name = "failed-runs"
match = "run.outcome:failed"
destinations = ["slack", "hook"]
"""


def load(path: Path) -> Settings:
    return load_settings(config_file=path, environ={"RUNFLOW_API_KEY": KEY})


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load(path)
    return raised.value.problems


def test_a_complete_rule_loads_with_its_defaults(write_config: WriteConfig) -> None:
    """A rule with only name, match and destinations gets per-run grouping, threshold 1,
    a 5 minute cooldown, no digest and severity error."""
    rule = load(write_config(SINKS + RULE)).alerts[0]
    assert rule.group_by == ("run_id",)
    assert (rule.threshold, rule.window, rule.cooldown, rule.digest) == (1, None, 300.0, None)
    assert rule.severity == "error" and rule.lines == 5


def test_check_config_points_at_the_column_of_a_bad_expression(
    write_config: WriteConfig,
) -> None:
    """check-config exits 2 and names the rule's key, the column and what was expected."""
    path = write_config(SINKS + RULE.replace("run.outcome:failed", "level_code:error AND"))
    result = run_cli("check-config", "--config", str(path), env={"RUNFLOW_API_KEY": KEY})
    assert result.returncode == 2
    assert (
        f"config file {path}: alerts[0].match = 'level_code:error AND': invalid filter at "
        "column 20: expected a condition after 'AND'"
    ) in result.stderr


def test_resolve_match_is_checked_too(write_config: WriteConfig) -> None:
    """A bad resolve_match is reported at its own key with its column."""
    rule = RULE + 'resolve_match = "run.status_code:"\n'
    (found,) = problems(write_config(SINKS + rule))
    assert "alerts[0].resolve_match = 'run.status_code:': invalid filter at column 16" in found


def test_unknown_destination_lists_the_configured_sinks(write_config: WriteConfig) -> None:
    """A destination that is not a sink is named, with the sinks there are."""
    (found,) = problems(write_config(SINKS + RULE.replace('"hook"', '"hooks"')))
    assert found.endswith(
        "alerts[0].destinations = ['slack', 'hooks']: 'hooks' is not a configured sink "
        "([sinks.hooks]); expected one of: archive, hook, pager, slack"
    )


def test_threshold_needs_a_window_and_digest_excludes_resolve(write_config: WriteConfig) -> None:
    """threshold > 1 without a window, and digest with resolve_match, are refused."""
    bad = RULE + "threshold = 3\n" + RULE.replace("failed-runs", "other")
    bad += 'digest = "5m"\nresolve_match = "run.status_code:succeeded"\n'
    found = problems(write_config(SINKS + bad))
    assert any("alerts[0]: threshold = 3 needs a window" in p for p in found), found
    assert any("alerts[1]: digest and resolve_match cannot be combined" in p for p in found)


def test_rule_names_are_unique_and_templates_name_known_fields(write_config: WriteConfig) -> None:
    """A repeated rule name and a template field that does not exist are both reported."""
    bad = RULE + RULE + 'title = "{run.failure_code} in {flow}"\n'
    found = problems(write_config(SINKS + bad))
    assert any(
        "alerts[1].name = 'failed-runs': alerts[0] already has this name" in p for p in found
    )
    assert any("alerts[1].title" in p and "unknown template field {flow}" in p for p in found)


def test_alert_only_sinks_cannot_be_routed_log_streams(write_config: WriteConfig) -> None:
    """A stream listing a slack sink, or a destination with `streams`, is refused."""
    config = (
        '[[streams]]\nname = "all"\nsinks = ["archive", "slack"]\n'
        + SINKS.replace(
            'url = "https://hooks.example.com/alerts"',
            'url = "https://h.example/a"\nstreams = ["all"]',
        )
        + RULE
    )
    found = problems(write_config(config))
    assert any(
        "streams[0].sinks = ['archive', 'slack']: sink 'slack' is an alert destination" in p
        for p in found
    ), found
    assert any(
        "sinks.hook.streams = ['all']: sink 'hook' is an alert destination" in p for p in found
    )


def test_destinations_read_their_alert_stream_and_retention_waits_for_the_engine(
    write_config: WriteConfig,
) -> None:
    """Log streams go to ordinary sinks and the engine; each destination reads only
    alerts.<name>; a pagerduty sink named by no rule reads nothing."""
    settings = load(write_config(SINKS + RULE))
    assert settings.sinks_for_stream(settings.streams[0]) == ("archive",)
    assert settings.streams_for_sink("slack") == ("alerts.slack",)
    assert settings.streams_for_sink("hook") == ("alerts.hook",)
    assert settings.streams_for_sink("pager") == ()
    assert settings.subscriptions() == {
        "all": ("archive", ALERT_ENGINE_CONSUMER),
        "alerts.slack": ("slack",),
        "alerts.hook": ("hook",),
    }


def test_webhook_urls_and_routing_keys_never_appear_in_problems(write_config: WriteConfig) -> None:
    """A malformed Slack URL or routing key is reported with its key, its value masked."""
    config = SINKS.replace(SLACK_URL, "hooks.slack.com/services/T0SECRET/B0SECRET/XX")
    config = config.replace(ROUTING_KEY, "short-SECRETKEY")
    found = "\n".join(problems(write_config(config + RULE)))
    assert "sinks.slack.webhook_url = '********': expected the Slack incoming webhook URL" in found
    assert (
        "sinks.pager.routing_key = '********': expected the 32-character integration key" in found
    )
    assert "SECRET" not in found


def test_check_config_masks_destination_secrets_in_the_resolved_config(
    write_config: WriteConfig,
) -> None:
    """The resolved configuration check-config prints hides webhook URLs and routing keys."""
    path = write_config(SINKS + RULE)
    result = run_cli("check-config", "--config", str(path), env={"RUNFLOW_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert "T0SECRET" not in result.stdout and ROUTING_KEY not in result.stdout
    assert '"destinations": [\n        "slack",' in result.stdout


def test_a_template_field_that_can_never_be_filled_is_a_problem_with_a_suggestion(
    write_config: WriteConfig,
) -> None:
    """Invented run fields, unknown line fields and group fields the rule does not group
    by are each refused at their key, naming what to write instead."""
    bad = (
        RULE
        + 'title = "{run.flow_name} failed"\ntext = "ended {run.ended_at}"\n'
        + RULE.replace("failed-runs", "second")
        + 'title = "{line.text}"\nlink = "{run.organization_id}"\n'
        + RULE.replace("failed-runs", "third")
        + 'text = "{group.run.flow_id}"\n'
    )
    found = "\n".join(problems(write_config(SINKS + bad)))
    assert "alerts[0].title = '{run.flow_name} failed': template field {run.flow_name} " in found
    assert "did you mean run.flow_id or run.model.name" in found
    assert "{run.ended_at} can never be filled" in found and "run.completed_at" in found
    assert "alerts[1].title = '{line.text}': template field {line.text} can never be" in found
    assert "alerts[1].link = '{run.organization_id}'" in found and "run.org_id" in found
    assert "alerts[2]: template field {group.run.flow_id} can never be filled: the group " in found
    assert "holds run_id (group_by); write {run.flow_id} instead" in found


def test_a_match_or_group_on_a_run_field_no_run_has_is_a_problem(
    write_config: WriteConfig,
) -> None:
    """match and group_by naming invented run fields are refused; real ones of either
    schema version, derived ones and paths inside free-form objects are accepted."""
    bad = RULE.replace("run.outcome:failed", "run.status:failed") + 'group_by = ["run.flow_name"]\n'
    found = "\n".join(problems(write_config(SINKS + bad)))
    assert "alerts[0].match = 'run.status:failed': run.status is not a field" in found
    assert "did you mean run.outcome (derived) or run.status_code" in found
    assert "alerts[0].group_by = ['run.flow_name']: run.flow_name is not a field" in found
    good = RULE.replace(
        "run.outcome:failed",
        "run.status_code:failed OR run.failure_code:X OR run.metadata.team:ml",
    )
    good += 'group_by = ["run.model.name", "run.flow_id"]\n'
    good += 'title = "{run.model.name} {run.duration_seconds} {run.completed_at} {link}"\n'
    rule = load(write_config(SINKS + good)).alerts[0]
    assert rule.run_fields() == {
        "status_code",
        "failure_code",
        "metadata.team",
        "model.name",
        "flow_id",
        "duration_seconds",
        "completed_at",
    }


@pytest.mark.parametrize(
    ("sandbox_thread", "missing"),
    [
        ({"run_schema": "current"}, "run.status_code"),
        ({"run_schema": "older"}, "run.failure_code"),
    ],
    indirect=["sandbox_thread"],
)
def test_check_config_online_warns_about_run_fields_the_apis_runs_lack(
    sandbox_thread: SandboxThread, write_config: WriteConfig, missing: str
) -> None:
    """--online fetches one run and warns (exit 0) about each run field a rule or stream
    names that it lacks: status_code on the current schema, failure_code on the older."""
    sandbox_thread.world.generate(1)
    rule = RULE.replace("run.outcome:failed", "run.status_code:failed")
    rule += 'text = "{run.failure_code}"\n'
    stream = '[[streams]]\nname = "failures"\nquery = "run.status_code:failed"\n'
    config = f'[api]\nbase_url = "{sandbox_thread.url}"\n' + stream + SINKS + rule
    result = run_cli(
        "check-config",
        "--online",
        "--config",
        str(write_config(config)),
        env={"RUNFLOW_API_KEY": sandbox_thread.api_key},
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any(
        line.startswith(f"warning: alerts[0] (failed-runs): {missing} ") for line in warnings
    )
    if missing == "run.status_code":
        assert any(
            "streams[0] (failures): the API's runs have no run.status_code" in w for w in warnings
        )
    other = "run.failure_code" if missing == "run.status_code" else "run.status_code"
    assert other not in "\n".join(warnings)
