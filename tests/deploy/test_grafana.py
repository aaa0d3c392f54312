"""deploy/grafana/: the dashboard and the Prometheus rules load, every PromQL expression
parses (promql-parser), and every metric they use is one the daemon exports."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml
from runflow_tail.metrics import Metrics

from tests.support.harness import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "runflow-tail-dashboard.json"
RULES = REPO / "deploy" / "grafana" / "prometheus-rules.yaml"
GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)")
METRIC = re.compile(r"\brunflow_tail_[a-z_]+")


def exported_metrics() -> set[str]:
    """Every sample name the daemon's registry can produce (counters' _total, buckets...)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load(RULES.read_text())
    return found + [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    """A classic dashboard model: uid, title, unique panel ids and refIds, a 24-column grid,
    every panel on the chosen Prometheus data source."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    """Lag, delivered/s per sink, backlog, dead letters and API status codes each have a panel."""
    text = DASHBOARD.read_text()
    for metric in (
        "runflow_tail_lag_seconds",
        "runflow_tail_entries_delivered_total",
        "runflow_tail_sink_backlog_entries",
        "runflow_tail_dead_letters_total",
        "runflow_tail_api_requests_total",
    ):
        assert metric in text


@pytest.mark.parametrize("expr", expressions())
def test_every_expression_parses_and_uses_exported_metrics(expr: str) -> None:
    """Each PromQL expression parses (Grafana's interval variables stood in by 5m) and names
    only metrics the daemon exports."""
    promql_parser.parse(GRAFANA_VARIABLES.sub("5m", expr).replace('"$job"', '".*"'))
    assert set(METRIC.findall(expr)) <= exported_metrics()


def test_a_broken_expression_is_caught() -> None:
    """promql-parser refuses an unclosed parenthesis (so the check above can fail)."""
    with pytest.raises(Exception, match="paren"):
        promql_parser.parse("sum(rate(runflow_tail_sink_errors_total[5m])")


def test_the_rules_file_holds_the_readmes_alert_rules() -> None:
    """prometheus-rules.yaml is the README's rule group, rule for rule, and each rule is
    well formed (alert name, expr, a valid for duration)."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("```yaml\ngroups:", 1)[1].split("```", 1)[0]
    from_readme = yaml.safe_load("groups:" + block)
    shipped = yaml.safe_load(RULES.read_text())
    assert shipped == from_readme
    for rule in shipped["groups"][0]["rules"]:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])
