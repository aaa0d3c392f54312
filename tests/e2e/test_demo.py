"""`runflow-tail demo` as a first-time user runs it: no config, no key, no network."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from runflow_tail.cli.demo import NEXT_STEPS

from tests.support.harness import wait_for_sync

pytestmark = pytest.mark.slow

DEMO = [sys.executable, "-m", "runflow_tail", "demo"]
# ``12:04:05.123 INFO    7f3a9c21 message  node=fetch step=0``
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} [A-Z]+ +[0-9a-f]{8} \S")
ANSI = "\x1b["


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's environment without any runflow-tail settings, temp files in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNFLOW_", "NO_COLOR"))}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**env, "TMPDIR": str(tmp_path / "tmp"), **extra}


def _ends_with_next_steps(stderr: str) -> bool:
    return stderr.rstrip().endswith(NEXT_STEPS.strip())


def _log_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if LOG_LINE.match(line)]


def test_ctrl_c_after_live_output_exits_0_with_next_steps(tmp_path: Path) -> None:
    """Readable log lines stream to a piped stdout; SIGINT then ends the demo with exit 0,
    no traceback, and the "Try next" hints as the last lines on stderr."""
    stderr_path = tmp_path / "stderr.txt"
    lines: list[str] = []
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            DEMO, stdout=subprocess.PIPE, stderr=stderr, text=True, env=_env(tmp_path)
        )
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    reader.start()
    try:
        wait_for_sync(lambda: len(lines) >= 5, timeout=30)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    reader.join(timeout=10)
    text = stderr_path.read_text()
    assert "Traceback" not in text
    assert text.startswith("runflow-tail demo: tailing a simulated Runflow at http://127.0.0.1:")
    assert _ends_with_next_steps(text)
    assert all(LOG_LINE.match(line) for line in lines), lines
    assert not any(ANSI in line for line in lines)  # a pipe gets no color codes


def test_ctrl_c_right_after_start_still_ends_cleanly(tmp_path: Path) -> None:
    """SIGINT as soon as the banner appears (before any output) exits 0 with the hints and
    no traceback."""
    process = subprocess.Popen(
        DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path)
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        assert banner.startswith("runflow-tail demo:")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert _ends_with_next_steps(stderr)


def test_seconds_stops_by_itself_and_leaves_no_state_behind(tmp_path: Path) -> None:
    """`demo --seconds 2` exits 0 on its own after printing live log lines, and removes its
    throw-away state directory."""
    result = subprocess.run(
        [*DEMO, "--seconds", "2"], capture_output=True, text=True, timeout=30, env=_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert len(_log_lines(result.stdout)) >= 1, result.stdout
    assert "Traceback" not in result.stderr and _ends_with_next_steps(result.stderr)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_needs_no_config_key_or_network(tmp_path: Path, refused_port: int) -> None:
    """A missing config file, no API key, runflow-tail variables pointing elsewhere and
    proxies that refuse connections do not stop the demo from tailing its own sandbox."""
    nowhere = f"http://127.0.0.1:{refused_port}"
    env = _env(
        tmp_path,
        HOME=str(tmp_path / "home"),
        RUNFLOW_TAIL_CONFIG=str(tmp_path / "missing.toml"),
        RUNFLOW_TAIL_API__BASE_URL=nowhere,
        HTTP_PROXY=nowhere,
        http_proxy=nowhere,
        HTTPS_PROXY=nowhere,
        ALL_PROXY=nowhere,
    )
    result = subprocess.run(
        [*DEMO, "--seconds", "2"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stderr
    assert len(_log_lines(result.stdout)) >= 1, result.stderr
    assert "Traceback" not in result.stderr


def _demo_on_a_terminal(tmp_path: Path, **extra: str) -> str:
    """Run `demo --seconds 2` with stdout on a pseudo-terminal; return what it printed."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [*DEMO, "--seconds", "2"],
            stdout=terminal,
            stderr=subprocess.DEVNULL,
            env=_env(tmp_path, **extra),
        )
    finally:
        os.close(terminal)
    output = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the demo closed the terminal
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=20) == 0
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return output.decode()


def test_a_terminal_gets_colored_levels(tmp_path: Path) -> None:
    """On a terminal the pretty output colors its columns (ANSI escapes)."""
    output = _demo_on_a_terminal(tmp_path)
    assert ANSI in output
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    assert len(_log_lines(plain)) >= 1, plain


def test_no_color_turns_colors_off_on_a_terminal(tmp_path: Path) -> None:
    """With NO_COLOR set, the demo prints plain text even on a terminal."""
    output = _demo_on_a_terminal(tmp_path, NO_COLOR="1")
    assert ANSI not in output
    assert len(_log_lines(output)) >= 1, output
