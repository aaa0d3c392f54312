"""The Discord sink: each alert as an embed posted to a Discord webhook.

Discord's limits are kept: title ≤ 256, description ≤ 4096, ≤ 25 fields (name ≤ 256,
value ≤ 1024), footer ≤ 2048, and ≤ 6000 characters in the whole embed.
``allowed_mentions`` is empty, so a log line saying ``@everyone`` pings nobody. On 429
Discord says how long to wait in ``Retry-After`` and in the body's ``retry_after``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import httpx
import msgspec
from pydantic import SecretStr, field_validator

from runflow_tail.pacing import parse_retry_after
from runflow_tail.sinks.alerting import (
    AlertPoster,
    AlertSinkConfigBase,
    check_webhook_url,
    defuse_fences,
    describe_duration,
    model_name,
    truncate,
)

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
MAX_FIELDS = 25
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
USERNAME_MAX = 80
LINE_MAX = 300

_COLORS = {"critical": 0x8B0000, "error": 0xE01E5A, "warning": 0xECB22E, "info": 0x36C5F0}
_KIND_COLORS = {"resolve": 0x2EB67D, "digest": 0x4A154B}


class DiscordSinkConfig(AlertSinkConfigBase):
    type: Literal["discord"] = "discord"
    webhook_url: SecretStr
    """https://discord.com/api/webhooks/<id>/<token>; a secret."""
    username: str = "runflow-tail"
    """The name the messages appear under."""

    @field_validator("webhook_url")
    @classmethod
    def _url_shape(cls, value: SecretStr) -> SecretStr:
        return check_webhook_url(value, "Discord")

    @field_validator("username")
    @classmethod
    def _username_length(cls, value: str) -> str:
        if not 1 <= len(value) <= USERNAME_MAX:
            raise ValueError(f"expected 1-{USERNAME_MAX} characters")
        return value

    def build(self, name: str) -> DiscordSink:
        return DiscordSink(
            name, self.webhook_url.get_secret_value(), timeout=self.timeout, username=self.username
        )


class DiscordSink(AlertPoster):
    service = "Discord webhook"

    def __init__(self, name: str, url: str, *, timeout: float, username: str) -> None:
        super().__init__(name, url, timeout=timeout)
        self._username = username

    def payloads(self, alert: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [discord_message(alert, self._username)]

    def retry_after(self, response: httpx.Response) -> float | None:
        header = super().retry_after(response)
        if header is not None:
            return header
        try:
            body = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            return None
        value = body.get("retry_after") if isinstance(body, dict) else None
        return parse_retry_after(str(value)) if isinstance(value, int | float) else None


def discord_message(alert: Mapping[str, Any], username: str = "runflow-tail") -> dict[str, Any]:
    kind = str(alert.get("kind", "alert"))
    title = truncate(str(alert.get("title") or alert.get("headline") or "alert"), TITLE_MAX)
    fields = _fields(alert.get("run"))
    footer = truncate(_footer(alert), FOOTER_MAX)
    used = len(title) + len(footer) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    description = truncate(_description(alert), min(DESCRIPTION_MAX, EMBED_TOTAL_MAX - used))
    embed: dict[str, Any] = {
        "title": title,
        "color": _KIND_COLORS.get(kind) or _COLORS.get(str(alert.get("severity")), 0xE01E5A),
        "fields": fields,
        "footer": {"text": footer},
    }
    if description:
        embed["description"] = description
    if isinstance(alert.get("fired_at"), str):
        embed["timestamp"] = alert["fired_at"]
    if isinstance(alert.get("link"), str) and alert["link"]:
        embed["url"] = alert["link"]  # the title links to the run
    return {"username": username, "allowed_mentions": {"parse": []}, "embeds": [embed]}


def _description(alert: Mapping[str, Any]) -> str:
    parts = [str(alert.get("text") or "")]
    lines = [line for line in alert.get("lines") or () if isinstance(line, Mapping)]
    if lines:
        quoted = "\n".join(
            f"{line.get('timestamp') or ''} {line.get('level_code') or ''} "
            f"{defuse_fences(truncate(str(line.get('message') or ''), LINE_MAX))}"
            for line in lines
        )
        parts.append(f"```\n{quoted}\n```")
    for item in alert.get("items") or ():
        if isinstance(item, Mapping):
            run_id = (item.get("run") or {}).get("id")
            suffix = f" (run {run_id})" if run_id else ""
            parts.append(f"• **{item.get('title') or item.get('headline')}**{suffix}")
    return "\n".join(part for part in parts if part).strip()


def _fields(run: Any) -> list[dict[str, Any]]:
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
        ("Ended", run.get("completed_at")),
        ("Run", run.get("id")),
    ]
    return [
        {
            "name": truncate(name, FIELD_NAME_MAX),
            "value": truncate(str(value), FIELD_VALUE_MAX),
            "inline": True,
        }
        for name, value in pairs
        if value not in (None, "")
    ][:MAX_FIELDS]


def _footer(alert: Mapping[str, Any]) -> str:
    counts = alert.get("counts") or {}
    text = f"runflow-tail · rule {alert.get('rule')}"
    if counts:
        text += " · " + ", ".join(f"{k} {v}" for k, v in counts.items())
    return text
