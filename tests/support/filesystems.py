"""Small real file systems for tests (root only: tmpfs mounts), and acting as another user."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "4m", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``; skips the test where mounting is refused."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def as_nobody() -> Iterator[None]:
    """Run the block with effective uid ``nobody`` (root only; skips elsewhere), so that
    file permissions apply as they do to a daemon that is not root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
