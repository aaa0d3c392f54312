"""The Slack sink: each alert as a Block Kit message to a Slack incoming webhook.

Layout: a header (the title), a section (the text), a section of fields (the run's
outcome, model name, flow id, failure, start, end and duration, and its id, linked when
the rule has a ``link``), a section quoting the triggering log lines, and a
context line (rule, group, counts). Block Kit's limits are kept: header text ≤ 150
characters, section text ≤ 3000, field texts ≤ 2000 and ≤ 10 fields, ≤ 10 context
elements, ≤ 50 blocks. All text is escaped (``&``, ``<``, ``>``), so a log line saying
``<!channel>`` never pings anyone. A 429 waits for its ``Retry-After``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import SecretStr, field_validator

from runflow_tail.sinks.alerting import (
    AlertPoster,
    AlertSinkConfigBase,
    check_webhook_url,
    defuse_fences,
    describe_duration,
    model_name,
    truncate,
)

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_BLOCKS = 50
FALLBACK_MAX = 3000
LINE_MAX = 300

_ICONS = {
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}
_KIND_ICONS = {"resolve": ":white_check_mark:", "digest": ":bell:", "test": ":wave:"}
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


class SlackSinkConfig(AlertSinkConfigBase):
    type: Literal["slack"] = "slack"
    webhook_url: SecretStr
    """https://hooks.slack.com/services/...; a secret (the URL is the token)."""

    @field_validator("webhook_url")
    @classmethod
    def _url_shape(cls, value: SecretStr) -> SecretStr:
        return check_webhook_url(value, "Slack")

    def build(self, name: str) -> SlackSink:
        return SlackSink(name, self.webhook_url.get_secret_value(), timeout=self.timeout)


class SlackSink(AlertPoster):
    service = "Slack webhook"

    def payloads(self, alert: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [slack_message(alert)]


def escape(text: str) -> str:
    """Slack's three control characters; everything else in mrkdwn is left as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int) -> str:
    """Escaped ``text`` within ``limit`` characters, never ending in half an entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    return _PARTIAL_ENTITY.sub("", escaped[: limit - 1]) + "…"


def slack_message(alert: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(alert.get("kind", "alert"))
    icon = _KIND_ICONS.get(kind) or _ICONS.get(str(alert.get("severity")), ":red_circle:")
    title = str(alert.get("title") or alert.get("headline") or "runflow-tail alert")
    text = str(alert.get("text") or "")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": fit(title, HEADER_MAX), "emoji": True},
        }
    ]
    if text.strip():
        blocks.append(_section(fit(text, SECTION_MAX)))
    fields = _run_fields(alert.get("run"), alert.get("link"))
    if fields:
        blocks.append({"type": "section", "fields": fields})
    lines = [line for line in alert.get("lines") or () if isinstance(line, Mapping)]
    if lines:
        blocks.append(_section(_quote_lines(lines)))
    context = _context(alert)
    items = [i for i in alert.get("items") or () if isinstance(i, Mapping)]
    # Digest items fill what is left of the 50 blocks, keeping one for "and N more".
    room = MAX_BLOCKS - len(blocks) - 2
    for item in items[:room]:
        headline = fit(str(item.get("title") or item.get("headline") or ""), 500)
        detail = fit(str(item.get("detail") or ""), SECTION_MAX - 700)
        run_id = (item.get("run") or {}).get("id")
        where = f"\nrun {fit(str(run_id), 100)}" if run_id else ""
        blocks.append(_section(f"• *{headline}*\n{detail}{where}".rstrip()))
    hidden = len(items[room:]) + int((alert.get("counts") or {}).get("omitted", 0))
    if hidden:
        blocks.append(_section(f"… and {hidden} more"))
    blocks.append({"type": "context", "elements": context})
    fallback = f"{icon} {title}" + (f": {text}" if text else "")
    return {"text": fit(fallback, FALLBACK_MAX), "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _run_fields(run: Any, link: Any) -> list[dict[str, str]]:
    if not isinstance(run, Mapping) or not run.get("id"):
        return []
    duration = run.get("duration_seconds")
    pairs = [
        ("Outcome", run.get("outcome")),
        ("Model", model_name(run)),
        ("Flow", run.get("flow_id")),
        ("Failure code", run.get("failure_code")),
        ("Failure stage", run.get("failure_stage_code")),
        ("Duration", describe_duration(duration) if duration is not None else None),
        ("Started", run.get("started_at")),
        ("Ended", run.get("completed_at")),
    ]
    fields = [
        {"type": "mrkdwn", "text": fit(f"*{name}*\n{value}", FIELD_MAX)}
        for name, value in pairs
        if value not in (None, "")
    ][: MAX_FIELDS - 1]
    run_id = fit(str(run["id"]), 200)
    if isinstance(link, str) and link and len(link) < FIELD_MAX - 250:
        # A link is the one place a raw < and > belong; the URL holds neither, nor a |.
        run_id = f"<{link.replace('&', '&amp;')}|{run_id}>"
    return [*fields, {"type": "mrkdwn", "text": f"*Run*\n{run_id}"}]


def _quote_lines(lines: list[Mapping[str, Any]]) -> str:
    head = "*Log lines*\n"
    rows = []
    for line in lines:
        message = str(line.get("message") or "")
        rows.append(
            f"{line.get('timestamp') or ''} {line.get('level_code') or ''} "
            f"{defuse_fences(truncate(message, LINE_MAX))}"
        )
    body = escape("\n".join(rows))
    room = SECTION_MAX - len(head) - 6
    if len(body) > room:
        body = _PARTIAL_ENTITY.sub("", body[: room - 1]) + "…"
    return f"{head}```{body}```"


def _context(alert: Mapping[str, Any]) -> list[dict[str, str]]:
    counts = alert.get("counts") or {}
    group = alert.get("group") or {}
    parts = [f"rule *{alert.get('rule')}*"]
    if group:
        parts.append("group " + ", ".join(f"{k}={v}" for k, v in group.items()))
    if counts:
        parts.append(", ".join(f"{k} {v}" for k, v in counts.items()))
    parts.append(f"runflow-tail · {alert.get('fired_at') or ''}")
    return [{"type": "mrkdwn", "text": fit(part, FIELD_MAX)} for part in parts][
        :MAX_CONTEXT_ELEMENTS
    ]
