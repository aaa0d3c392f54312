"""The simulated world as a Runflow user reads it: levels that fit their messages, each
run's lines in the order they happened, and a control API that answers a curious GET."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from runflow_tail.sandbox import SandboxOptions, World
from runflow_tail.sandbox.options import RUN_LOGS_CAP
from runflow_tail.sandbox.simulator import OUTCOMES, play_instantly

TROUBLE = re.compile(
    r"fail|timed out|could not|not reachable|exceeded|no worker|returned 5\d\d|answered 5\d\d"
    r"|not a decimal|reset|\b429\b",
    re.IGNORECASE,
)
"""Words that say something went wrong."""


def played_world(style: str, runs: int = 40) -> tuple[World, list[str]]:
    """A world that played ``runs`` runs of every outcome, and the ids in the order written."""
    world = World(SandboxOptions(timestamp_style=style, world_seed=3))  # type: ignore[arg-type]
    written: list[str] = []
    write = world.write

    def recording(*args: Any, **kwargs: Any) -> Any:
        entry = write(*args, **kwargs)
        written.append(entry.id)
        return entry

    world.write = recording  # type: ignore[method-assign]
    for index in range(runs):
        play_instantly(world, outcome=OUTCOMES[index % len(OUTCOMES)], lines=12)
    return world, written


def test_error_lines_say_what_went_wrong_and_quiet_lines_do_not() -> None:
    """Every error (and critical) line names a failure; no debug, info, trace or notice line
    does ("ERROR ... returned 200" and "DEBUG ... failed" never happen)."""
    world, _ = played_world("z")
    by_level: dict[str, list[str]] = {}
    for run_id in world.runs:
        for entry in world.visible_run_entries(run_id, RUN_LOGS_CAP):
            data = entry.mapping()
            by_level.setdefault(data["level_code"], []).append(data["message"])
    assert by_level["error"] and by_level["debug"] and by_level["info"]
    for level in ("error", "critical"):
        assert all(TROUBLE.search(message) for message in by_level.get(level, [])), level
    for level in ("debug", "info", "trace", "notice"):
        assert not any(TROUBLE.search(message) for message in by_level.get(level, [])), level


@pytest.mark.parametrize("style", ["mixed", "z", "offset"])
def test_a_runs_lines_sort_in_the_order_they_were_logged(style: str) -> None:
    """Read back as the API sorts them (timestamp as written, then id), each run's lines
    come in the order the run logged them, also when timestamps drop digits ('mixed')."""
    world, written = played_world(style)
    position = {entry_id: index for index, entry_id in enumerate(written)}
    for run_id in world.runs:
        ids = [entry.id for entry in world.visible_run_entries(run_id, RUN_LOGS_CAP)]
        assert ids == sorted(ids, key=position.__getitem__), run_id


@pytest.mark.anyio
async def test_get_faults_lists_the_pending_ones_and_how_to_add_them(
    sandbox_client: httpx.AsyncClient,
) -> None:
    """GET /_sandbox/faults answers 200 with the queued faults and how to queue or clear
    them, instead of a bare 405."""
    await sandbox_client.post("/_sandbox/faults", json={"queue": [{"status": 503}]})
    response = await sandbox_client.get("/_sandbox/faults")
    assert response.status_code == 200
    body = response.json()
    assert [fault["status"] for fault in body["pending"]] == [503]
    assert '{"queue": [' in body["usage"]["POST"] and "DELETE" in body["usage"]
