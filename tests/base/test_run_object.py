"""The run object: outcome, end and duration derived the same way from both schema versions."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from runflow_tail import run_object
from runflow_tail.run_object import duration_seconds, outcome, unknown_path_problem
from runflow_tail.sandbox import SandboxOptions, World
from runflow_tail.sandbox.simulator import play_instantly

TERMINAL = ("succeeded", "failed", "canceled", "partial_succeeded")
STATUSES = {
    "queued": "running",
    "dispatching": "running",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "canceled",
    "cancelled": "canceled",
    "partial_succeeded": "partial_succeeded",
}
INSTANTS = st.sampled_from(
    [None, "2026-11-28T10:00:00Z", "2026-11-28T10:00:05.250+00:00", "2026-11-28T11:00:00.5Z"]
)
NODES = st.lists(
    st.fixed_dictionaries(
        {"state_code": st.sampled_from(["pending", "running", "succeeded", "failed", None])}
    ),
    max_size=4,
)
EVALUATIONS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "passed": st.one_of(st.none(), st.booleans()),
            "status_code": st.sampled_from(["completed", "failed", "pending"]),
            "score": st.one_of(st.none(), st.floats(0, 1)),
        }
    ),
)


@st.composite
def current_runs(draw: st.DrawFn) -> dict[str, Any]:
    """Runs shaped like the current rendering: no status_code, anything else nullable."""
    return {
        "id": "r1",
        "failure_code": draw(st.sampled_from([None, "", "NODE_TIMEOUT"])),
        "failure_message": draw(st.sampled_from([None, "", "Node llm timed out"])),
        "started_at": draw(INSTANTS),
        "completed_at": draw(INSTANTS),
        "duration_ms": draw(st.one_of(st.none(), st.integers(0, 10**9))),
        "node_runs": draw(NODES),
        "current_evaluation_summary": draw(EVALUATIONS),
    }


@settings(max_examples=150, deadline=None)
@given(
    schema=st.sampled_from(["current", "older"]),
    played=st.sampled_from(TERMINAL),
    spelling=st.sampled_from(["canceled", "cancelled"]),
    stage_key=st.sampled_from(["failure_stage_code", "failure_stage"]),
    seed=st.integers(0, 2**16),
    lines=st.integers(0, 6),
)
def test_every_snapshot_of_a_played_run_has_the_outcome_it_had_then(
    schema: str, played: str, spelling: str, stage_key: str, seed: int, lines: int
) -> None:
    """Whatever the schema version and spellings, each run snapshot the sandbox served is
    `running` until completed_at is set and the played outcome from then on."""
    options = SandboxOptions(
        run_schema=schema,
        canceled_spelling=spelling,
        failure_stage_key=stage_key,
        world_seed=seed,
    )
    world = World(options)
    run = play_instantly(world, outcome=played, lines=lines)
    assert outcome(run.doc) == played
    for entry in world.store.by_run[run.id]:
        snapshot = entry.run_doc
        assert outcome(snapshot) == (played if snapshot["completed_at"] else "running")


@given(run=current_runs(), status=st.sampled_from(sorted(STATUSES)))
def test_a_known_status_code_decides_whatever_else_the_run_says(
    run: dict[str, Any], status: str
) -> None:
    """Older schema: status_code alone decides (cancelled is canceled)."""
    assert outcome({**run, "status_code": status}) == STATUSES[status]


@given(run=current_runs())
def test_without_status_code_failure_details_decide_and_evaluations_never_do(
    run: dict[str, Any],
) -> None:
    """Current schema: a failure code or message means failed; no end yet means running;
    the evaluation's own status_code is never read as the run's."""
    found = outcome(run)
    if run["failure_code"] or run["failure_message"]:
        assert found == "failed"
    elif not run["completed_at"]:
        assert found == "running"
    else:
        assert found in TERMINAL
    assert outcome({**run, "current_evaluation_summary": None}) == found


@given(run=current_runs())
def test_duration_is_duration_ms_else_the_span_from_start_to_completion(
    run: dict[str, Any],
) -> None:
    """duration_seconds reads duration_ms, and only without it the two instants."""
    found = duration_seconds(run)
    if run["duration_ms"] is not None:
        assert found == round(run["duration_ms"] / 1000, 3)
    elif run["started_at"] is None or run["completed_at"] is None:
        assert found is None


def test_an_unknown_status_of_an_ended_run_counts_as_failed() -> None:
    """A status_code this version does not know, once the run ended, is heard as failed."""
    run = {"status_code": "timed_out", "completed_at": "2026-11-28T10:00:00Z"}
    assert outcome(run) == "failed"
    assert outcome({"status_code": "timed_out", "completed_at": None}) == "running"


def test_invented_run_fields_are_named_with_the_real_ones() -> None:
    """Fields the API does not have get a problem naming what it has instead; real and
    derived fields, and anything below a free-form object, get none."""
    assert "run.completed_at" in str(unknown_path_problem("ended_at"))
    assert "run.org_id" in str(unknown_path_problem("organization_id"))
    assert "model.name" in str(unknown_path_problem("flow_name"))
    assert "run.failure_code" in str(unknown_path_problem("failur_code"))
    assert "not an object" in str(unknown_path_problem("failure_code.x"))
    for path in ("completed_at", "outcome", "model.name", "input.anything", "status_code"):
        assert unknown_path_problem(path) is None, path
    assert run_object.missing_paths({"model": {"name": "x"}}, ["model.name", "outcome"]) == []


def test_one_run_proves_absent_only_what_every_run_would_have() -> None:
    """A key inside a free-form object (metadata, input, the model's undocumented fields)
    may be in the next run: only the object itself counts as missing."""
    assert run_object.missing_paths({"metadata": {}}, ["metadata.team", "model.tier"]) == ["model"]
    assert run_object.missing_paths({"model": {}}, ["model.name", "model.tier"]) == ["model.name"]
