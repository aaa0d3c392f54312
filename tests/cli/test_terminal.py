"""What a person at a terminal sees (tables, a progress line on stderr) and what a pipe
gets instead (the plain text, nothing extra)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from runflow_tail.cli import checkpoint
from runflow_tail.cli._terminal import PROGRESS_AFTER, Progress, table
from runflow_tail.cli.replay import _show_progress
from runflow_tail.models import Entry
from runflow_tail.times import parse_instant

SNAPSHOT: dict[str, Any] = {
    "state_dir": "/var/lib/runflow-tail",
    "daemon_running": True,
    "journal_entries": 1200,
    "journal_bytes": 4096,
    "last_seq": 1200,
    "streams": [
        {
            "stream": "all",
            "healthy": True,
            "problem": None,
            "strategy": "range",
            "watermark": "2026-11-28T10:00:00.000000Z",
            "lag_seconds": 1.5,
            "api_cursor": None,
            "last_success_at": None,
        },
        {
            "stream": "failures",
            "healthy": False,
            "problem": "the API answered HTTP 401",
            "strategy": None,
            "watermark": None,
            "lag_seconds": None,
            "api_cursor": None,
            "last_success_at": None,
        },
    ],
    "sinks": [
        {"sink": "archive", "streams": ["all"], "offset": 1200, "backlog": 0, "dead_letters": 0},
        {"sink": "hook", "streams": ["failures"], "offset": 12, "backlog": 1188, "dead_letters": 2},
    ],
    "alert_problems": [],
}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_table_aligns_columns_and_right_aligns_numbers() -> None:
    """Headers over their columns, a rule under them, numbers right-aligned with separators."""
    text = table(("sink", "backlog"), [("archive", 0), ("hook", 1188)])
    assert text.splitlines() == [
        "sink     backlog",
        "-------  -------",
        "archive        0",
        "hook       1,188",
    ]


def test_status_on_a_terminal_prints_tables_and_lists_the_problems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal, status shows a streams table, a sinks table and the problems below."""
    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    checkpoint._print(SNAPSHOT, as_json=False)
    lines = terminal.getvalue().splitlines()
    assert lines[2].split() == ["stream", "health", "strategy", "watermark", "lag", "s"]
    assert lines[4].split() == ["all", "ok", "range", "2026-11-28T10:00:00.000000Z", "1.5"]
    assert lines[5].split() == ["failures", "UNHEALTHY", "-", "-", "-"]
    assert ["hook", "12", "1,188", "2", "failures"] in [line.split() for line in lines]
    assert lines[-2:] == ["problems:", "  stream failures: the API answered HTTP 401"]


def test_status_into_a_pipe_stays_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Into a pipe, status prints the line-per-item text (no table rules)."""
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stdout", pipe)
    checkpoint._print(SNAPSHOT, as_json=False)
    assert "----" not in pipe.getvalue()
    assert "  hook             offset=12 backlog=1188 dead_letters=2" in pipe.getvalue()


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    """A Progress on a pipe writes nothing, however long the work takes."""
    pipe = io.StringIO()
    bar = Progress(pipe)
    bar._started -= PROGRESS_AFTER + 1
    bar.show("working")
    bar.done("done")
    assert pipe.getvalue() == ""


def test_progress_redraws_one_line_and_leaves_a_summary() -> None:
    """On a terminal, after the first second, the line is redrawn in place and replaced by
    the summary at the end; quick work shows nothing at all."""
    quick = Progress(Terminal())
    quick.show("never shown")
    quick.done("nor this")
    assert quick._stream.getvalue() == ""  # type: ignore[attr-defined]
    terminal = Terminal()
    bar = Progress(terminal)
    bar._started -= PROGRESS_AFTER + 1
    bar.show("12 entries")
    bar.done("12 entries in 2.0s")
    assert terminal.getvalue() == "\r\x1b[K12 entries\r\x1b[K12 entries in 2.0s\n"


def test_replay_progress_shows_entries_sent_time_reached_and_share_of_the_range() -> None:
    """A range replay's progress line says how many entries went, up to when, and how much
    of the range that is."""
    terminal = Terminal()
    bar = Progress(terminal)
    bar._started -= PROGRESS_AFTER + 1
    start = parse_instant("2026-11-28T10:00:00Z")
    end = parse_instant("2026-11-28T11:00:00Z")
    last = Entry(9, "all", "e9", parse_instant("2026-11-28T10:15:00Z"), b"{}")
    _show_progress(bar, start, end)(5000, last)
    assert terminal.getvalue().endswith(
        "replaying: 5,000 entries sent, up to 2026-11-28T10:15:00Z (25%)"
    )
