"""`runflow-tail tail --since ... > file` with a person watching the terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from runflow_tail.sandbox import SandboxThread

pytestmark = [pytest.mark.slow, pytest.mark.sandbox_options(timestamp_style="z")]


def read_until_closed(controller: int) -> str:
    """Everything written to a pseudo-terminal until its last writer exits."""
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the command has exited
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    return seen.decode()


def test_a_long_tail_into_a_file_shows_progress_on_the_terminal(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """A one-shot tail over many pages, stdout into a file and stderr on a terminal, redraws
    a progress line on stderr and ends it with a summary; the file holds only entries."""
    sandbox_thread.generate(4000, step_ms=1, full_run=False)
    output = tmp_path / "hour.jsonl"
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNFLOW_", "NO_COLOR"))}
    env.update(
        RUNFLOW_API_KEY=sandbox_thread.api_key,
        RUNFLOW_API_URL=sandbox_thread.url,
        # Ten pages at two a second: long enough for the progress line to appear.
        RUNFLOW_TAIL_API__MAX_REQUESTS_PER_SECOND="2",
    )
    with output.open("wb") as stdout:
        tail = subprocess.Popen(
            [sys.executable, "-m", "runflow_tail", "tail", "--since", "1h", "--format", "json"],
            stdout=stdout,
            stderr=terminal,
            env=env,
        )
        os.close(terminal)
        text = read_until_closed(controller)
        assert tail.wait(timeout=60) == 0
    assert "\r\x1b[K" in text and " entries fetched, " in text, text
    assert re.search(r"\r\x1b\[K4,000 entries in \d+\.\ds\s*$", text), text
    assert len(output.read_text().splitlines()) == 4000


def test_a_one_shot_tail_at_a_terminal_says_at_once_that_it_is_retrying(
    refused_port: int,
) -> None:
    """At a terminal (entries and messages on one screen), a one-shot tail whose API does not
    answer says so on its first failure, before the one line that ends it with exit 4."""
    url = f"http://127.0.0.1:{refused_port}"
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFLOW_")}
    tail = subprocess.Popen(
        [sys.executable, "-m", "runflow_tail", "tail", "--give-up-after", "1s"],
        stdout=terminal,
        stderr=terminal,
        env={**env, "RUNFLOW_API_KEY": "rf_test_key", "RUNFLOW_API_URL": url},
    )
    os.close(terminal)
    lines = read_until_closed(controller).splitlines()
    assert tail.wait(timeout=30) == 4
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"runflow-tail: no good answer from {url} yet (")
    assert lines[0].endswith("; retrying for up to 1s")
    assert lines[1].startswith("runflow-tail: gave up after 1s without a good answer")
