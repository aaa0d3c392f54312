"""Runs that live and die: queued → dispatching → running → an outcome, logging as they go.

One script drives a run. The simulator plays it in real time (sleeping between steps);
``POST /_sandbox/runs`` plays it instantly, 1 ms of log time per step, for alert tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import anyio

from runflow_tail.sandbox.runs import FAILURES, NODE_KINDS, Flow, Run, instant_text, status_spelling
from runflow_tail.sandbox.world import World

OUTCOMES = ("succeeded", "failed", "canceled", "partial_succeeded")
_IDLE_RECHECK_SECONDS = 0.25
_STEP_NS = 1_000_000  # log time between steps of a run played instantly
_LEVELS = (("debug", 0.3), ("info", 0.45), ("warning", 0.2), ("error", 0.05))
_UNUSUAL_LEVELS = ("trace", "notice", "critical")
_LINES = {
    "http": (
        "GET {url} returned 200 in {ms} ms",
        "Downloaded {kb} KB from the document store",
        "Redirect followed to the document's canonical URL",
    ),
    "tool": (
        "OCR recognised {n} pages with mean confidence 0.{conf}",
        "Tool call finished in {ms} ms",
        "Page {n} has low contrast; recognition may be degraded",
    ),
    "retrieval": (
        "Retrieved {n} documents from index kb-prod",
        "Reranked candidates in {ms} ms",
        "Index kb-prod is {n} minutes behind its source",
    ),
    "model": (
        "Calling model with {tokens} prompt tokens",
        "Model answered with {n} completion tokens in {ms} ms",
        "Response truncated at max_tokens; continuing",
        "Provider returned 429; retrying in {n} s",
    ),
    "code": (
        "Validated {n} fields against schema v{n}",
        "Field due_date missing; set to null",
    ),
    "webhook": (
        "Delivered result to https://hooks.example.com/runflow in {ms} ms",
        "Webhook answered 502; will retry",
    ),
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


def _level(world: World) -> str:
    if world.rng.random() < world.options.world_unusual_level_rate:
        return world.rng.choice(_UNUSUAL_LEVELS)
    draw = world.rng.random()
    for level, share in _LEVELS:
        if draw < share:
            return level
        draw -= share
    return "info"


def _line(world: World, kind: str) -> str:
    rng = world.rng
    template = rng.choice(_LINES.get(kind, _LINES["code"]))
    return template.format(
        url="https://files.example.com/docs/report.pdf",
        ms=rng.randint(3, 4000),
        kb=rng.randint(10, 9000),
        n=rng.randint(1, 40),
        conf=rng.randint(40, 99),
        tokens=rng.randint(200, 12000),
    )


def run_script(
    world: World,
    run: Run,
    outcome: str,
    now: Callable[[], int],
    *,
    lines: int | None = None,
    failure: tuple[str, str, str] | None = None,
) -> Iterator[float]:
    """Play ``run`` to ``outcome``; yields the seconds to wait before each next step."""
    options = world.options
    rng = world.rng
    pace = options.world_run_seconds
    style = options.timestamp_style
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

    write("info", f"Run queued by {run.doc.get('trigger', 'api')}", {"stage": "queue"})
    yield delay()
    run.update(status_code="dispatching")
    worker = f"w-{rng.randint(1, 12)}"
    write("debug", f"Dispatching run to worker {worker}", {"stage": "dispatch", "worker": worker})
    yield delay()
    started = now()
    run.update(status_code="running", started_at=instant_text(started, style))
    write("info", f"Run started on worker {worker}", {"stage": "run", "worker": worker})
    failing = (
        rng.randrange(len(nodes)) if nodes and outcome in ("failed", "partial_succeeded") else -1
    )
    remaining = total_lines
    for step, (_node_id, name, kind) in enumerate(nodes):
        yield delay()
        node_start = now()
        run.update_node(step, state_code="running", started_at=instant_text(node_start, style))
        write("info", f"Node {name} started", {"node": name, "step": step})
        share = math.ceil(remaining / (len(nodes) - step))
        for _ in range(share):
            yield delay()
            write(_level(world), _line(world, kind), {"node": name, "step": step})
        remaining -= share
        yield delay()
        node_end = now()
        state = "failed" if step == failing else "succeeded"
        if outcome == "canceled" and step == len(nodes) - 1:
            state = status_spelling("canceled", options)
        run.update_node(
            step,
            state_code=state,
            ended_at=instant_text(node_end, style),
            duration_ms=(node_end - node_start) // 1_000_000,
        )
        if step == failing and outcome == "failed":
            code, template, stage = failure or rng.choice(FAILURES)
            message = template.format(node=name)
            run.update(
                status_code="failed",
                ended_at=instant_text(node_end, style),
                failure_code=code,
                failure_message=message,
                **{options.failure_stage_key: stage},
            )
            meta = {"node": name, "step": step, "failure_code": code}
            write("error", f"Run failed: {message}", meta)
            return
        write("debug", f"Node {name} finished as {state}", {"node": name, "step": step})
        if outcome == "canceled" and step == len(nodes) - 1:
            break
    yield delay()
    ended = instant_text(now(), style)
    if outcome == "failed":
        # A flow without nodes still fails, at dispatch.
        code, template, stage = failure or rng.choice(FAILURES)
        message = template.format(node="-")
        changes: dict[str, Any] = {"failure_code": code, "failure_message": message}
        run.update(
            status_code="failed", ended_at=ended, **changes, **{options.failure_stage_key: stage}
        )
        write("error", f"Run failed: {message}", {"failure_code": code})
    elif outcome == "canceled":
        run.update(status_code=status_spelling("canceled", options), ended_at=ended)
        write("warning", "Run canceled by user", {"stage": "cancel"})
    elif outcome == "partial_succeeded":
        run.update(status_code="partial_succeeded", ended_at=ended, outputs={"partial": True})
        write("warning", "Run partially succeeded: one node failed", {"stage": "finish"})
    else:
        outputs = {"summary": "Extracted 14 fields", "fields": 14, "tokens": rng.randint(500, 9000)}
        run.update(status_code="succeeded", ended_at=ended, outputs=outputs)
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
