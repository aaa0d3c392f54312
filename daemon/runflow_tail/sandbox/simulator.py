"""Runs that live and die: queued → dispatching → running → an outcome, logging as they go.

One script drives a run. The simulator plays it in real time (sleeping between steps);
``POST /_sandbox/runs`` plays it instantly, 1 ms of log time per step, for alert tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import anyio

from runflow_tail.sandbox.options import SandboxOptions, TimestampStyle
from runflow_tail.sandbox.runs import FAILURES, NODE_KINDS, Flow, Run, instant_text, status_spelling
from runflow_tail.sandbox.world import World

OUTCOMES = ("succeeded", "failed", "canceled", "partial_succeeded")
_IDLE_RECHECK_SECONDS = 0.25
_STEP_NS = 1_000_000  # log time between steps of a run played instantly
_LEVELS = (("debug", 0.3), ("info", 0.45), ("warning", 0.2), ("error", 0.05))
_UNUSUAL_LEVELS = (("trace", "debug"), ("notice", "info"), ("critical", "error"))
"""Levels the API may use beyond the usual four, each with the usual level it reads like."""
_LINES: dict[str, dict[str, tuple[str, ...]]] = {
    # What each kind of node logs, at the level a person would expect of that message:
    # the demo must read like a real organization's logs.
    "http": {
        "debug": (
            "GET {url} returned 200 in {ms} ms",
            "Redirect followed to the document's canonical URL",
        ),
        "info": ("Downloaded {kb} KB from the document store",),
        "warning": ("GET {url} took {slow} ms, longer than the 2000 ms budget",),
        "error": ("GET {url} returned 503; retrying (attempt {attempt} of 3)",),
    },
    "tool": {
        "debug": ("Tool call finished in {ms} ms",),
        "info": ("OCR recognised {n} pages with mean confidence 0.{conf}",),
        "warning": ("Page {n} has low contrast; recognition may be degraded",),
        "error": ("OCR could not decode page {n}; the page is skipped",),
    },
    "retrieval": {
        "debug": ("Reranked candidates in {ms} ms",),
        "info": ("Retrieved {n} documents from index kb-prod",),
        "warning": ("Index kb-prod is {n} minutes behind its source",),
        "error": ("Query to index kb-prod failed: connection reset; retrying",),
    },
    "model": {
        "debug": ("Calling model with {tokens} prompt tokens",),
        "info": ("Model answered with {n} completion tokens in {ms} ms",),
        "warning": (
            "Response truncated at max_tokens; continuing",
            "Provider returned 429; retrying in {n} s",
        ),
        "error": ("Provider returned 500 for the completion; retrying in {n} s",),
    },
    "code": {
        "debug": ("Parsed the model's answer as JSON ({kb} bytes)",),
        "info": ("Validated {n} fields against schema v{n}",),
        "warning": ("Field due_date missing; set to null",),
        "error": ("Field total is not a decimal ('N/A'); set to null",),
    },
    "webhook": {
        "debug": ("Signed the result payload ({kb} bytes)",),
        "info": ("Delivered result to https://hooks.example.com/runflow in {ms} ms",),
        "warning": ("Webhook answered 502; will retry",),
        "error": ("Webhook answered 500 three times; the result waits for redelivery",),
    },
}


def pick_outcome(world: World) -> str:
    options = world.options
    draw = world.rng.random()
    for outcome, share in (
        ("failed", options.world_fail_ratio),
        ("canceled", options.world_cancel_ratio),
        ("partial_succeeded", options.world_partial_ratio),
    ):
        if draw < share:
            return outcome
        draw -= share
    return "succeeded"


def _level(world: World) -> tuple[str, str]:
    """The level a line is logged at, and the usual level whose messages it reads like."""
    if world.rng.random() < world.options.world_unusual_level_rate:
        return world.rng.choice(_UNUSUAL_LEVELS)
    draw = world.rng.random()
    for level, share in _LEVELS:
        if draw < share:
            return level, level
        draw -= share
    return "info", "info"


def _line(world: World, kind: str) -> tuple[str, str]:
    """A line a node of ``kind`` logs: (level, message), the message fitting the level."""
    rng = world.rng
    level, reads_like = _level(world)
    template = rng.choice(_LINES.get(kind, _LINES["code"])[reads_like])
    message = template.format(
        url="https://files.example.com/docs/report.pdf",
        ms=rng.randint(3, 4000),
        kb=rng.randint(10, 9000),
        n=rng.randint(1, 40),
        conf=rng.randint(40, 99),
        tokens=rng.randint(200, 12000),
        slow=rng.randint(2100, 9000),
        attempt=rng.randint(1, 3),
    )
    return level, message


# -- how a run moves, in the fields the reference gives it -----------------------------------


def begin(run: Run, ns: int, style: TimestampStyle) -> None:
    run.started_ns = ns
    run.update(status_code="running", started_at=instant_text(ns, style))


def node_started(run: Run, index: int, ns: int, style: TimestampStyle) -> None:
    run.update_node(index, state_code="running", started_at=instant_text(ns, style))


def node_ended(
    run: Run,
    index: int,
    state: str,
    ns: int,
    options: SandboxOptions,
    *,
    started_ns: int,
    error: str | None = None,
) -> None:
    millis = (ns - started_ns) // 1_000_000
    run.update_node(
        index,
        state_code=state,
        completed_at=instant_text(ns, options.timestamp_style),
        duration_ms=millis,
        cost=f"{millis * 0.0000021:.6f}",
        error_message=error,
    )
    run.update(nodes_completed=int(run.doc["nodes_completed"]) + 1)


def finish(
    run: Run,
    status: str,
    ns: int,
    options: SandboxOptions,
    rng: random.Random,
    *,
    failure: tuple[str, str, str] | None = None,
    output: dict[str, Any] | None = None,
) -> None:
    """The run ends: its status, ``completed_at``, ``duration_ms`` and ``cost``, and its
    failure details where the schema version has them (the older one has none)."""
    started = run.started_ns if run.started_ns is not None else ns
    millis = max(0, ns - started) // 1_000_000
    changes: dict[str, Any] = {
        "status_code": status_spelling(status, options),
        "completed_at": instant_text(ns, options.timestamp_style),
        "duration_ms": millis,
        "cost": f"{millis * 0.0000035:.6f}",
        "output": output,
    }
    if "failure_code" in run.doc and failure is not None:
        code, message, stage = failure
        changes.update(failure_code=code, failure_message=message)
        changes[options.failure_stage_key] = stage
    if "cost_breakdown" in run.doc:
        changes["cost_breakdown"] = {
            "compute": f"{millis * 0.000001:.6f}",
            "model": f"{millis * 0.0000025:.6f}",
        }
    if "current_evaluation_summary" in run.doc and rng.random() < 0.3:
        # An evaluation's own status: "failed" here says the evaluation failed, not the run.
        evaluation = rng.choice(("completed", "completed", "failed"))
        changes["current_evaluation_summary"] = {
            "passed": None if evaluation == "failed" else rng.random() < 0.8,
            "status_code": evaluation,
            "score": None if evaluation == "failed" else round(rng.random(), 2),
        }
    run.update(**changes)


def run_script(
    world: World,
    run: Run,
    outcome: str,
    now: Callable[[], int],
    *,
    lines: int | None = None,
    failure: tuple[str, str, str] | None = None,
) -> Iterator[float]:
    """Play ``run`` to ``outcome``; yields the seconds to wait before each next step.

    A failed run's failure line is logged at its ``completed_at``, and every line before
    it earlier, as a real run does: alerts must quote that line, not an earlier one.
    """
    options = world.options
    rng = world.rng
    pace = options.world_run_seconds
    flow: Flow | None = run.flow
    nodes = flow.nodes if flow else ()
    total_lines = (
        lines if lines is not None else max(1, round(rng.gauss(options.world_lines_per_run, 2)))
    )
    steps = 4 + 2 * len(nodes) + total_lines
    gap = pace / steps

    def write(level: str, message: str, meta: dict[str, Any]) -> None:
        world.write(run, level, message, meta, ts_ns=now())

    def delay() -> float:
        return gap * rng.uniform(0.5, 1.5)

    write("info", f"Run queued by {run.doc.get('source_code') or 'api'}", {"stage": "queue"})
    yield delay()
    run.update(status_code="dispatching")
    worker = f"w-{rng.randint(1, 12)}"
    write("debug", f"Dispatching run to worker {worker}", {"stage": "dispatch", "worker": worker})
    yield delay()
    begin(run, now(), options.timestamp_style)
    write("info", f"Run started on worker {worker}", {"stage": "run", "worker": worker})
    failing = (
        rng.randrange(len(nodes)) if nodes and outcome in ("failed", "partial_succeeded") else -1
    )
    remaining = total_lines
    for step, (_node_id, name, kind) in enumerate(nodes):
        yield delay()
        node_start = now()
        node_started(run, step, node_start, options.timestamp_style)
        write("info", f"Node {name} started", {"node": name, "step": step})
        share = math.ceil(remaining / (len(nodes) - step))
        for _ in range(share):
            yield delay()
            level, message = _line(world, kind)
            write(level, message, {"node": name, "step": step})
        remaining -= share
        yield delay()
        node_end = now()
        state = "failed" if step == failing else "succeeded"
        if outcome == "canceled" and step == len(nodes) - 1:
            state = status_spelling("canceled", options)
        code, template, stage = failure or rng.choice(FAILURES)
        message = template.format(node=name)
        error = message if state == "failed" else None
        node_ended(run, step, state, node_end, options, started_ns=node_start, error=error)
        if step == failing and outcome == "failed":
            finish(run, "failed", node_end, options, rng, failure=(code, message, stage))
            meta = {"node": name, "step": step, "failure_code": code}
            write("error", f"Run failed: {message}", meta)
            return
        if state == "failed":
            write("error", message, {"node": name, "step": step})
        else:
            level = "debug" if state == "succeeded" else "warning"
            write(level, f"Node {name} finished as {state}", {"node": name, "step": step})
        if outcome == "canceled" and step == len(nodes) - 1:
            break
    yield delay()
    ended = now()
    if outcome == "failed":
        # A flow without nodes still fails, at dispatch.
        code, template, stage = failure or rng.choice(FAILURES)
        message = template.format(node="-")
        finish(run, "failed", ended, options, rng, failure=(code, message, stage))
        write("error", f"Run failed: {message}", {"failure_code": code})
    elif outcome == "canceled":
        finish(run, "canceled", ended, options, rng)
        write("warning", "Run canceled by user", {"stage": "cancel"})
    elif outcome == "partial_succeeded":
        finish(run, "partial_succeeded", ended, options, rng, output={"partial": True})
        write("warning", "Run partially succeeded: one node failed", {"stage": "finish"})
    else:
        output = {"summary": "Extracted 14 fields", "fields": 14, "tokens": rng.randint(500, 9000)}
        finish(run, "succeeded", ended, options, rng, output=output)
        write("info", "Run succeeded", {"stage": "finish"})


def play_instantly(
    world: World,
    *,
    outcome: str,
    run_id: str | None = None,
    lines: int = 3,
    start_ns: int | None = None,
    failure: tuple[str, str, str] | None = None,
    flow: Flow | None = None,
) -> Run:
    """Create a run and write its whole life at once, 1 ms of log time per step."""
    if start_ns is None:
        # Start far enough back that the whole life lies in the past, hence is visible now.
        start_ns = world.now() - (4 + 2 * len(NODE_KINDS) + lines + 2) * _STEP_NS
    run = world.start_run(run_id=run_id, flow=flow)
    # Created when its life begins, not when the sandbox was asked to play it.
    created = instant_text(start_ns, world.options.timestamp_style)
    nodes = [{**node, "created_at": created} for node in run.doc["node_runs"]]
    run.update(created_at=created, node_runs=nodes)
    virtual = [start_ns]

    def now() -> int:
        return virtual[0]

    for _delay in run_script(world, run, outcome, now, lines=lines, failure=failure):
        virtual[0] += _STEP_NS
    return run


async def run_world(world: World) -> None:
    """Start runs at ``world_rate`` per second until cancelled (re-reads options each time)."""
    async with anyio.create_task_group() as runs:
        while True:
            rate = world.options.world_rate
            if rate <= 0:
                # Polling keeps the rate changeable at runtime without any wiring.
                await anyio.sleep(_IDLE_RECHECK_SECONDS)
                continue
            world.runs_playing += 1
            runs.start_soon(_play_live, world)
            await anyio.sleep(world.rng.expovariate(rate))


async def _play_live(world: World) -> None:
    # Counted (by run_world) from before the task exists, so "nothing playing" means no
    # entry is still to come (a run may log once more after reaching its final status).
    try:
        run = world.start_run()
        for delay in run_script(world, run, pick_outcome(world), world.now):
            await anyio.sleep(delay)
    finally:
        world.runs_playing -= 1
