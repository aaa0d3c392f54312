"""What the Slack, Discord and PagerDuty sinks share: options, one POST per alert, text.

These sinks only ever receive alerts (``alert_only``): the alert engine writes alert
documents (see ``alerts.messages``) into each destination's own journal stream, and the
delivery loop hands them over like any batch. Chat webhooks and the Events API are not
batch APIs, so each alert document is its own request, and a destination sends one alert
per batch by default (``batch = false``): a retry then never repeats an alert the
destination already accepted. With larger batches the alerts accepted before a failure
are remembered and skipped on the retry.

Their URLs and keys are secrets (a Slack or Discord webhook URL *is* its token): errors
and logs name the destination by host only, and any echo of the secret is redacted.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpx
import msgspec
from pydantic import SecretStr

from runflow_tail.models import Duration, Entry, PositiveDuration
from runflow_tail.sinks._http import http_client, post, redactor, retry_after_header
from runflow_tail.sinks.base import BatchSettings, SinkConfigBase

DEFAULT_ALERT_TIMEOUT = 10.0
DEFAULT_ALERT_RETRY = 3600.0
REMEMBERED_SENT = 1024
ELLIPSIS = "…"
_HTTP_URL = re.compile(r"https?://[^\s/?#]+(/[^\s]*)?")

_encode = msgspec.json.Encoder().encode


class AlertSinkConfigBase(SinkConfigBase):
    """Options of every alert-only destination (slack, discord, pagerduty)."""

    batch: BatchSettings | bool = False
    """One alert per send by default, so a retry never repeats an accepted alert."""
    timeout: PositiveDuration = DEFAULT_ALERT_TIMEOUT
    max_retry_duration: Duration | None = DEFAULT_ALERT_RETRY

    alert_only: ClassVar[bool] = True


def check_webhook_url(value: SecretStr, service: str) -> SecretStr:
    """A chat webhook URL must be http(s); the message never shows it (it holds the token)."""
    if not _HTTP_URL.fullmatch(value.get_secret_value().strip()):
        raise ValueError(f"expected the {service} incoming webhook URL (https://...)")
    return SecretStr(value.get_secret_value().strip())


class AlertPoster:
    """Posts each alert of a batch as JSON (``payloads`` builds the bodies of one alert)."""

    service = "alert destination"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        timeout: float,
        secrets: Sequence[str] = (),
        url_is_secret: bool = True,
    ) -> None:
        self.name = name
        self._url = url
        # A chat webhook URL is its token; PagerDuty's endpoint is public, its key is not.
        self._redact = redactor(s for s in ((url if url_is_secret else ""), *secrets) if s)
        host = httpx.URL(url).host or "?"
        self.label = f"{self.service} ({host})"
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._http = http_client(timeout=timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, destination={self.label!r})"

    def payloads(self, alert: Mapping[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def retry_after(self, response: httpx.Response) -> float | None:
        return retry_after_header(response)

    async def send(self, batch: Sequence[Entry]) -> None:
        for entry in batch:
            if entry.id in self._sent:
                continue  # accepted before a later alert of this batch failed
            for payload in self.payloads(entry.data()):
                await post(
                    self._http,
                    self._url,
                    content=_encode(payload),
                    label=self.label,
                    redact=self._redact,
                    retry_after=self.retry_after,
                )
            self._sent[entry.id] = None
            while len(self._sent) > REMEMBERED_SENT:
                self._sent.popitem(last=False)

    async def aclose(self) -> None:
        await self._http.aclose()


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS


def defuse_fences(text: str) -> str:
    """Break up triple backticks (with zero-width spaces) so a quoted line cannot end the
    code block it is quoted in."""
    return text.replace("```", "`\u200b`\u200b`")


def model_name(run: Mapping[str, Any]) -> str | None:
    """The run's model name: how people know a run (the API names no flow and no run)."""
    model = run.get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    return name if isinstance(name, str) and name else None


def describe_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"
