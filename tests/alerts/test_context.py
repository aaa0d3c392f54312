"""A line is judged against the run as it was when the line was logged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from runflow_tail.alerts.context import as_of
from runflow_tail.run_object import outcome
from runflow_tail.sandbox import SandboxOptions, World
from runflow_tail.sandbox.simulator import play_instantly


@settings(max_examples=100, deadline=None)
@given(
    schema=st.sampled_from(["current", "older"]),
    style=st.sampled_from(["z", "offset"]),
    seed=st.integers(0, 2**16),
    lines=st.integers(0, 8),
)
def test_the_first_line_that_sees_the_failure_is_the_failure_line(
    schema: str, style: str, seed: int, lines: int
) -> None:
    """A failed run as fetched after its end (either schema version): every line before its
    completed_at sees it running, and the failure line is the first to see it failed."""
    world = World(SandboxOptions(run_schema=schema, timestamp_style=style, world_seed=seed))
    run = play_instantly(world, outcome="failed", lines=lines)
    entries = sorted(world.store.by_run[run.id], key=lambda entry: entry.key)
    judged = [
        outcome(as_of(run.doc, entry.mapping()["timestamp"], entry.ts_ns)) for entry in entries
    ]
    first = judged.index("failed")
    assert set(judged[:first]) == {"running"} and set(judged[first:]) == {"failed"}
    assert entries[first].mapping()["message"].startswith("Run failed: ")
