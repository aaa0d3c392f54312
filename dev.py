#!/usr/bin/env python3
"""Set up and run runflow-tail from a fresh clone: only Python 3.11+ needed.

    python3 dev.py demo     # the live demo on the embedded sandbox
    python3 dev.py test     # the test suite
    python3 dev.py check    # ruff, ruff format --check, mypy --strict
    python3 dev.py bench    # the benchmark (see README, "Performance")

The first run creates .venv and installs the package with its test extra; later runs
reinstall only when pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".runflow-tail-installed"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must explain itself on old Pythons
        sys.exit(f"runflow-tail needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print("creating .venv ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing runflow-tail and its test tools into .venv ...", file=sys.stderr)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def run(*command: str) -> int:
    return subprocess.run(command, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    task, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if task not in ("demo", "test", "check", "bench"):
        print(__doc__, file=sys.stderr)
        return 2
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
