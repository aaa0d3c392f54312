"""The sample alert of ``runflow-tail alerts test``: a failed run, field for field as the
API's current version renders it, alerted by one of the configured rules (its own title,
text, link, severity and groups) or by a generic test rule."""

from __future__ import annotations

from typing import Any

from runflow_tail.alerts.messages import build_alert, for_destination, group_key_of
from runflow_tail.config.alerts import AlertRule
from runflow_tail.dotted import lookup
from runflow_tail.run_object import with_derived
from runflow_tail.times import format_instant

SAMPLE_RUN_ID = "0190b3a4-5c6d-7e8f-9a0b-000000000001"
_ORG = "0190b3a4-5c6d-7e8f-9a0b-1c2d3e4f5a6b"
_FLOW = "0190b3a4-5c6d-7e8f-9a0b-0000000000f1"
_DURATION_MS = 42_317
_MS = 1_000_000


def sample_run(now_ns: int) -> dict[str, Any]:
    """A run that failed just now in its llm node, in the reference's current version."""
    started = now_ns - _DURATION_MS * _MS
    created = format_instant(started - 850 * _MS)

    def node(index: int, state: str, took_ms: int, error: str | None) -> dict[str, Any]:
        begun = started + index * 5_000 * _MS
        return {
            "id": f"0190b3a4-5c6d-7e8f-9a0b-00000000010{index}",
            "run_id": SAMPLE_RUN_ID,
            "node_id": f"0190b3a4-5c6d-7e8f-9a0b-00000000020{index}",
            "flow_id": _FLOW,
            "state_code": state,
            "input": None,
            "output": None,
            "input_signature": None,
            "preview_type": None,
            "preview_value": None,
            "duration_ms": took_ms,
            "cost": f"{took_ms * 0.0000021:.6f}",
            "retry_count": 0,
            "error_message": error,
            "created_at": created,
            "started_at": format_instant(begun),
            "completed_at": format_instant(begun + took_ms * _MS),
        }

    failure = "Node llm timed out after 30s"
    return {
        "id": SAMPLE_RUN_ID,
        "flow_id": _FLOW,
        "model_id": "0190b3a4-5c6d-7e8f-9a0b-0000000000a1",
        "comfyui_workflow_id": None,
        "target_version": 7,
        "org_id": _ORG,
        "input": {"document_url": "https://files.example.com/docs/sample.pdf"},
        "output": None,
        "context": None,
        "duration_ms": _DURATION_MS,
        "cost": "0.004210",
        "nodes_total": 3,
        "nodes_completed": 2,
        "jurisdiction_code": "eu",
        "flow_version_id": "0190b3a4-5c6d-7e8f-9a0b-0000000000f2",
        "request_id": "0190b3a4-5c6d-7e8f-9a0b-0000000000e1",
        "created_by": "0190b3a4-0000-7000-8000-00000000a11c",
        "created_at": created,
        "started_at": format_instant(started),
        "completed_at": format_instant(now_ns),
        "callback_url": None,
        "metadata": {},
        "has_logs": True,
        "has_node_runs": True,
        "links": {"self": f"/v1/runs/{SAMPLE_RUN_ID}"},
        "node_runs": [
            node(0, "succeeded", 1_204, None),
            node(1, "failed", 30_000, failure),
            node(2, "pending", 0, None) | {"duration_ms": None, "cost": None},
        ],
        "cost_breakdown": {"compute": "0.001100", "model": "0.003110"},
        "resolved_template_id": None,
        "batch_id": None,
        "client_ref": None,
        "failure_code": "NODE_TIMEOUT",
        "failure_message": failure,
        "failure_stage_code": "node_execution",
        "feedback_is_positive": None,
        "feedback_reason": None,
        "source_chat_message_id": None,
        "current_evaluation_summary": None,
        "model": {
            "id": "0190b3a4-5c6d-7e8f-9a0b-0000000000a1",
            "org_id": _ORG,
            "slug": "invoice-extractor",
            "name": "Invoice extractor",
            "description": "Extracts line items and totals from supplier invoices.",
            "version": 12,
            "status_code": "active",
        },
        "logs": [],
    }


def sample_alert(
    destination: str, now_ns: int, rule: AlertRule | None = None
) -> tuple[str, bytes, dict[str, Any]]:
    """The document ``alerts test`` sends to ``destination``: ``rule``'s alert for the
    sample run's failure line, or, without a rule, a generic test alert."""
    run = sample_run(now_ns)
    line = {
        "id": "sample-line-1",
        "stream": "sample",
        "timestamp": run["completed_at"],
        "level_code": "error",
        "message": f"Run failed: {run['failure_message']}",
        "run_id": run["id"],
    }
    group_by: tuple[str, ...] = ("run_id",)
    if rule is None:
        name, severity, link = "runflow-tail test alert", "info", ""
        title = "Test alert from runflow-tail: {headline}"
        text = "If you can read this, alerts reach this destination. {detail}"
    else:
        name, severity, group_by, link = rule.name, rule.severity, rule.group_by, rule.link
        title, text = rule.title, rule.text
    view = {**line, "run": with_derived(run)}
    values = [lookup(view, path) for path in group_by]
    doc = build_alert(
        kind="test",
        rule=name,
        severity=severity,
        group=dict(zip(group_by, values, strict=True)),
        group_key=group_key_of(values),
        stream="sample",
        run=run,
        run_id=run["id"],
        lines=[line],
        counts={"matches": 1, "suppressed": 0, "total": 1},
        first_match_ns=now_ns,
        last_match_ns=now_ns,
        fired_ns=now_ns,
        title=title,
        text=text,
        link=link,
    )
    return for_destination(doc, destination, f"test:{name}:{now_ns}")
