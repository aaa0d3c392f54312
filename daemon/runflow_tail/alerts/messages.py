"""The alert document: what every destination receives, and the templates that shape it.

An alert is a new JSON document (the log entries it quotes are carried inside, their
messages as they were). Its ``kind`` is ``alert`` (a rule fired for a group), ``resolve``
(an open incident's group matched ``resolve_match``), ``digest`` (a period's alerts of one
rule) or ``test`` (``runflow-tail alerts test``). Destinations turn it into their own
payload; the generic webhook posts it as it is. One document per destination, each with
its own id, so that each destination's delivery is independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from runflow_tail.dotted import DottedFormatter
from runflow_tail.models import Entry
from runflow_tail.times import NS_PER_SECOND, TimeValueError, format_instant, parse_instant

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "cancelled", "partial_succeeded"})
RUN_FIELDS = (
    "id",
    "status_code",
    "flow_id",
    "flow_name",
    "flow_version_id",
    "model_id",
    "failure_code",
    "failure_message",
    "failure_stage_code",
    "created_at",
    "started_at",
    "ended_at",
)
MAX_DIGEST_ITEMS = 50

_encode = msgspec.json.Encoder().encode


def line_of(entry: Entry) -> dict[str, Any]:
    """A triggering log line as an alert quotes it (its message exactly as received)."""
    data = entry.data()
    return {
        "id": entry.id,
        "stream": entry.stream,
        "timestamp": data.get("timestamp"),
        "level_code": data.get("level_code"),
        "message": data.get("message"),
        "run_id": data.get("run_id"),
    }


def run_summary(run: Mapping[str, Any] | None, run_id: str | None = None) -> dict[str, Any]:
    """The run context every alert carries: status, flow and model ids, failure, times."""
    source: Mapping[str, Any] = run if isinstance(run, Mapping) else {}
    summary = {field: source.get(field) for field in RUN_FIELDS}
    if summary["failure_stage_code"] is None:
        # One documentation page calls it failure_stage.
        summary["failure_stage_code"] = source.get("failure_stage")
    if summary["id"] is None:
        summary["id"] = run_id
    summary["duration_seconds"] = _duration(summary["started_at"], summary["ended_at"])
    summary["known"] = isinstance(run, Mapping)
    return summary


def _duration(started: Any, ended: Any) -> float | None:
    if not isinstance(started, str) or not isinstance(ended, str):
        return None
    try:
        return round((parse_instant(ended) - parse_instant(started)) / NS_PER_SECOND, 3)
    except TimeValueError:
        return None


def group_key_of(values: Sequence[Any]) -> str:
    return _encode(list(values)).decode()


def dedup_key(rule: str, group_key: str) -> str:
    """Stable per rule and group: PagerDuty folds a group's triggers and its resolve together."""
    return f"runflow-tail/{rule}/{hashlib.sha256(group_key.encode()).hexdigest()[:32]}"


def alert_id(*parts: str) -> str:
    return "alrt_" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def headline_of(kind: str, rule: str, run: Mapping[str, Any], line: Mapping[str, Any]) -> str:
    if kind == "resolve":
        return f"Resolved: {rule}"
    status = run.get("status_code")
    name = run.get("flow_name") or run.get("flow_id") or run.get("id") or "a run"
    if status == "failed":
        code = run.get("failure_code")
        return f"Run of {name} failed" + (f": {code}" if code else "")
    if isinstance(status, str) and status in TERMINAL_STATUSES:
        return f"Run of {name} ended {status}"
    message = line.get("message")
    if isinstance(message, str) and message.strip():
        return message.strip().splitlines()[0]
    return f"{rule} fired"


def detail_of(run: Mapping[str, Any], line: Mapping[str, Any]) -> str:
    failure = run.get("failure_message")
    if isinstance(failure, str) and failure:
        return failure
    message = line.get("message")
    return message if isinstance(message, str) else ""


