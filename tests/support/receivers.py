"""A real webhook receiver on loopback (uvicorn + starlette in a background thread) that records
every request and answers as a test tells it to."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import anyio.from_thread
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    def entries(self) -> list[dict[str, Any]]:
        document = json.loads(self.body)
        return (
            document["entries"]
            if isinstance(document, dict) and "entries" in document
            else [document]
        )


@dataclass
class Receiver:
    """Answers ``status`` (200 by default) to every POST, optionally with headers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Answers for the next requests, in order, before falling back to ``status``."""
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        if self.delay:
            await anyio.sleep(self.delay)
        with self._lock:
            status, headers = self.script.pop(0) if self.script else (self.status, self.headers)
            self.requests.append(Received(dict(request.headers), body, status, time.monotonic()))
        return Response(b"{}" if status < 300 else b"nope", status_code=status, headers=headers)

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def delivered_ids(self) -> list[str]:
        return [entry["id"] for request in self.delivered() for entry in request.entries()]

    def set(self, status: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self.status = status
            self.headers = headers or {}


@contextlib.contextmanager
def serving(app: Starlette, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a free port in a background thread (on loopback unless ``host`` says
    otherwise); yields its base URL on loopback."""
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="off")
    started = threading.Event()
    address: list[str] = []

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            address.append(f"http://127.0.0.1:{self.servers[0].sockets[0].getsockname()[1]}")
            started.set()

    server = _Server(config)
    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(server.serve)
        started.wait(timeout=30)
        try:
            yield address[0]
        finally:
            server.should_exit = True
            future.result(timeout=30)


@contextlib.contextmanager
def running_receiver(
    receiver: Receiver | None = None, host: str = "127.0.0.1"
) -> Iterator[Receiver]:
    receiver = receiver or Receiver()
    app = Starlette(routes=[Route("/hook", receiver._handle, methods=["POST"])])
    with serving(app, host) as base_url:
        receiver.url = f"{base_url}/hook"
        yield receiver


# -- alert destinations ------------------------------------------------------------------
# One loopback server plays Slack (/slack), Discord (/discord), PagerDuty's Events API v2
# (/pagerduty) and a generic webhook (/hook). Each request is checked against what the
# real service accepts; a request that breaks the rules is answered 400 with the problems
# (as the service would refuse it) and the problems are kept for the test to assert on.

