"""A new user's walk through README.md: every shell line that can run offline, copied as
written, in the README's order, in one shell, from a fresh directory.

What is changed, and why: the sandbox's default port 8080 becomes a free port (another
program on this machine may hold 8080), and daemons listen for /metrics on a free port
(127.0.0.1:9464 may be taken as well). What is skipped, and why: see SKIPPED.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import REPO

pytestmark = pytest.mark.slow

SKIPPED = (
    (r"\bsudo\b|\bsystemctl\b|\bjournalctl\b", "needs systemd and root"),
    (r"\bdocker\b", "needs a Docker daemon"),
    (r"\bkubectl\b", "needs a Kubernetes cluster"),
    (r"^pipx |\bpip install\b", "installs into the user's own environment (network)"),
    (r" -d slack\b", "sends to a real Slack webhook"),
    (r"dev\.py test\b", "is this test suite"),
    (r"dev\.py check\b", "CI runs it beside the suite (.ci/run)"),
    (r"dev\.py bench\b", "takes minutes; tests/e2e/test_bench.py runs bench --quick"),
    (r"dev\.py lock\b", "resolves packages from the package index (network)"),
    (
        r"\bcreatedb\b|\bPGHOST=|postgres-cluster\.toml",
        "needs a PostgreSQL server of your own (tests/postgres and "
        "tests/e2e/test_cluster_process.py run these commands against one they start)",
    ),
)
"""(pattern, reason): README lines that cannot run offline on a test machine."""
LIMIT = 4
"""Seconds a command may run before it gets Ctrl-C (SIGINT), as a person would press it."""
SHELL_ONLY = re.compile(r"^(export |\. |source |cd |[A-Z_]+=\$\()")
"""Lines that change the shell itself (variables, PATH), so they run in it, not a child."""


def readme_lines() -> list[tuple[int, str]]:
    """(line number, logical line) of every ```sh block, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    found: list[tuple[int, str]] = []
    for match in re.finditer(r"```sh\n(.*?)```", text, re.S):
        first = text.count("\n", 0, match.start(1)) + 1
        pending, start = "", 0
        for offset, line in enumerate(match.group(1).splitlines()):
            if not pending:
                start = first + offset
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            found.append((start, (pending + line).strip()))
            pending = ""
    return [(number, line) for number, line in found if line and not line.startswith("#")]


def skip_reason(line: str) -> str | None:
    for pattern, reason in SKIPPED:
        if re.search(pattern, line):
            return reason
    if re.search(r"\|\s*jq\b", line) and shutil.which("jq") is None:
        return "needs jq, which is not installed"
    if "dev.py" in line and not _venv_is_current():
        return "dev.py would install .venv first (run python3 dev.py once)"
    return None


def _venv_is_current() -> bool:
    stamp = REPO / ".venv" / ".runflow-tail-installed"
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return stamp.exists() and stamp.read_text() == wanted


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def walk_script(lines: list[tuple[int, str]], port: int) -> str:
    """One bash script: each line as the user types it, checked like the user would."""
    steps = []
    for number, line in lines:
        line = line.replace("8080", str(port))
        if line.startswith("runflow-tail sandbox") and "--port" not in line:
            line = line.replace("runflow-tail sandbox", f"runflow-tail sandbox --port {port}", 1)
        background = re.search(r"(?<!&)&\s*(#.*)?$", line)
        kind = "shell" if SHELL_ONLY.match(line) else "background" if background else "step"
        if kind == "background":
            # Background jobs of a script ignore SIGINT; a typed one would stop on Ctrl-C.
            steps.append(f"say {number} {shlex.quote(line)}; {line}")
        elif kind == "shell":
            steps.append(f"say {number} {shlex.quote(line)}; {line}; check {number} $?")
        else:
            steps.append(f"step {number} {shlex.quote(line)}")
    return "\n".join(
        [
            "set -a  # as in an interactive shell, assignments reach the commands that follow",
            "trap 'kill -TERM $(jobs -p) 2>/dev/null; wait' EXIT",
            'say() { printf \'\\n### README line %s: %s\\n\' "$1" "$2"; }',
            'check() { [ "$2" -eq 0 ] || { echo "### README line $1 exited $2"; exit 1; }; }',
            "step() {",
            '  say "$1" "$2"',
            f'  timeout -s INT -k 10 {LIMIT} bash -c "$2" < /dev/null',
            "  status=$?",
            "  # 124: still running at the limit, then interrupted (a follow, a daemon, a demo).",
            '  [ "$status" -eq 124 ] || check "$1" "$status"',
            "}",
            *steps,
        ]
    )


def test_every_offline_readme_command_works_as_written(tmp_path: Path) -> None:
    """Run in order from a fresh directory (a copy of config/, the .venv, dev.py; nothing on
    PATH until the README's own `. .venv/bin/activate`), every README shell line that can run
    offline ends with status 0, or is still running after a few seconds and takes Ctrl-C;
    none prints a traceback; and the walk leaves what the README says it does."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the README activates .venv: run the tests from a virtualenv (dev.py test)")
    walk = tmp_path / "clone"
    walk.mkdir()
    shutil.copytree(REPO / "config", walk / "config")
    (walk / ".venv").symlink_to(Path(sys.prefix))
    (walk / "dev.py").symlink_to(REPO / "dev.py")
    port = free_port()
    example = walk / "config" / "examples" / "sandbox.toml"
    example.write_text(example.read_text().replace("8080", str(port)))
    lines = readme_lines()
    runnable = [(number, line) for number, line in lines if skip_reason(line) is None]
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RUNFLOW_", "NO_COLOR", "VIRTUAL_ENV", "XDG_"))
    }
    env.update(
        HOME=str(tmp_path / "home"),
        PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin),
        RUNFLOW_TAIL_SERVER__LISTEN="127.0.0.1:0",
    )
    # A session of its own, so that whatever the walk leaves running is stopped with it.
    walker = subprocess.Popen(
        ["bash", "-c", walk_script(runnable, port)],
        cwd=walk,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = walker.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(walker.pid, signal.SIGKILL)
        walker.wait()
    log = stdout + stderr
    assert walker.returncode == 0, log[-6000:]
    assert "Traceback" not in log, log[-6000:]
    assert len(runnable) >= 20, [line for _, line in runnable]
    # What the walk did: the demo, entries with their model's name, the daemon's journal.
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} \w+ +[0-9a-f]{8} \[", stdout, re.M), log
    assert (walk / "state" / "sandbox" / "journal.sqlite3").exists()
    assert (walk / "alerts.toml").exists() and (walk / "hour.jsonl").exists()


def test_only_lines_that_need_more_than_this_machine_are_skipped() -> None:
    """Each skipped README line needs systemd, docker, kubectl, a package index, a real
    webhook, a PostgreSQL server, or is the suite or its siblings; every `runflow-tail`
    command otherwise runs."""
    skipped = {line: skip_reason(line) for _, line in readme_lines() if skip_reason(line)}
    commands = [line for line in skipped if line.startswith("runflow-tail")]
    assert commands == [
        "runflow-tail alerts test --rule failed-runs -d slack --config alerts.toml        "
        "# and sends it; exit 0 = delivered",
        "runflow-tail run --config config/examples/postgres-cluster.toml   "
        "# the same file on each host",
        "runflow-tail cluster --config config/examples/postgres-cluster.toml",
    ]