def build_alert(
    *,
    kind: str,
    rule: str,
    severity: str,
    group: Mapping[str, Any],
    group_key: str,
    stream: str,
    run: dict[str, Any],
    lines: list[dict[str, Any]],
    counts: dict[str, int],
    first_match_ns: int | None,
    last_match_ns: int | None,
    fired_ns: int,
    title: str,
    text: str,
) -> dict[str, Any]:
    """An alert document without its per-destination ``id`` and ``destination``."""
    line = lines[0] if lines else {}
    doc: dict[str, Any] = {
        "kind": kind,
        "rule": rule,
        "severity": severity,
        "group": dict(group),
        "group_key": group_key,
        "dedup_key": dedup_key(rule, group_key),
        "stream": stream,
        "fired_at": format_instant(fired_ns),
        "first_match_at": _instant(first_match_ns),
        "last_match_at": _instant(last_match_ns),
        "run": run,
        "lines": lines,
        "counts": counts,
        "headline": headline_of(kind, rule, run, line),
        "detail": detail_of(run, line),
    }
    render_context = {**doc, "line": line}
    # Resolves keep their fixed wording: a title written for a failure would misread.
    templated = kind in ("alert", "test")
    doc["title"] = render(title if templated else "{headline}", render_context)
    doc["text"] = render(text if templated else "{detail}", render_context)
    return doc


def build_digest(
    *, rule: str, severity: str, items: list[dict[str, Any]], total: int, since_ns: int, now_ns: int
) -> dict[str, Any]:
    """One message listing the alerts a rule collected during its digest period."""
    shown = items[:MAX_DIGEST_ITEMS]
    period = max(0, now_ns - since_ns) // NS_PER_SECOND
    headline = f"{total} alert{'s' if total != 1 else ''} for {rule} in the last {period}s"
    detail = "\n".join(f"• {item['headline']}" for item in shown)
    if total > len(shown):
        detail += f"\n… and {total - len(shown)} more"
    return {
        "kind": "digest",
        "rule": rule,
        "severity": severity,
        "group": {},
        "group_key": "",
        "dedup_key": dedup_key(rule, f"digest:{since_ns}"),
        "stream": "",
        "fired_at": format_instant(now_ns),
        "first_match_at": format_instant(since_ns),
        "last_match_at": format_instant(now_ns),
        "run": run_summary(None),
        "lines": [],
        "counts": {"alerts": total, "omitted": total - len(shown)},
        "headline": headline,
        "detail": detail,
        "title": headline,
        "text": detail,
        "items": shown,
    }


def digest_item(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What a digest keeps of one alert."""
    return {
        "group": doc["group"],
        "headline": doc["headline"],
        "detail": doc["detail"],
        "title": doc["title"],
        "run": doc["run"],
        "lines": doc["lines"][:1],
        "fired_at": doc["fired_at"],
        "counts": doc["counts"],
    }


def for_destination(
    doc: Mapping[str, Any], destination: str, base_id: str
) -> tuple[str, bytes, dict[str, Any]]:
    """The document one destination receives: its id, its bytes, and the dict itself."""
    identity = alert_id(base_id, destination)
    final = {"id": identity, "destination": destination, **doc, "timestamp": doc["fired_at"]}
    return identity, _encode(final), final


def _instant(ns: int | None) -> str | None:
    return None if ns is None else format_instant(ns)


_FORMATTER = DottedFormatter()


def render(template: str, context: Mapping[str, Any]) -> str:
    return str(_FORMATTER.vformat(template, (), context))


def sample_alert(destination: str, now_ns: int) -> tuple[str, bytes, dict[str, Any]]:
    """The document ``runflow-tail alerts test`` sends: a realistic failed run."""
    run = run_summary(
        {
            "id": "0190b3a4-5c6d-7e8f-9a0b-000000000001",
            "status_code": "failed",
            "flow_id": "0190b3a4-5c6d-7e8f-9a0b-0000000000f1",
            "flow_name": "document-pipeline",
            "model_id": "0190b3a4-5c6d-7e8f-9a0b-0000000000a1",
            "failure_code": "NODE_TIMEOUT",
            "failure_message": "Node llm timed out after 30s",
            "failure_stage_code": "node_execution",
            "started_at": format_instant(now_ns - 42 * NS_PER_SECOND),
            "ended_at": format_instant(now_ns),
        }
    )
    lines = [
        {
            "id": "sample-line-1",
            "stream": "sample",
            "timestamp": format_instant(now_ns),
            "level_code": "error",
            "message": "Run failed: Node llm timed out after 30s",
            "run_id": run["id"],
        }
    ]
    doc = build_alert(
        kind="test",
        rule="runflow-tail test alert",
        severity="info",
        group={"run_id": run["id"]},
        group_key=group_key_of([run["id"]]),
        stream="sample",
        run=run,
        lines=lines,
        counts={"matches": 1, "suppressed": 0, "total": 1},
        first_match_ns=now_ns,
        last_match_ns=now_ns,
        fired_ns=now_ns,
        title="Test alert from runflow-tail: {headline}",
        text="If you can read this, alerts reach this destination. {detail}",
    )
    return for_destination(doc, destination, f"test:{now_ns}")
