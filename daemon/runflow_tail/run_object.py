"""The run object as the Runflow API reference describes it, and what runflow-tail derives.

The reference shows two versions of a run. The *older* one has a top-level
``status_code`` (plus ``target_type`` and ``source_code``); the *current* rendering has no
top-level ``status_code`` but ``failure_code``, ``failure_message``, an embedded ``model``,
``current_evaluation_summary`` (an evaluation's status, not the run's) and more. A run
ends at ``completed_at`` and lasts ``duration_ms``; there is no ``ended_at``, no flow name
and no ``organization_id``. Everything here accepts both versions.

Derived fields, which the API never sends and runflow-tail adds wherever a rule, a
template or a sink's ``match`` looks at a run (``with_derived``):

``outcome``
    ``running``, ``succeeded``, ``failed``, ``canceled`` or ``partial_succeeded``. From
    ``status_code`` when the run has one (``queued`` and ``dispatching`` are ``running``,
    ``cancelled`` is ``canceled``). Without it: ``failed`` once ``failure_code`` or
    ``failure_message`` is set, ``running`` while ``completed_at`` is empty; an ended run
    is ``canceled`` when a node run was canceled, ``partial_succeeded`` when a node run
    failed and another succeeded (``failed`` when none succeeded), else ``succeeded``. A
    ``status_code`` this module does not know counts as ``failed`` once the run ended: a
    new way to fail must be heard.
``duration_seconds``
    ``duration_ms`` / 1000, else ``completed_at`` - ``started_at``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Final

from runflow_tail.times import NS_PER_SECOND, TimeValueError, parse_instant


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


OLDER_FIELDS: Final = _names(
    """id flow_id model_id comfyui_workflow_id target_type target_version org_id status_code
    source_code input output context duration_ms cost nodes_total nodes_completed
    jurisdiction_code flow_version_id request_id created_by created_at started_at
    completed_at callback_url metadata has_logs has_node_runs links node_runs"""
)
CURRENT_FIELDS: Final = (OLDER_FIELDS - {"target_type", "source_code", "status_code"}) | _names(
    """cost_breakdown resolved_template_id batch_id client_ref failure_code failure_message
    feedback_is_positive feedback_reason source_chat_message_id current_evaluation_summary
    model logs"""
)
FAILURE_STAGE_KEYS: Final = ("failure_stage_code", "failure_stage")
"""Documentation pages (not the reference) name the failure stage; one calls it failure_stage."""
NODE_RUN_FIELDS: Final = _names(
    """id run_id node_id flow_id state_code input output input_signature preview_type
    preview_value duration_ms cost retry_count error_message created_at started_at
    completed_at"""
)
MODEL_FIELDS: Final = _names("id org_id slug name description version status_code")
"""The model's documented fields; the reference lists more ("..."), so it is open."""
DERIVED_FIELDS: Final = frozenset({"outcome", "duration_seconds"})
REFERENCE_FIELDS: Final = OLDER_FIELDS | CURRENT_FIELDS | set(FAILURE_STAGE_KEYS)
OUTCOMES: Final = ("running", "succeeded", "failed", "canceled", "partial_succeeded")

_CLOSED_OBJECTS: Final = {
    "current_evaluation_summary": frozenset({"passed", "status_code", "score"})
}
_OPEN_OBJECTS: Final = frozenset(
    {"input", "output", "context", "metadata", "links", "cost_breakdown", "model"}
)
_LISTS: Final = frozenset({"node_runs", "logs"})
_STATUS_OUTCOME: Final = {
    "queued": "running",
    "dispatching": "running",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
    "cancelled": "canceled",
    "partial_succeeded": "partial_succeeded",
}
# Node state codes are undocumented; these are the spellings that say how a node ended.
_NODE_CANCELED: Final = frozenset({"canceled", "cancelled"})
_NODE_FAILED: Final = frozenset({"failed", "error", "errored"})
_NODE_SUCCEEDED: Final = frozenset({"succeeded", "completed", "success"})
_GUESSES: Final = {
    "ended_at": "run.completed_at (the run ends at completed_at)",
    "finished_at": "run.completed_at (the run ends at completed_at)",
    "flow_name": "run.flow_id or run.model.name (the API gives a run no flow name)",
    "name": "run.model.name (the API gives a run no name of its own)",
    "organization_id": "run.org_id",
    "credits_used": "run.cost (a decimal string)",
    "status": "run.outcome (derived) or run.status_code (older API versions only)",
    "duration": "run.duration_ms, or run.duration_seconds (derived)",
    "inputs": "run.input",
    "outputs": "run.output",
    "model_name": "run.model.name",
    "error_message": "run.failure_message (error_message belongs to node_runs[])",
}


