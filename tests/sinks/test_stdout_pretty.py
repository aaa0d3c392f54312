"""The stdout sink's `pretty` lines as a person reads them: which run a line belongs to."""

from __future__ import annotations

from typing import Any

import msgspec
from runflow_tail.models import Entry
from runflow_tail.sinks.stdout import PrettyRenderer

RUN_ID = "0190b3a4-5c6d-7e8f-9a0b-00000000c0de"


def entry(message: str, run: dict[str, Any] | None = None) -> Entry:
    data: dict[str, Any] = {
        "id": "e1",
        "run_id": RUN_ID,
        "level_code": "info",
        "message": message,
        "timestamp": "2026-11-28T10:00:00Z",
        "meta": {},
    }
    if run is not None:
        data["run"] = run
    return Entry(1, "s", "e1", 1_795_860_000_000_000_000, msgspec.json.encode(data))


def render(renderer: PrettyRenderer, item: Entry) -> str:
    return renderer.render(item).decode().rstrip("\n")


def test_an_entry_with_its_run_shows_the_models_name_beside_the_run_id() -> None:
    """With the run embedded (current schema), the model's name follows the short run id."""
    renderer = PrettyRenderer(utc=True, color=False, meta_keys=None)
    line = render(
        renderer, entry("Run queued", {"id": RUN_ID, "model": {"name": "Receipt parser"}})
    )
    assert line.endswith(" INFO    0000c0de [Receipt parser] Run queued")


def test_labels_line_up_once_a_wider_one_was_seen() -> None:
    """After a longer label, shorter ones are padded so messages start in one column."""
    renderer = PrettyRenderer(utc=True, color=False, meta_keys=None)
    render(renderer, entry("a", {"model": {"name": "Invoice extractor"}}))
    short = render(renderer, entry("b", {"model": {"name": "Receipt parser"}}))
    assert short.endswith("0000c0de [Receipt parser]    b")


def test_without_a_run_or_a_model_name_the_line_has_no_label() -> None:
    """Entries fetched without `run`, and older-schema runs (no model), show no label."""
    renderer = PrettyRenderer(utc=True, color=False, meta_keys=None)
    assert render(renderer, entry("plain")).endswith(" INFO    0000c0de plain")
    older = {"id": RUN_ID, "model_id": "m-1", "status_code": "running"}
    assert render(renderer, entry("older", older)).endswith(" INFO    0000c0de older")
