#!/usr/bin/env python3
"""Set up and run runflow-tail from a fresh clone: only Python 3.11+ needed.

    python3 dev.py demo     # the live demo on the embedded sandbox
    python3 dev.py test     # the test suite
    python3 dev.py check    # ruff, ruff format --check, mypy --strict
    python3 dev.py bench    # the benchmark (see README, "Performance")
    python3 dev.py lock     # re-pin deploy/constraints.txt (the image's and the service's deps)

The first run creates .venv and installs the package with its test extra; later runs
reinstall only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import venv
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".runflow-tail-installed"
INSTALL_LOG = VENV / "install.log"
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
_PROGRESS_WORDS = ("Collecting", "Downloading", "Building", "Installing", "Successfully")
_PLAIN_PROGRESS_EVERY = 5.0
"""Seconds between progress lines when stderr is not a terminal (a CI log)."""


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must explain itself on old Pythons
        sys.exit(f"runflow-tail needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    started = time.monotonic()
    if not PYTHON.exists():
        print("creating .venv ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(
        "installing runflow-tail and its test tools into .venv (the first time takes about "
        "half a minute) ...",
        file=sys.stderr,
    )
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar=off"]
    with INSTALL_LOG.open("w", encoding="utf-8") as log:
        _pip([*pip, "--upgrade", "pip"], log, started)
        _pip([*pip, "-e", f"{ROOT}[test]"], log, started)
    _clear_progress()
    seconds = time.monotonic() - started
    print(f"installed in {seconds:.0f}s (pip's output: {INSTALL_LOG})", file=sys.stderr)
    print(
        "runflow-tail itself is in .venv/bin: `. .venv/bin/activate` puts it on your PATH "
        "(README, Install)",
        file=sys.stderr,
    )
    STAMP.write_text(wanted)


def _pip(command: list[str], log: TextIO, started: float) -> None:
    """Run pip with its output in the log and one line of progress on stderr: what it is
    doing now and for how long (redrawn every second on a terminal, every few seconds in
    a CI log), so a long step never looks stuck. All of pip's output is shown when it fails."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    step = ["starting pip"]

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            text = line.strip()
            if text.startswith("Installing collected packages:"):
                count = len(text.split(":", 1)[1].split(","))
                step[0] = f"Installing {count} packages"
            elif text.startswith(_PROGRESS_WORDS):
                step[0] = text

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tty = sys.stderr.isatty()
    shown_at = -_PLAIN_PROGRESS_EVERY
    while True:
        try:
            process.wait(timeout=1)
            break
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - started
        text = f"  [{elapsed:3.0f}s] {step[0][:90]}"
        if tty:
            print(f"\r\x1b[K{text}", end="", file=sys.stderr, flush=True)
        elif elapsed - shown_at >= _PLAIN_PROGRESS_EVERY:
            print(text, file=sys.stderr, flush=True)
            shown_at = elapsed
    reader.join()
    if process.returncode != 0:
        _clear_progress()
        log.flush()
        sys.stderr.write(INSTALL_LOG.read_text(encoding="utf-8"))
        sys.exit(f"dev.py: installing into .venv failed (pip's output above; {INSTALL_LOG})")


def _clear_progress() -> None:
    if sys.stderr.isatty():
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)


def lock() -> int:
    """Resolve runflow-tail's dependencies afresh in a throw-away venv and pin them, with the
    installer and build backend, in deploy/constraints.txt: what the Docker image and the
    systemd install use, so a build next month installs what was tested today. The optional
    extras are resolved with them (`[all]`): an image built with EXTRAS=postgres (or s3,
    otlp) gets pinned packages too."""
    with tempfile.TemporaryDirectory(prefix="runflow-tail-lock-") as scratch:
        target = Path(scratch) / "venv"
        venv.EnvBuilder(with_pip=True).create(target)
        python = str(target / BIN.name / "python")
        pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "install", "--upgrade", "pip", "setuptools>=77"], check=True)
        subprocess.run([*pip, "install", f"{ROOT}[all]"], check=True)
        frozen = subprocess.run(
            [*pip, "freeze", "--all", "--exclude", "runflow-tail"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    pins = sorted(line for line in frozen.splitlines() if "==" in line)
    CONSTRAINTS.write_text(
        "# Pinned by `python3 dev.py lock` (a fresh resolve of pyproject.toml's dependencies,\n"
        "# plus pip and setuptools for the build); used by deploy/docker/Dockerfile and the\n"
        "# systemd install. Re-run it to update, then run the tests.\n" + "\n".join(pins) + "\n"
    )
    print(f"pinned {len(pins)} packages in {CONSTRAINTS.relative_to(ROOT)}", file=sys.stderr)
    return 0


def run(*command: str) -> int:
    return subprocess.run(command, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    task, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if task not in ("demo", "test", "check", "bench", "lock"):
        print(__doc__, file=sys.stderr)
        return 2
    if task == "lock":
        return lock()
    ensure_environment()
    try:
        if task == "demo":
            return run(str(BIN / "runflow-tail"), "demo", *rest)
        if task == "test":
            return run(str(PYTHON), "-m", "pytest", "-q", *rest)
        if task == "bench":
            return run(str(PYTHON), "-m", "bench", *rest)
        for command in (
            ("ruff", "check", "."),
            ("ruff", "format", "--check", "."),
            ("mypy", "--strict", "daemon/runflow_tail"),
        ):
            if run(str(BIN / command[0]), *command[1:]):
                return 1
        return 0
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
