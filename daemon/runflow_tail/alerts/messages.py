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
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from runflow_tail.dotted import DottedFormatter
from runflow_tail.models import Entry
from runflow_tail.run_object import duration_seconds, failure_stage, outcome, with_derived
from runflow_tail.times import NS_PER_SECOND, format_instant

RUN_FIELDS = (
    "id",
    "status_code",
    "model_id",
    "flow_id",
    "flow_version_id",
    "org_id",
    "failure_code",
    "failure_message",
    "created_at",
    "started_at",
    "completed_at",
    "duration_ms",
)
"""What an alert's ``run`` carries of the run, named as the API names them (``status_code``
only where the API's version has it), plus the derived ``outcome`` and
``duration_seconds``, ``failure_stage_code`` (whichever key the run uses) and the model's
``id``, ``slug`` and ``name``."""
MODEL_SUMMARY = ("id", "slug", "name")
MAX_DIGEST_ITEMS = 50

_encode = msgspec.json.Encoder().encode
_URL = re.compile(r"https?://[^\s<>|]+")


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
    """The run context every alert carries (see ``RUN_FIELDS``); ``known`` is False when
    the run could not be had (then only its id is there)."""
    source: Mapping[str, Any] = run if isinstance(run, Mapping) else {}
    summary: dict[str, Any] = {field: source.get(field) for field in RUN_FIELDS}
    if summary["id"] is None:
        summary["id"] = run_id
    summary["outcome"] = outcome(source) if source else None
    summary["duration_seconds"] = duration_seconds(source)
    summary["failure_stage_code"] = failure_stage(source)
    model = source.get("model")
    summary["model"] = (
        {key: model.get(key) for key in MODEL_SUMMARY} if isinstance(model, Mapping) else None
    )
    summary["known"] = isinstance(run, Mapping)
    return summary


def group_key_of(values: Sequence[Any]) -> str:
    return _encode(list(values)).decode()


def dedup_key(rule: str, group_key: str) -> str:
    """Stable per rule and group: PagerDuty folds a group's triggers and its resolve together."""
    return f"runflow-tail/{rule}/{hashlib.sha256(group_key.encode()).hexdigest()[:32]}"


def alert_id(*parts: str) -> str:
    return "alrt_" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def run_name(run: Mapping[str, Any]) -> str:
    """How people know a run: its model's name (the API names neither runs nor flows)."""
    model = run.get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    if isinstance(name, str) and name.strip():
        return name.strip()
    if run.get("flow_id"):
        return f"flow {run['flow_id']}"
    return f"run {run['id']}" if run.get("id") else "a run"


def headline_of(kind: str, rule: str, run: Mapping[str, Any], line: Mapping[str, Any]) -> str:
    if kind == "resolve":
        return f"Resolved: {rule}"
    result = run.get("outcome")
    if result == "failed":
        code = run.get("failure_code")
        return f"Run of {run_name(run)} failed" + (f": {code}" if code else "")
    if isinstance(result, str) and result != "running":
        return f"Run of {run_name(run)} ended {result}"
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
    run: Mapping[str, Any] | None,
    run_id: str | None,
    lines: list[dict[str, Any]],
    counts: dict[str, int],
    first_match_ns: int | None,
    last_match_ns: int | None,
    fired_ns: int,
    title: str,
    text: str,
    link: str = "",
) -> dict[str, Any]:
    """An alert document without its per-destination ``id`` and ``destination``.

    ``run`` is the whole run (or None when it could not be had); the document keeps its
    summary, while templates see every field of it, derived ones included.
    """
    line = lines[0] if lines else {}
    summary = run_summary(run, run_id)
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
        "run": summary,
        "lines": lines,
        "counts": counts,
        "headline": headline_of(kind, rule, summary, line),
        "detail": detail_of(summary, line),
    }
    whole_run = summary
    if isinstance(run, Mapping):
        whole_run = {**with_derived(run), "failure_stage_code": summary["failure_stage_code"]}
    context = {**doc, "line": line, "run": whole_run, "group": _nested(doc["group"])}
    rendered = render(link, context) if link else ""
    doc["link"] = rendered if _URL.fullmatch(rendered) else None
    context["link"] = doc["link"] or ""
    # Resolves keep their fixed wording: a title written for a failure would misread.
    templated = kind in ("alert", "test")
    doc["title"] = render(title if templated else "{headline}", context)
    doc["text"] = render(text if templated else "{detail}", context)
    return doc


def _nested(group: Mapping[str, Any]) -> dict[str, Any]:
    """``{"run.flow_id": x}`` as ``{"run": {"flow_id": x}}``, so ``{group.run.flow_id}``
    reads the way the rule's ``group_by`` names it."""
    nested: dict[str, Any] = {}
    for key, value in group.items():
        *parents, last = key.split(".")
        place = nested
        for part in parents:
            child = place.get(part)
            place = place.setdefault(part, {}) if isinstance(child, dict) or child is None else {}
        place[last] = value
    return nested


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
        "link": None,
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