def outcome(run: Mapping[str, Any]) -> str:
    """The run's outcome (see the module docstring), from either schema version."""
    status = run.get("status_code")
    if isinstance(status, str) and status:
        known = _STATUS_OUTCOME.get(status.lower())
        if known is not None:
            return known
    if run.get("failure_code") or run.get("failure_message"):
        return "failed"
    if not run.get("completed_at"):
        return "running"
    if isinstance(status, str) and status:
        return "failed"
    states = {
        str(node.get("state_code") or "").lower()
        for node in run.get("node_runs") or ()
        if isinstance(node, Mapping)
    }
    if states & _NODE_CANCELED:
        return "canceled"
    if states & _NODE_FAILED:
        return "partial_succeeded" if states & _NODE_SUCCEEDED else "failed"
    return "succeeded"


def instant_ns(value: Any) -> int | None:
    """An RFC 3339 field of the run as epoch ns, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_instant(value)
    except TimeValueError:
        return None


def end_ns(run: Mapping[str, Any]) -> int | None:
    """When the run ended (``completed_at``), or None while it has not."""
    return instant_ns(run.get("completed_at"))


def duration_seconds(run: Mapping[str, Any]) -> float | None:
    """``duration_ms`` in seconds, else the time from ``started_at`` to ``completed_at``."""
    millis = run.get("duration_ms")
    if isinstance(millis, int | float) and not isinstance(millis, bool) and millis >= 0:
        return round(millis / 1000, 3)
    started, ended = instant_ns(run.get("started_at")), end_ns(run)
    if started is None or ended is None or ended < started:
        return None
    return round((ended - started) / NS_PER_SECOND, 3)


def failure_stage(run: Mapping[str, Any]) -> Any:
    for key in FAILURE_STAGE_KEYS:
        if run.get(key) is not None:
            return run[key]
    return None


def with_derived(run: Mapping[str, Any]) -> dict[str, Any]:
    """The run with ``outcome`` and ``duration_seconds`` added (a new dict)."""
    return {**run, "outcome": outcome(run), "duration_seconds": duration_seconds(run)}


def has_path(run: Any, path: str) -> bool:
    """Whether the run carries ``path`` (``model.name``) at all, null or not."""
    value = run
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def run_paths(fields: Iterable[str]) -> set[str]:
    """The paths below ``run.`` among dotted ``fields`` (``run.model.name`` -> ``model.name``)."""
    return {field[4:] for field in fields if field.startswith("run.") and len(field) > 4}


def checked_path(path: str) -> str:
    """What of ``path`` one run can prove absent: inside a free-form object (``input``,
    ``metadata``, the model's undocumented fields...) a key one run lacks another may
    have, so only the object itself is checked."""
    head, _, rest = path.partition(".")
    child = rest.split(".")[0]
    if head == "model" and child in MODEL_FIELDS:
        return f"model.{child}"
    return head if head in _OPEN_OBJECTS else path


def missing_paths(run: Mapping[str, Any], paths: Iterable[str]) -> list[str]:
    """Which of ``paths`` (below ``run.``, as ``checked_path`` gives them) the run lacks;
    derived fields are never missing."""
    checked = {checked_path(p) for p in paths if p.split(".")[0] not in DERIVED_FIELDS}
    return sorted(p for p in checked if not has_path(run, p))


def unknown_path_problem(path: str) -> str | None:
    """Why ``run.<path>`` can never hold a value, with a suggestion; None when it can."""
    head, _, rest = path.partition(".")
    if head in DERIVED_FIELDS or head in REFERENCE_FIELDS:
        if not rest or head in _OPEN_OBJECTS:
            return None
        closed = _CLOSED_OBJECTS.get(head)
        child = rest.split(".")[0]
        if closed is not None and child in closed and "." not in rest:
            return None
        if closed is not None:
            known = ", ".join(f"run.{head}.{c}" for c in sorted(closed))
            return f"run.{path} is not in the Runflow run object; {head} holds {known}"
        if head in _LISTS:
            return (
                f"run.{path} cannot be looked up: run.{head} is a list (name run.{head} "
                "itself, or use an alert rule on its entries' fields)"
            )
        return f"run.{path} cannot hold a value: run.{head} is not an object"
    hint = _GUESSES.get(head)
    if hint is None:
        close = difflib.get_close_matches(head, sorted(REFERENCE_FIELDS | DERIVED_FIELDS), n=1)
        hint = f"run.{close[0]}" if close else None
    if hint is not None:
        return f"run.{path} is not a field of the Runflow run object; did you mean {hint}?"
    return (
        f"run.{path} is not a field of the Runflow run object (the API reference's fields, "
        "and the derived run.outcome and run.duration_seconds)"
    )