ALERT_PATHS = ("slack", "discord", "pagerduty", "hook")
PAGERDUTY_ACTIONS = frozenset({"trigger", "acknowledge", "resolve"})
PAGERDUTY_SEVERITIES = frozenset({"critical", "error", "warning", "info"})
PAGERDUTY_KEYS = frozenset(
    {
        "routing_key",
        "event_action",
        "dedup_key",
        "payload",
        "client",
        "client_url",
        "links",
        "images",
    }
)
PAGERDUTY_PAYLOAD_KEYS = frozenset(
    {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
)
SLACK_TEXT_TYPES = frozenset({"mrkdwn", "plain_text"})
SLACK_LINK = re.compile(r"<https?://[^\s<>|]+\|[^<>|]*>")


def slack_problems(body: Any) -> list[str]:
    """What Slack's Block Kit would reject (or show wrongly) in an incoming-webhook message."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    text = body.get("text")
    if not isinstance(text, str) or not text or len(text) > 40_000:
        problems.append("text: expected a 1-40000 character fallback")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return [*problems, "blocks: expected a list of 1-50 blocks"]
    for index, block in enumerate(blocks):
        where = f"blocks[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            problems += _slack_text(block.get("text"), where + ".text", 150, {"plain_text"})
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: a section needs text or fields")
            if "text" in block:
                problems += _slack_text(block["text"], where + ".text", 3000, SLACK_TEXT_TYPES)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    problems.append(f"{where}.fields: expected 1-10 text objects")
                else:
                    for i, field_ in enumerate(fields):
                        problems += _slack_text(
                            field_, f"{where}.fields[{i}]", 2000, SLACK_TEXT_TYPES
                        )
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{where}.elements: expected 1-10 elements")
            else:
                for i, element in enumerate(elements):
                    problems += _slack_text(
                        element, f"{where}.elements[{i}]", 3000, SLACK_TEXT_TYPES
                    )
        elif kind != "divider":
            problems.append(f"{where}.type: {kind!r} is not a block this message should use")
    return problems


def _slack_text(obj: Any, where: str, limit: int, types: frozenset[str]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{where}: expected a text object of type {sorted(types)}"]
    text = obj.get("text")
    if not isinstance(text, str) or not 1 <= len(text) <= limit:
        return [f"{where}.text: expected 1-{limit} characters, got {len(text or '')}"]
    if "<" in SLACK_LINK.sub("", text) or ">" in SLACK_LINK.sub("", text):
        # Everything we send is escaped but our own links: a raw < could be a <!channel>
        # ping or a fake link.
        return [f"{where}.text: unescaped < or >"]
    return []


def discord_problems(body: Any) -> list[str]:
    """What Discord's execute-webhook endpoint would reject, plus pings we never want."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    problems: list[str] = []
    embeds = body.get("embeds") or []
    if not body.get("content") and not embeds:
        problems.append("needs content or embeds")
    if len(str(body.get("content") or "")) > 2000:
        problems.append("content: more than 2000 characters")
    if body.get("allowed_mentions") != {"parse": []}:
        problems.append("allowed_mentions: expected {'parse': []} (no pings from log text)")
    if not isinstance(embeds, list) or len(embeds) > 10:
        return [*problems, "embeds: expected at most 10"]
    for index, embed in enumerate(embeds):
        where = f"embeds[{index}]"
        total = 0
        for key, limit in (("title", 256), ("description", 4096)):
            value = str(embed.get(key) or "")
            total += len(value)
            if len(value) > limit:
                problems.append(f"{where}.{key}: more than {limit} characters")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            problems.append(f"{where}.fields: more than 25")
        for i, field_ in enumerate(fields):
            name, value = str(field_.get("name") or ""), str(field_.get("value") or "")
            total += len(name) + len(value)
            if not 1 <= len(name) <= 256 or not 1 <= len(value) <= 1024:
                problems.append(f"{where}.fields[{i}]: name 1-256, value 1-1024 characters")
        footer = str((embed.get("footer") or {}).get("text") or "")
        total += len(footer)
        if len(footer) > 2048:
            problems.append(f"{where}.footer.text: more than 2048 characters")
        if total > 6000:
            problems.append(f"{where}: {total} characters in all, more than 6000")
    return problems


def pagerduty_problems(body: Any) -> list[str]:
    """The Events API v2 schema: required keys, enums, lengths."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    problems = [f"unknown key {key!r}" for key in body if key not in PAGERDUTY_KEYS]
    routing_key = body.get("routing_key")
    if not isinstance(routing_key, str) or len(routing_key) != 32:
        problems.append("routing_key: expected the 32-character integration key")
    action = body.get("event_action")
    if action not in PAGERDUTY_ACTIONS:
        problems.append(f"event_action: {action!r} is not one of {sorted(PAGERDUTY_ACTIONS)}")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 1 <= len(dedup) <= 255):
        problems.append("dedup_key: expected 1-255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        problems.append(f"dedup_key: required for {action}")
    if action != "trigger":
        return problems
    payload = body.get("payload")
    if not isinstance(payload, dict):
        return [*problems, "payload: required for trigger"]
    problems += [
        f"payload: unknown key {key!r}" for key in payload if key not in PAGERDUTY_PAYLOAD_KEYS
    ]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not 1 <= len(summary) <= 1024:
        problems.append("payload.summary: expected 1-1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        problems.append("payload.source: required")
    if payload.get("severity") not in PAGERDUTY_SEVERITIES:
        problems.append(f"payload.severity: {payload.get('severity')!r} is not an allowed value")
    if "timestamp" in payload:
        try:
            datetime.fromisoformat(str(payload["timestamp"]).replace("Z", "+00:00"))
        except ValueError:
            problems.append("payload.timestamp: not ISO 8601")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        problems.append("payload.custom_details: expected an object")
    return problems


_VALIDATORS = {
    "slack": slack_problems,
    "discord": discord_problems,
    "pagerduty": pagerduty_problems,
}


@dataclass
class AlertRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float
    wall_ns: int
    problems: list[str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class AlertReceiver:
    """Records every request per destination path; ``script[path]`` holds answers for the
    next requests there (status, headers), before the service's usual success."""

    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)
    """Paths that answer this status to everything (a destination that is down)."""
    requests: list[AlertRequest] = field(default_factory=list)
    base_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    async def _handle(self, request: Request) -> Response:
        path = request.path_params["path"]
        body = await request.body()
        try:
            problems = _VALIDATORS.get(path, lambda _b: [])(json.loads(body))
        except json.JSONDecodeError:
            problems = ["body is not JSON"]
        with self._lock:
            queued = self.script.get(path) or []
            if problems:
                status, headers = 400, {}
            elif queued:
                status, headers = queued.pop(0)
            elif path in self.failing:
                status, headers = self.failing[path], {}
            else:
                status, headers = {"discord": 204, "pagerduty": 202}.get(path, 200), {}
            self.requests.append(
                AlertRequest(
                    path,
                    dict(request.headers),
                    body,
                    status,
                    time.monotonic(),
                    time.time_ns(),
                    problems,
                )
            )
        if status == 204:
            return Response(status_code=204)
        if path == "pagerduty" and status == 202:
            answer = {"status": "success", "message": "Event processed", "dedup_key": "x"}
            return Response(json.dumps(answer).encode(), status_code=202)
        text = "; ".join(problems) if problems else ("ok" if status < 300 else "nope")
        return Response(text.encode(), status_code=status, headers=headers)

    def accepted(self, path: str) -> list[AlertRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path and 200 <= r.status < 300]

    def all_problems(self) -> list[str]:
        with self._lock:
            return [f"/{r.path}: {p}" for r in self.requests for p in r.problems]


@contextlib.contextmanager
def running_alert_receiver(receiver: AlertReceiver | None = None) -> Iterator[AlertReceiver]:
    receiver = receiver or AlertReceiver()
    app = Starlette(routes=[Route("/{path}", receiver._handle, methods=["POST"])])
    with serving(app) as base_url:
        receiver.base_url = base_url
        yield receiver
