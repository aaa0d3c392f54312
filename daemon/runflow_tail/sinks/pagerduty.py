"""The PagerDuty sink: Events API v2 ``trigger`` and ``resolve`` events.

Every alert of a rule's group carries the same ``dedup_key``, so repeated triggers fold
into one incident and the group's ``resolve`` (from ``resolve_match``) closes it. A
digest is one trigger of its own. ``runflow-tail alerts test`` sends a trigger and
resolves it at once, so a test leaves no open incident behind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import HttpUrl, SecretStr, field_validator

from runflow_tail.sinks.alerting import AlertPoster, AlertSinkConfigBase, model_name, truncate

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
FIELD_MAX = 255
SEVERITIES = frozenset({"critical", "error", "warning", "info"})
_ROUTING_KEY = re.compile(r"[A-Za-z0-9]{32}")


class PagerDutySinkConfig(AlertSinkConfigBase):
    type: Literal["pagerduty"] = "pagerduty"
    routing_key: SecretStr
    """The 32-character integration key of an "Events API v2" integration; a secret."""
    url: HttpUrl = HttpUrl(DEFAULT_EVENTS_URL)
    """The Events API endpoint (change it only for EU service regions or tests)."""
    source: str = "runflow-tail"
    """payload.source: where the problem is, as PagerDuty shows it."""

    @field_validator("routing_key")
    @classmethod
    def _key_shape(cls, value: SecretStr) -> SecretStr:
        if not _ROUTING_KEY.fullmatch(value.get_secret_value().strip()):
            raise ValueError(
                "expected the 32-character integration key of an Events API v2 integration "
                "(Service → Integrations → Events API v2)"
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a non-empty source, e.g. the host or service name")
        return value

    def build(self, name: str) -> PagerDutySink:
        key = self.routing_key.get_secret_value()
        return PagerDutySink(name, str(self.url), key, timeout=self.timeout, source=self.source)


class PagerDutySink(AlertPoster):
    service = "PagerDuty Events API"

    def __init__(self, name: str, url: str, routing_key: str, *, timeout: float, source: str):
        super().__init__(name, url, timeout=timeout, secrets=(routing_key,), url_is_secret=False)
        self._routing_key = routing_key
        self._source = source

    def payloads(self, alert: Mapping[str, Any]) -> list[dict[str, Any]]:
        trigger = pagerduty_event(alert, self._routing_key, self._source)
        if alert.get("kind") == "test":
            return [trigger, resolve_event(str(alert.get("dedup_key")), self._routing_key)]
        return [trigger]


def resolve_event(dedup_key: str, routing_key: str) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "event_action": "resolve",
        "dedup_key": dedup_key[:DEDUP_KEY_MAX],
    }


def pagerduty_event(alert: Mapping[str, Any], routing_key: str, source: str) -> dict[str, Any]:
    dedup = str(alert.get("dedup_key") or alert.get("id"))[:DEDUP_KEY_MAX]
    if alert.get("kind") == "resolve":
        return resolve_event(dedup, routing_key)
    run = alert.get("run") if isinstance(alert.get("run"), Mapping) else {}
    assert isinstance(run, Mapping)
    severity = str(alert.get("severity"))
    payload: dict[str, Any] = {
        "summary": truncate(
            str(alert.get("title") or alert.get("headline") or "alert"), SUMMARY_MAX
        )
        or "runflow-tail alert",
        "source": truncate(source, FIELD_MAX),
        "severity": severity if severity in SEVERITIES else "error",
        "custom_details": {
            key: alert.get(key)
            for key in ("text", "rule", "group", "run", "link", "lines", "counts", "items")
            if alert.get(key) not in (None, [], {})
        },
    }
    if isinstance(alert.get("fired_at"), str):
        payload["timestamp"] = alert["fired_at"]
    component = model_name(run) or run.get("flow_id")
    if component:
        payload["component"] = truncate(str(component), FIELD_MAX)
    if alert.get("rule"):
        payload["group"] = truncate(str(alert["rule"]), FIELD_MAX)
    if run.get("failure_code"):
        payload["class"] = truncate(str(run["failure_code"]), FIELD_MAX)
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "payload": payload,
        "client": "runflow-tail",
    }
    if isinstance(alert.get("link"), str) and alert["link"]:
        event["links"] = [{"href": alert["link"], "text": "The run"}]
    return event
