"""`runflow-tail tail` as a user runs it: a real subprocess against the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runflow_tail.sandbox import SandboxThread
from runflow_tail.times import NS_PER_SECOND, format_instant, now_ns

pytestmark = [pytest.mark.slow, pytest.mark.sandbox_options(timestamp_style="z")]


def _env(sandbox: SandboxThread, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNFLOW_", "NO_COLOR"))}
    return {
        **env,
        "RUNFLOW_API_KEY": sandbox.api_key,
        "RUNFLOW_TAIL_API__BASE_URL": sandbox.url,
        "RUNFLOW_TAIL_API__MAX_REQUESTS_PER_SECOND": "50",
        **extra,
    }


def _tail(sandbox: SandboxThread, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runflow_tail", "tail", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(sandbox, **extra),
    )


def _popen(sandbox: SandboxThread, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runflow_tail", "tail", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(sandbox),
    )


def _append(sandbox: SandboxThread, seconds_ago: float, message: str, **fields: str) -> None:
    stamp = format_instant(now_ns() - int(seconds_ago * NS_PER_SECOND))
    sandbox.append([{"timestamp": stamp, "message": message, **fields}])


def test_since_relative_prints_only_the_recent_entries_and_exits(
    sandbox_thread: SandboxThread,
) -> None:
    """--since 10m prints entries of the last ten minutes, not older ones, then exits 0."""
    _append(sandbox_thread, 3600, "an hour ago")
    _append(sandbox_thread, 120, "two minutes ago")
    result = _tail(
        sandbox_thread, "--since", "10m", "--format", "template", "--template", "{message}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["two minutes ago"]


def test_since_and_until_absolute_select_a_range(sandbox_thread: SandboxThread) -> None:
    """--since and --until as RFC 3339 timestamps print exactly the entries in between."""
    for minutes in (50, 40, 30, 20):
        _append(sandbox_thread, minutes * 60, f"{minutes} minutes ago")
    since = format_instant(now_ns() - 45 * 60 * NS_PER_SECOND)
    until = format_instant(now_ns() - 25 * 60 * NS_PER_SECOND)
    result = _tail(
        sandbox_thread,
        "--since",
        since,
        "--until",
        until,
        "--format",
        "template",
        "--template",
        "{message}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["40 minutes ago", "30 minutes ago"]


def test_json_output_parses_line_by_line_and_level_filters(sandbox_thread: SandboxThread) -> None:
    """--format json prints one entry per line; --level keeps only those levels."""
    for level in ("info", "error", "warning", "debug", "error"):
        _append(sandbox_thread, 5, f"a {level}", level_code=level)
    result = _tail(sandbox_thread, "--format", "json", "--level", "error,warning")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(e["level_code"] for e in entries) == ["error", "error", "warning"]


def test_follow_prints_entries_appended_after_it_started(sandbox_thread: SandboxThread) -> None:
    """-f keeps going and prints what arrives later; SIGINT then exits 0 without a traceback."""
    _append(sandbox_thread, 1, "before")
    tail = _popen(
        sandbox_thread,
        "-f",
        "--interval",
        "200ms",
        "--format",
        "template",
        "--template",
        "{message}",
    )
    try:
        assert tail.stdout is not None
        assert tail.stdout.readline().strip() == "before"
        _append(sandbox_thread, 0, "after")
        assert tail.stdout.readline().strip() == "after"
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=10) == 0
        assert tail.stderr is not None and "Traceback" not in tail.stderr.read()
    finally:
        tail.kill()


def test_until_idle_exits_zero_soon_after_the_quiet_period(sandbox_thread: SandboxThread) -> None:
    """--until-idle 1s exits 0 about a second after the last entry, not much later."""
    _append(sandbox_thread, 1, "only one")
    started = time.monotonic()
    result = _tail(sandbox_thread, "-f", "--until-idle", "1s", "--interval", "200ms")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "only one" in result.stdout
    assert 1.0 <= elapsed < 8.0


def test_a_closed_pipe_ends_quietly_with_status_zero(sandbox_thread: SandboxThread) -> None:
    """`| head -n 5`: once the reader goes away, tail exits 0 and prints nothing on stderr."""
    sandbox_thread.generate(3000, step_ms=1, full_run=False)
    tail = _popen(sandbox_thread, "--since", "1h", "--format", "json")
    assert tail.stdout is not None
    head = [tail.stdout.readline() for _ in range(5)]
    tail.stdout.close()
    assert tail.wait(timeout=20) == 0
    assert tail.stderr is not None and tail.stderr.read() == ""
    assert all(json.loads(line) for line in head)


def test_shell_pipe_into_head_keeps_pipefail_happy(
    sandbox_thread: SandboxThread, tmp_path: Path
) -> None:
    """Through a real shell pipeline with pipefail, `runflow-tail tail | head -n 5` succeeds."""
    sandbox_thread.generate(3000, step_ms=1, full_run=False)
    script = f"set -o pipefail; {sys.executable} -m runflow_tail tail --since 1h | head -n 5"
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=_env(sandbox_thread)
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5 and result.stderr == ""


@pytest.mark.parametrize(
    ("args", "extra_env", "code", "says"),
    [
        ((), {"RUNFLOW_API_KEY": "wrong"}, 4, "401"),
        (("--query", "level_code>="), {}, 2, "column 12"),
        (("0190b3a4-0000-7000-8000-000000000000",), {}, 4, "404"),
        (("--since", "yesterday"), {}, 2, "--since"),
    ],
)
def test_each_error_prints_one_clear_line_and_exits_non_zero(
    sandbox_thread: SandboxThread,
    args: tuple[str, ...],
    extra_env: dict[str, str],
    code: int,
    says: str,
) -> None:
    """A bad key, a bad filter, an unknown run, a bad flag: one line (two with the heading
    for configuration problems), a non-zero exit, no traceback."""
    result = _tail(sandbox_thread, *args, **extra_env)
    assert result.returncode == code
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert result.stdout == ""


def test_heartbeat_goes_to_stderr_and_never_into_the_output(sandbox_thread: SandboxThread) -> None:
    """--heartbeat notes a quiet follow on stderr; stdout still holds only entries."""
    _append(sandbox_thread, 1, "x")
    result = _tail(
        sandbox_thread, "-f", "--heartbeat", "300ms", "--until-idle", "1200ms", "--format", "json"
    )
    assert result.returncode == 0
    assert "still following" in result.stderr
    assert [json.loads(line)["message"] for line in result.stdout.splitlines()] == ["x"]


def test_a_cursor_that_never_advances_ends_a_tail_with_one_line(
    sandbox_thread: SandboxThread,
) -> None:
    """Full pages answered with the same cursor forever: `tail --since 1h` does not spin; it
    prints what it read and ends with one line naming the stall, exit 4."""
    sandbox_thread.generate(1200, step_ms=1, message="line {i}", full_run=False)
    sandbox_thread.patch_options(fault_stuck_cursor="same")
    result = _tail(sandbox_thread, "--since", "1h", "--format", "json")
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    assert "same page cursor" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "polling again" not in result.stderr  # a tail ends; it does not poll again
